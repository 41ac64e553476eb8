// A running node's backups: the schedule's (every backup_interval into backup_dir) and those the admin
// API asks for, made one at a time from the node's open index, and their metrics.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backup/backup.hpp"
#include "inferllama/config.hpp"
#include "inferllama/index.hpp"

namespace inferllama::backup {

class Backups {
 public:
  // With backup_dir set, the schedule's place is checked now: throws ConfigError naming the key to fix.
  Backups(const Config& config, Index& index, std::filesystem::path secret_key_file);

  struct Outcome {
    Made made;
    std::vector<std::filesystem::path> expired;  // backups older than backup_retention, deleted after it
  };
  // A backup into `place` now, then the retention there (blocking; a retention that fails is logged). Throws
  // std::invalid_argument when the place is refused, std::runtime_error when the backup fails; counted
  // either way.
  Outcome make(const Place& place);
  // The schedule's run: into backup_dir, a failure logged and counted.
  void make_scheduled();
  // The schedule's first run is due at start: backup_dir holds no backup of the last backup_interval.
  bool due() const;
  // POST /api/inferllama/backup {"backup_dir": ABSOLUTE PATH, "backup_key_file": ABSOLUTE PATH} (each
  // optional: the node's own settings): a status and a JSON answer, {"file", "bytes", "expired"} or
  // {"error"}.
  std::pair<unsigned, std::string> answer(const std::string& body);

  void render_metrics(std::string& out) const;

 private:
  const Config& config_;
  Index& index_;
  const std::filesystem::path secret_key_file_;
  std::mutex mutex_;                     // one backup at a time: they share data_dir/backup-staging
  std::atomic<double> last_success_{0};  // Unix time
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace inferllama::backup
