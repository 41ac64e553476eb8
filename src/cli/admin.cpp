#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "inferllama/repo.hpp"

namespace inferllama::cli {
namespace {

// {"repo", "revision", "type"} of the snapshot the command names.
nlohmann::json snapshot_of(const AdminOptions& options) {
  const RepoRef ref = snapshot_argument(options.repo, options.repo_type);
  return {{"repo", ref.repo.name}, {"revision", ref.rev}, {"type", ref.repo.type_name()}};
}

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
  if (options.action != "gc") body = snapshot_of(options);
  if (options.action == "mirror") body["from"] = options.from;
  std::optional<Config> beside;
  const auto node = node_target(options.target, beside);
  if (!node) {
    report_no_node(*beside);
    return 1;
  }
  auto called = call_node(*node, "POST", "/api/inferllama/" + options.action, body.dump());
  if (auto* why = std::get_if<std::string>(&called)) {
    std::fprintf(stderr, "inferllama: %s\n", why->c_str());
    return 1;
  }
  const auto& answer = std::get<NodeAnswer>(called);
  auto result = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200 || !result.is_object()) {
    std::fprintf(stderr, "inferllama: %s failed (HTTP %ld): %s\n", options.action.c_str(), answer.status,
                 error_of(answer.body).c_str());
    return 1;
  }
  print_done(options, result);
  return 0;
}

}  // namespace inferllama::cli
