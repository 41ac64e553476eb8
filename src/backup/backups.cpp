#include "backup/backups.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "inferllama/metrics.hpp"

namespace inferllama::backup {
namespace {

constexpr metrics::FamilySpec kLastSuccess{
    "inferllama_backup_last_success_timestamp_seconds", "gauge",
    "Unix time of the last backup that succeeded (at start, of the newest in backup_dir); 0 = none"};
constexpr metrics::FamilySpec kFailures{"inferllama_backup_failures_total", "counter",
                                        "Backups that failed, scheduled or asked for"};

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::string error_body(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump();
}

}  // namespace

Backups::Backups(const Config& config, Index& index, std::filesystem::path secret_key_file)
    : config_(config), index_(index), secret_key_file_(std::move(secret_key_file)) {
  if (config_.backup_dir.empty()) return;
  try {
    checked_place(config_.data_dir, config_.backup_dir, config_.backup_key_file);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("invalid backup_dir or backup_key_file: ") + e.what());
  }
  if (const auto newest = newest_backup(config_.backup_dir)) last_success_ = unix_seconds(*newest);
}

Backups::Outcome Backups::make(const Place& place) {
  std::lock_guard lock(mutex_);
  Outcome outcome;
  try {
    outcome.made = make_backup(index_, config_.data_dir, secret_key_file_, place);
  } catch (const std::exception& e) {
    ++failures_;
    spdlog::error("backup into {} failed: {}", place.dir.string(), e.what());
    throw;
  }
  last_success_ = unix_seconds(outcome.made.time);
  spdlog::info("backup written: {} ({} bytes)", outcome.made.file.string(), outcome.made.bytes);
  try {
    outcome.expired = expire_backups(place.dir, config_.backup_retention, outcome.made.time);
  } catch (const std::exception& e) {
    spdlog::error("cannot delete the expired backups in {}: {}", place.dir.string(), e.what());
  }
  for (const auto& file : outcome.expired) spdlog::info("deleted the expired backup {}", file.string());
  return outcome;
}

void Backups::make_scheduled() {
  try {
    make(checked_place(config_.data_dir, config_.backup_dir, config_.backup_key_file));
  } catch (const std::invalid_argument& e) {
    ++failures_;  // a key file removed or opened to others since the start
    spdlog::error("scheduled backup refused: {}", e.what());
  } catch (const std::exception&) {
    // make() logged and counted it; the next interval tries again.
  }
}

bool Backups::due() const {
  const auto newest = newest_backup(config_.backup_dir);
  return !newest || std::chrono::system_clock::now() - *newest >= config_.backup_interval;
}

std::pair<unsigned, std::string> Backups::answer(const std::string& body) {
  const auto request = nlohmann::json::parse(body.empty() ? "{}" : body, nullptr, false);
  if (!request.is_object()) return {400, error_body("expected a JSON object")};
  std::filesystem::path dir = config_.backup_dir, key_file = config_.backup_key_file;
  for (auto [field, path] : {std::pair{"backup_dir", &dir}, std::pair{"backup_key_file", &key_file}}) {
    if (!request.contains(field)) continue;
    if (!request[field].is_string() || !std::filesystem::path(request[field].get<std::string>()).is_absolute()) {
      return {400, error_body(std::string(field) + " is an absolute path on the node's host")};
    }
    *path = request[field].get<std::string>();
  }
  try {
    const Outcome outcome = make(checked_place(config_.data_dir, dir, key_file));
    nlohmann::json expired = nlohmann::json::array();
    for (const auto& file : outcome.expired) expired.push_back(file.string());
    return {200,
            nlohmann::json{
                {"file", outcome.made.file.string()}, {"bytes", outcome.made.bytes}, {"expired", std::move(expired)}}
                .dump()};
  } catch (const std::invalid_argument& e) {
    return {400, error_body(e.what())};
  } catch (const std::exception& e) {
    return {500, error_body(std::string("the backup failed: ") + e.what())};
  }
}

void Backups::render_metrics(std::string& out) const {
  metrics::write_family(out, kLastSuccess, last_success_.load());
  metrics::write_family(out, kFailures, static_cast<double>(failures_.load()));
}

}  // namespace inferllama::backup
