#include "hub/reply.hpp"

#include <strings.h>

#include <nlohmann/json.hpp>

namespace inferllama::hub {

Reply error_reply(unsigned status, const std::string& message, const std::string& code) {
  Reply r;
  r.status = status;
  if (!code.empty()) r.headers.emplace_back("X-Error-Code", code);
  r.headers.emplace_back("X-Error-Message", message);
  r.body = nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

std::string describe(const Reply& reply) {
  for (const auto& [name, value] : reply.headers) {
    if (::strcasecmp(name.c_str(), "x-error-message") == 0)
      return "HTTP " + std::to_string(reply.status) + ": " + value;
  }
  return "HTTP " + std::to_string(reply.status) + ": " + reply.body.substr(0, 200);
}

}  // namespace inferllama::hub
