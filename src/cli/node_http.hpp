// Requests to a running node's own API (admin routes, accounts), shared by the commands that make them.
#pragma once
#include <string>
#include <variant>

namespace inferllama::cli {

struct NodeAnswer {
  long status = 0;
  std::string content_type;
  std::string body;
};

// One request to `url`, with `json_body` as an application/json body unless empty, and
// `Authorization: Bearer <bearer>` unless empty. The error says why the node could not be reached.
std::variant<NodeAnswer, std::string> call_node(const std::string& method, const std::string& url,
                                                const std::string& bearer, const std::string& json_body);

// A node's base URL without its trailing slashes, to append "/api/..." to.
std::string node_base(std::string url);

// What a failed answer says: the "error" of a JSON object, else the body as it is.
std::string error_of(const std::string& body);

}  // namespace inferllama::cli
