#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "inferllama/repo.hpp"

namespace inferllama::cli {
namespace {

void print_done(const AdminOptions& options, const nlohmann::json& result) {
  const auto count = [&](const char* field) { return static_cast<unsigned long long>(result.value(field, 0ULL)); };
  const std::string snapshot = result.value("repo", "") + "@" + result.value("commit", "");
  if (options.action == "gc") {
    std::printf("removed %llu unreferenced chunks, freed %llu bytes\n", count("chunks_removed"), count("bytes_freed"));
  } else if (options.action == "mirror") {
    std::printf("mirrored %s: %llu files, %llu fetched over BitTorrent (%llu bytes); seeding %s%s\n", snapshot.c_str(),
                count("files"), count("fetched_files"), count("fetched_bytes"), result.value("info_hash", "").c_str(),
                result.value("same_swarm", false) ? " (the same swarm as the source)" : "");
  } else if (options.action == "pin") {
    if (result.value("changed", true)) {
      std::printf("pinned %s: its cached files are never evicted\n", snapshot.c_str());
    } else {
      std::printf("%s was pinned already\n", snapshot.c_str());
    }
  } else {
    std::printf(result.value("changed", true) ? "unpinned %s: its files may be evicted again\n" : "%s was not pinned\n",
                snapshot.c_str());
  }
}

}  // namespace

int admin(const AdminOptions& options) {
  nlohmann::json body = nlohmann::json::object();
  if (options.action != "gc") body = snapshot_body(options.repo, options.repo_type);
  if (options.action == "mirror") body["from"] = options.from;
  const auto node = node_or_explain(options.target);
  if (!node) return 1;
  const auto result = ask_node(*node, "POST", "/api/inferllama/" + options.action, body.dump(), options.action);
  if (!result) return 1;
  print_done(options, *result);
  return 0;
}

}  // namespace inferllama::cli
