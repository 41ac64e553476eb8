// `inferllama cluster status`: what GET /api/inferllama/cluster says, for people (or as it is, --json).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "cli/text.hpp"

namespace inferllama::cli {
namespace {

std::uint64_t count(const nlohmann::json& object, const char* field) {
  return object.value(field, static_cast<std::uint64_t>(0));
}

std::string health(const nlohmann::json& upstream) {
  if (upstream.value("healthy", true)) return "healthy";
  char text[64];
  std::snprintf(text, sizeof text, "skipped for %.1f s", upstream.value("backoff_seconds", 0.0));
  return text;
}

void print_status(const nlohmann::json& status) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& upstream : status.value("upstreams", nlohmann::json::array())) {
    std::string kind = upstream.value("kind", "unknown");
    if (upstream.value("fallback", false)) kind += " (fallback)";
    rows.push_back({upstream.value("url", ""), kind, health(upstream), std::to_string(count(upstream, "requests")),
                    std::to_string(count(upstream, "failures")), human_bytes(count(upstream, "bytes"))});
  }
  print_table({{"UPSTREAM"}, {"KIND"}, {"HEALTH"}, {"REQUESTS", true}, {"FAILURES", true}, {"FILE BYTES", true}}, rows);

  const auto bytes = status.value("bytes", nlohmann::json::object());
  std::printf("\nbytes: %s from the Hub, %s from parents over HTTP, %s from swarms, %s to peers\n",
              human_bytes(count(bytes, "from_hub")).c_str(), human_bytes(count(bytes, "from_parents")).c_str(),
              human_bytes(count(bytes, "from_peers")).c_str(), human_bytes(count(bytes, "to_peers")).c_str());
  const auto limits = status.value("limits", nlohmann::json::object());
  const std::string backend = limits.value("backend", "local");
  std::printf("limits: %s%s\n", backend.c_str(),
              backend == "local"                 ? " (this node only)"
              : limits.value("connected", false) ? " (connected)"
                                                 : " (not connected: the fallback decides)");
  const auto seeding = status.value("seeding", nlohmann::json::object());
  std::printf(
      "seeding: %llu torrents, %llu peers, %s sent\n", static_cast<unsigned long long>(count(seeding, "torrents")),
      static_cast<unsigned long long>(count(seeding, "peers")), human_bytes(count(seeding, "uploaded")).c_str());

  rows.clear();
  for (const auto& swarm : status.value("swarms", nlohmann::json::array())) {
    char progress[16];
    std::snprintf(progress, sizeof progress, "%.0f%%", 100 * swarm.value("progress", 0.0));
    rows.push_back({swarm.value("name", ""), swarm.value("info_hash", ""), human_bytes(count(swarm, "size")), progress,
                    std::to_string(swarm.value("peers", 0)), human_bytes(count(swarm, "downloaded")),
                    human_bytes(count(swarm, "uploaded"))});
  }
  if (rows.empty()) {
    std::printf("parent swarms: none being downloaded\n");
    return;
  }
  std::printf("\n");
  print_table(
      {{"PARENT SWARM"}, {"INFO-HASH"}, {"SIZE", true}, {"DONE", true}, {"PEERS", true}, {"IN", true}, {"OUT", true}},
      rows);
}

}  // namespace

int cluster_status(const ClusterOptions& options) {
  const auto node = node_or_explain(options.target);
  if (!node) return 1;
  const auto status = ask_node(*node, "GET", "/api/inferllama/cluster", "", "cluster status");
  if (!status) return 1;
  if (options.json) {
    std::printf("%s\n", status->dump(2).c_str());
  } else {
    print_status(*status);
  }
  return 0;
}

}  // namespace inferllama::cli
