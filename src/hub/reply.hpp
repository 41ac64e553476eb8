// An answer to relay to a client, in the Hub's terms: small enough to build without the rest of the hub.
#pragma once
#include <string>

#include "inferllama/upstream.hpp"

namespace inferllama::hub {

// An answer to relay to the client as it is (metadata, or an error in the Hub's words).
struct Reply {
  unsigned status = 200;
  HeaderList headers;  // besides Content-Type
  std::string content_type = "application/json";
  std::string body;
};

// An error as the Hub words one: the status, `X-Error-Code` (when given), `X-Error-Message` and a JSON body.
Reply error_reply(unsigned status, const std::string& message, const std::string& code = {});

// What an answer says went wrong, for a log line or a status: "HTTP 401: " and its X-Error-Message (else the
// start of its body).
std::string describe(const Reply& reply);

}  // namespace inferllama::hub
