// Requests to a running node's own API (admin routes, accounts), shared by the commands that make them.
#pragma once
#include <string>
#include <variant>

#include "inferllama/config.hpp"

namespace inferllama::cli {

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

// The configuration `serve` would read with this --data-dir and --config (either may be empty), without
// the client's own variables (INFERLLAMA_NODE, INFERLLAMA_ADMIN_KEY).
Config config_beside(const std::string& data_dir, const std::string& config_file);

// The admin socket of that configuration when one exists there (a node runs, or ran and left it); "" if not.
std::string admin_socket_beside(const Config& config);

// What a failed answer says: the "error" of a JSON object, else the body as it is.
std::string error_of(const std::string& body);

}  // namespace inferllama::cli
