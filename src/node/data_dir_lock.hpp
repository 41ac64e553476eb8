#pragma once
#include <sys/types.h>

#include <filesystem>
#include <optional>

namespace inferllama::node {

// One node per data directory. The node holds an exclusive lock (an OFD fcntl lock) on DATA_DIR/node.pid,
// which holds its pid, for as long as it runs; the kernel drops the lock when the process ends, even by kill -9. So a
// second node, or a command that would open the index, can say who uses the directory.
class DataDirLock {
 public:
  // Throws std::runtime_error "another node (pid N) is using DIR" when a node holds it.
  explicit DataDirLock(const std::filesystem::path& data_dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  // The pid of the node running on `data_dir`, nullopt when none does. Creates nothing.
  static std::optional<pid_t> holder(const std::filesystem::path& data_dir);

 private:
  int fd_ = -1;
};

}  // namespace inferllama::node
