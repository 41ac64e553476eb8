#include "cli/node_http.hpp"

#include <curl/curl.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "node/data_dir_lock.hpp"

extern char** environ;

namespace inferllama::cli {

NodeTarget NodeTarget::over_socket(const std::string& path) {
  // The host is only the request's Host header: curl connects to the socket.
  return NodeTarget{"http://localhost", path, ""};
}

NodeTarget NodeTarget::over_tcp(std::string url, const std::string& bearer) {
  while (url.ends_with('/')) url.pop_back();
  return NodeTarget{std::move(url), "", bearer};
}

std::string NodeTarget::where() const {
  return socket.empty() ? url : "the admin socket " + socket;
}

std::variant<NodeAnswer, std::string> call_node(const NodeTarget& node, const std::string& method,
                                                const std::string& path_and_query, const std::string& json_body) {
  static std::once_flag curl_ready;
  std::call_once(curl_ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  NodeAnswer answer;
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  if (!json_body.empty()) headers = curl_slist_append(headers, "Content-Type: application/json");
  const std::string authorization = "Authorization: Bearer " + node.bearer;
  if (!node.bearer.empty()) headers = curl_slist_append(headers, authorization.c_str());
  const std::string url = node.url + path_and_query;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  if (!node.socket.empty()) curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, node.socket.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (!json_body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(json_body.size()));
  }
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
        static_cast<std::string*>(u)->append(d, s * n);
        return s * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer.body);
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
  const char* content_type = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK && content_type)
    answer.content_type = content_type;
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) return "cannot reach the node at " + node.where() + ": " + curl_easy_strerror(rc);
  return answer;
}

Config config_beside(const std::string& data_dir, const std::string& config_file) {
  ConfigSources sources;
  if (!data_dir.empty()) sources.flags["data_dir"] = data_dir;
  if (!config_file.empty()) sources.file = config_file;
  sources.env = environment_map(environ);
  // The admin key a client sends is no setting of the node beside (which answers on its socket).
  sources.env.erase("INFERLLAMA_ADMIN_KEY");
  sources.env.erase("INFERLLAMA_ADMIN_KEY_FILE");
  return load_config(sources);
}

std::string admin_socket_beside(const Config& config) {
  const auto path = admin_socket_path(config);
  std::error_code ec;
  // A socket a stopped node left behind answers nobody: only a running node's counts.
  if (path.empty() || !std::filesystem::is_socket(path, ec) || !node::DataDirLock::holder(config.data_dir)) return "";
  return path.string();
}

RepoRef snapshot_argument(const std::string& repo, const std::string& repo_type) {
  auto ref = parse_repo_ref(repo);
  if (!ref) {
    throw UsageError("not a repository: " + repo +
                     " (expected [datasets/|spaces/]OWNER/NAME[@REVISION], e.g. acme/tiny-model@main)");
  }
  if (!repo_type.empty()) {
    const auto type = parse_repo_type(repo_type);
    if (ref->typed && type != ref->repo.type) {
      throw UsageError(repo + " names a " + std::string(ref->repo.type_name()) + ", --repo-type says " + repo_type);
    }
    ref->repo.type = *type;
  }
  return *ref;
}

nlohmann::json snapshot_body(const std::string& repo, const std::string& repo_type) {
  const RepoRef ref = snapshot_argument(repo, repo_type);
  return {{"repo", ref.repo.name}, {"revision", ref.rev}, {"type", ref.repo.type_name()}};
}

