// Requests to a running node's own API (admin routes, accounts), shared by the commands that make them.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

#include "inferllama/config.hpp"
#include "inferllama/repo.hpp"

namespace CLI {
class App;
}

namespace inferllama::cli {

// A command given the wrong way (options that exclude each other, a secret in argv): exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NodeAnswer {
  long status = 0;
  std::string content_type;
  std::string body;
};

// How a command reaches a node's admin API: beside the node through its admin socket (the OS says who
// the caller is), or over HTTP(S) at a URL with the admin key (or a user's node key, for `usage`).
struct NodeTarget {
  std::string url;     // base URL without trailing slashes
  std::string socket;  // the admin socket's path; "" = over TCP to `url`
  std::string bearer;  // sent as Authorization: Bearer unless empty

  static NodeTarget over_socket(const std::string& path);
  static NodeTarget over_tcp(std::string url, const std::string& bearer);
  // What the target is, for messages: the URL, or the socket's path.
  std::string where() const;
};

// One request for `path_and_query` ("/api/..."), with `json_body` as an application/json body unless
// empty. The error says why the node could not be reached.
std::variant<NodeAnswer, std::string> call_node(const NodeTarget& node, const std::string& method,
                                                const std::string& path_and_query, const std::string& json_body);

// A snapshot as a command takes it: [datasets/|spaces/]OWNER/NAME[@REVISION], the type from the prefix or
// `repo_type` (model when neither says; a prefix and a repo_type that disagree are an error). Throws
// UsageError.
RepoRef snapshot_argument(const std::string& repo, const std::string& repo_type);

// {"repo", "revision", "type"} of that snapshot, as the admin API takes it. Throws UsageError.
nlohmann::json snapshot_body(const std::string& repo, const std::string& repo_type);

// How every command that talks to a node names it and its credentials.
struct NodeOptions {
  std::string node;            // --node URL (env INFERLLAMA_NODE): ask it over HTTP(S)
  std::string admin_key_file;  // --admin-key-file FILE (env INFERLLAMA_ADMIN_KEY_FILE); else env INFERLLAMA_ADMIN_KEY
  std::string admin_key_flag;  // --admin-key KEY: refused, every user of the machine could read it (ps)
  std::string data_dir;        // --data-dir DIR, or --config FILE: the node beside, through its admin socket
  std::string config_file;
};
// Adds those options to `command`; `key_use` says what the key is for in its help.
void add_node_options(CLI::App& command, NodeOptions& options, const std::string& key_use);

// Where a command's requests go: to --node with the admin key, or to the admin socket of the node that
// runs on --data-dir/--config; INFERLLAMA_NODE counts as --node unless no key is given and a node runs
// right here (its socket needs none) or --data-dir/--config name the node beside. nullopt when no node runs there;
// `beside` then holds that node's configuration (for commands that can work on the data directory itself). Throws
// UsageError on misuse.
std::optional<NodeTarget> node_target(const NodeOptions& options, std::optional<Config>& beside);

// Tells the user on stderr that no node runs beside `beside` (the configuration node_target left), and how to
// reach one; for commands that need a running node.
void report_no_node(const Config& beside);

// node_target, and when no node runs there, report_no_node and nullopt.
std::optional<NodeTarget> node_or_explain(const NodeOptions& options);

// One request whose answer must be HTTP 200 with a JSON object: that object; otherwise nullopt, after saying on
// stderr why not ("inferllama: WHAT failed (HTTP N): ERROR", or that the node cannot be reached).
std::optional<nlohmann::json> ask_node(const NodeTarget& node, const std::string& method,
                                       const std::string& path_and_query, const std::string& json_body,
                                       const std::string& what);

// The configuration `serve` would read with this --data-dir and --config (either may be empty), without
// the admin key the client sends.
Config config_beside(const std::string& data_dir, const std::string& config_file);

// The admin socket of that configuration when a node runs there and serves one; "" if not.
std::string admin_socket_beside(const Config& config);

// What a failed answer says: the "error" of a JSON object, else the body as it is.
std::string error_of(const std::string& body);

}  // namespace inferllama::cli
