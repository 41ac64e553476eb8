#include "hub/reply.hpp"

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

}  // namespace inferllama::hub