void add_node_options(CLI::App& command, NodeOptions& options, const std::string& key_use) {
  command.add_option("--node", options.node,
                     "Base URL of a running node, asked over HTTP(S) with its admin key (env INFERLLAMA_NODE); "
                     "without it, the admin socket of the node that runs on --data-dir/--config");
  command
      .add_option(
          "--admin-key-file", options.admin_key_file,
          "File holding " + key_use + ", with --node (a trailing newline is ignored; or set INFERLLAMA_ADMIN_KEY)")
      ->envname("INFERLLAMA_ADMIN_KEY_FILE");
  // Accepted only to say what to do instead: argv is public.
  command.add_option("--admin-key", options.admin_key_flag)->group("");
  command.add_option("--data-dir", options.data_dir,
                     "The node's data directory [default: ./data] (env INFERLLAMA_DATA_DIR)");
  command.add_option("--config", options.config_file, "The node's TOML configuration file (env INFERLLAMA_CONFIG)");
}

void report_no_node(const Config& beside) {
  const auto expected = admin_socket_path(beside);
  std::fprintf(stderr,
               "inferllama: no node runs on %s%s: run this beside the node with its --data-dir or --config, or ask "
               "it over HTTP(S) with --node URL and its admin key (INFERLLAMA_ADMIN_KEY or --admin-key-file)\n",
               beside.data_dir.c_str(), expected.empty() ? " with an admin socket (admin_socket is off)" : "");
}

std::optional<NodeTarget> node_target(const NodeOptions& options, std::optional<Config>& beside) {
  if (!options.admin_key_flag.empty()) {
    throw UsageError(
        "--admin-key would show the key to every user of the machine (ps): give it as --admin-key-file FILE or the "
        "environment variable INFERLLAMA_ADMIN_KEY");
  }
  const char* env_key = std::getenv("INFERLLAMA_ADMIN_KEY");
  if (!options.admin_key_file.empty() && env_key && *env_key) {
    throw UsageError("the admin key is given twice (--admin-key-file and INFERLLAMA_ADMIN_KEY): give it one way");
  }
  const std::string key = !options.admin_key_file.empty() ? read_secret_file(options.admin_key_file, "--admin-key-file")
                          : env_key                       ? std::string(env_key)
                                                          : std::string();
  if (!options.node.empty()) {
    if (!options.data_dir.empty() || !options.config_file.empty()) {
      throw UsageError(
          "--node asks a node over HTTP(S); --data-dir and --config find the node beside through its "
          "admin socket: pass one or the other");
    }
    return NodeTarget::over_tcp(options.node, key);
  }
  beside = config_beside(options.data_dir, options.config_file);
  const std::string socket = admin_socket_beside(*beside);
  // INFERLLAMA_NODE names the node for every command (`pull` too); with no key to present over TCP, the
  // node running right here is asked through its socket instead, which needs none.
  const char* env_node = std::getenv("INFERLLAMA_NODE");
  const bool named_beside = !options.data_dir.empty() || !options.config_file.empty();
  if (env_node && *env_node && !named_beside && (!key.empty() || socket.empty())) {
    return NodeTarget::over_tcp(env_node, key);
  }
  if (socket.empty()) return std::nullopt;
  return NodeTarget::over_socket(socket);
}

std::optional<NodeTarget> node_or_explain(const NodeOptions& options) {
  std::optional<Config> beside;
  auto node = node_target(options, beside);
  if (!node) report_no_node(*beside);
  return node;
}

std::optional<nlohmann::json> ask_node(const NodeTarget& node, const std::string& method,
                                       const std::string& path_and_query, const std::string& json_body,
                                       const std::string& what) {
  auto called = call_node(node, method, path_and_query, json_body);
  if (auto* why = std::get_if<std::string>(&called)) {
    std::fprintf(stderr, "inferllama: %s\n", why->c_str());
    return std::nullopt;
  }
  const auto& answer = std::get<NodeAnswer>(called);
  auto result = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200 || !result.is_object()) {
    std::fprintf(stderr, "inferllama: %s failed (HTTP %ld): %s\n", what.c_str(), answer.status,
                 error_of(answer.body).c_str());
    return std::nullopt;
  }
  return result;
}

std::string error_of(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_object() && json.contains("error") && json["error"].is_string()) return json["error"].get<std::string>();
  return body;
}

}  // namespace inferllama::cli
