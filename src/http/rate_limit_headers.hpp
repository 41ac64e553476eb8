#pragma once
#include <cstdint>
#include <string>

#include "inferllama/upstream.hpp"
#include "inferllama/usage.hpp"

namespace inferllama::http {

// The header fields that tell a client its limits (draft-ietf-httpapi-ratelimit-headers):
//   RateLimit-Policy: "requests";q=100;w=60, "tokens";q=1048576000;w=3600;qu="content-bytes",
//                     "concurrent";q=4;qu="concurrent-requests"
//   RateLimit: "requests";r=57;t=25, "tokens";r=1040187392;t=27, "concurrent";r=3
// and the older single-limit RateLimit-Limit / -Remaining / -Reset, naming the limit that refused or
// else the one closest to running out. Tokens are counted in bytes of content.
HeaderList rate_limit_headers(const Decision& decision);

// Retry-After in whole seconds, rounded up (never earlier than the limit allows) and at least 1.
std::int64_t retry_after_seconds(const Decision& decision);

// The body of a 429: which limit, its quota and window, and when to come back.
std::string rate_limited_body(const Decision& decision, const UserId& who);

const char* limit_name(LimitKind kind);

}  // namespace inferllama::http
