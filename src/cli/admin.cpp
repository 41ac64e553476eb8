#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"

namespace inferllama::cli {

int admin(const AdminOptions& options) {
  nlohmann::json body = nlohmann::json::object();
  if (options.action != "gc") {
    std::string repo = options.repo, revision = "main";
    if (auto at = repo.rfind('@'); at != std::string::npos) {
      revision = repo.substr(at + 1);
      repo = repo.substr(0, at);
    }
    body = {{"repo", repo}, {"revision", revision}, {"type", options.repo_type}};
    if (options.action == "mirror") body["from"] = options.from;
  }
  if (!options.node.empty() && (!options.data_dir.empty() || !options.config_file.empty())) {
    std::fprintf(stderr,
                 "inferllama: --node asks a node over HTTP(S); --data-dir and --config find the admin socket of the "
                 "node beside: pass one or the other\n");
    return 2;
  }
  NodeTarget node;
  if (!options.node.empty()) {
    node = NodeTarget::over_tcp(options.node, options.admin_key);
  } else {
    const Config config = config_beside(options.data_dir, options.config_file);
    const std::string socket = admin_socket_beside(config);
    if (socket.empty()) {
      const auto expected = admin_socket_path(config);
      std::fprintf(stderr,
                   "inferllama: no node's admin socket at %s: run this beside the node with its --data-dir or "
                   "--config, or pass --node URL --admin-key KEY\n",
                   expected.empty() ? "(admin_socket is off)" : expected.c_str());
      return 1;
    }
    node = NodeTarget::over_socket(socket);
  }
  auto called = call_node(node, "POST", "/api/inferllama/" + options.action, body.dump());
  if (auto* why = std::get_if<std::string>(&called)) {
    std::fprintf(stderr, "%s\n", why->c_str());
    return 1;
  }
  const auto& answer = std::get<NodeAnswer>(called);
  auto result = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200 || !result.is_object()) {
    std::fprintf(stderr, "%s failed (HTTP %ld): %s\n", options.action.c_str(), answer.status,
                 error_of(answer.body).c_str());
    return 1;
  }
  if (options.action == "gc") {
    std::printf("removed %llu unreferenced chunks, freed %llu bytes\n",
                static_cast<unsigned long long>(result.value("chunks_removed", 0ULL)),
                static_cast<unsigned long long>(result.value("bytes_freed", 0ULL)));
  } else if (options.action == "mirror") {
    std::printf("mirrored %s@%s: %llu files, %llu fetched over BitTorrent (%llu bytes); seeding %s%s\n",
                result.value("repo", "").c_str(), result.value("commit", "").c_str(),
                static_cast<unsigned long long>(result.value("files", 0ULL)),
                static_cast<unsigned long long>(result.value("fetched_files", 0ULL)),
                static_cast<unsigned long long>(result.value("fetched_bytes", 0ULL)),
                result.value("info_hash", "").c_str(),
                result.value("same_swarm", false) ? " (the same swarm as the source)" : "");
  } else {
    std::printf("%s %s@%s\n", result.value("pinned", false) ? "pinned" : "unpinned",
                result.value("repo", "").c_str(), result.value("commit", "").c_str());
  }
  return 0;
}

}  // namespace inferllama::cli
