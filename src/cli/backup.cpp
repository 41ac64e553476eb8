// `backup` and `restore`: a running node makes the backup from its open index through its admin API; with
// no node on the data directory, this process opens the index itself. A restore writes only into a data
// directory no node runs on.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backup/backup.hpp"
#include "backup/backups.hpp"
#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "inferllama/chunk_store.hpp"
#include "node/data_dir_lock.hpp"
#include "usage/accounts_api.hpp"

namespace inferllama::cli {
namespace {

namespace fs = std::filesystem;

void print_made(const std::string& file, std::uint64_t bytes, const std::vector<std::string>& expired) {
  std::printf("backup written: %s (%llu bytes)\n", file.c_str(), static_cast<unsigned long long>(bytes));
  for (const auto& old : expired) std::printf("deleted the expired backup %s\n", old.c_str());
}

int backup_through(const NodeTarget& node, const BackupOptions& options) {
  // Paths on this host, as the node beside (on its admin socket) must read them.
  nlohmann::json body = nlohmann::json::object();
  if (!options.backup_dir.empty()) body["backup_dir"] = fs::absolute(options.backup_dir).string();
  if (!options.backup_key_file.empty()) body["backup_key_file"] = fs::absolute(options.backup_key_file).string();
  auto called = call_node(node, "POST", "/api/inferllama/backup", body.dump());
  if (auto* why = std::get_if<std::string>(&called)) {
    std::fprintf(stderr, "inferllama: %s\n", why->c_str());
    return 1;
  }
  const auto& answer = std::get<NodeAnswer>(called);
  const auto result = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200 || !result.is_object()) {
    std::fprintf(stderr, "inferllama: backup failed (HTTP %ld): %s\n", answer.status, error_of(answer.body).c_str());
    return 1;
  }
  print_made(result.value("file", ""), result.value("bytes", 0ULL),
             result.value("expired", std::vector<std::string>{}));
  return 0;
}

int backup_here(Config config, const BackupOptions& options) {
  if (!options.backup_dir.empty()) config.backup_dir = options.backup_dir;
  if (!options.backup_key_file.empty()) config.backup_key_file = options.backup_key_file;
  if (const auto pid = node::DataDirLock::holder(config.data_dir)) {
    throw std::runtime_error("a node " + (*pid ? "(pid " + std::to_string(*pid) + ") " : std::string()) + "runs on " +
                             config.data_dir.string() +
                             " without an admin socket (admin_socket is off): ask it over HTTP(S) with --node URL "
                             "and its admin key (INFERLLAMA_ADMIN_KEY or --admin-key-file)");
  }
  if (!fs::exists(config.data_dir / "index")) {
    throw std::runtime_error("no node data in " + config.data_dir.string() +
                             ": run this in the folder the node runs in, or give its --data-dir or --config");
  }
  const backup::Place place = backup::checked_place(config.data_dir, config.backup_dir, config.backup_key_file);
  spdlog::set_default_logger(spdlog::stderr_color_mt("inferllama"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  ::umask(077);                             // the staging copy of the index holds users' keys: the owner's only
  node::DataDirLock lock(config.data_dir);  // no node starts on the directory while its index is open here
  auto index = open_rocksdb_index(config.data_dir / "index");
  backup::Backups backups(config, *index, usage::secret_key_path(config));
  const auto outcome = backups.make(place);
  std::vector<std::string> expired;
  for (const auto& old : outcome.expired) expired.push_back(old.string());
  print_made(outcome.made.file.string(), outcome.made.bytes, expired);
  return 0;
}

}  // namespace

int backup(const BackupOptions& options) {
  if (!options.new_key.empty()) {
    const Config config = config_beside(options.target.data_dir, options.target.config_file);
    backup::create_key(options.new_key, config.data_dir);
    std::printf(
        "created the backup key %s (mode 0600): keep a copy apart from the backups, which cannot be restored "
        "without it\n",
        options.new_key.c_str());
    return 0;
  }
  std::optional<Config> beside;
  if (const auto node = node_target(options.target, beside)) return backup_through(*node, options);
  return backup_here(*beside, options);
}

int restore(const RestoreOptions& options) {
  const Config config = config_beside(options.data_dir, options.config_file);
  const fs::path key_file =
      options.backup_key_file.empty() ? config.backup_key_file : fs::path(options.backup_key_file);
  if (key_file.empty()) {
    throw UsageError(
        "which key was the backup made with? Give --backup-key-file FILE (or backup_key_file in --config)");
  }
  if (const auto pid = node::DataDirLock::holder(config.data_dir)) {
    throw std::runtime_error("a node " + (*pid ? "(pid " + std::to_string(*pid) + ") " : std::string()) + "runs on " +
                             config.data_dir.string() + ": stop it first, or restore into another data directory");
  }
  const backup::Key key = backup::read_key(key_file);
  const fs::path secret_key_file = usage::secret_key_path(config);
  backup::Contents contents;
  try {
    contents = backup::check_backup(options.file, key);  // every segment, before anything is written
  } catch (const backup::SealError& e) {
    throw std::runtime_error("cannot restore " + options.file + ": " + e.what() + "; nothing was written");
  }
  backup::check_target(contents, config.data_dir, secret_key_file, options.force);
  ::umask(077);  // the index holds users' keys: the owner's only, as the node's
  make_private_dir(config.data_dir);
  node::DataDirLock lock(config.data_dir);
  const auto restored = backup::restore_backup(options.file, key, config.data_dir, secret_key_file, options.force);
  std::printf("restored %s into %s (an index of %llu bytes in %llu files)\n", options.file.c_str(),
              (config.data_dir / "index").c_str(), static_cast<unsigned long long>(contents.index_bytes),
              static_cast<unsigned long long>(contents.index_files));
  if (restored.moved_aside) std::printf("the index that was there is kept at %s\n", restored.moved_aside->c_str());
  if (restored.wrote_secret_key) std::printf("wrote the secret key %s (mode 0600)\n", secret_key_file.c_str());
  if (restored.forgotten_files > 0) {
    std::printf(
        "%llu stored files have no chunks in %s (backups hold none): the node fetches cached ones from its upstream "
        "when they are next asked for; hosted repos' files come back only from your own copy of that directory, "
        "put back before restoring\n",
        static_cast<unsigned long long>(restored.forgotten_files), (config.data_dir / "chunks").c_str());
  }
  return 0;
}

}  // namespace inferllama::cli
