// Rate-limit policies: what a class of callers may do per window. A typed value of the configuration
// (limit_anonymous, limit_default, limit_users), parsed by the config loader.
#pragma once
#include <chrono>
#include <cstdint>

namespace inferllama {

// Each limit is off when its count is 0. A "token" is a unit of transfer of `token_bytes` bytes of file
// content (1 MiB by default); tokens are charged as the bytes flow.
struct LimitPolicy {
  std::uint64_t requests = 0;  // requests per request_window
  std::chrono::seconds request_window{60};
  std::uint64_t request_burst = 0;  // requests allowed at once; 0 = `requests` (a whole window's worth)
  std::uint64_t tokens = 0;         // tokens per token_window
  std::chrono::seconds token_window{3600};
  std::uint64_t token_burst = 0;  // tokens allowed at once; 0 = `tokens`
  unsigned concurrent = 0;        // file downloads at once
  std::uint64_t token_bytes = 1024 * 1024;

  bool limits_anything() const { return requests > 0 || tokens > 0 || concurrent > 0; }
  std::uint64_t effective_request_burst() const { return request_burst ? request_burst : requests; }
  std::uint64_t effective_token_burst() const { return token_burst ? token_burst : tokens; }
  // GCRA's emission intervals, in seconds: of one request, and of one byte of the token limit.
  double request_interval_seconds() const {
    return static_cast<double>(request_window.count()) / static_cast<double>(requests);
  }
  double byte_interval_seconds() const {
    return static_cast<double>(token_window.count()) / (static_cast<double>(tokens) * static_cast<double>(token_bytes));
  }
  double burst_bytes() const { return static_cast<double>(effective_token_burst()) * static_cast<double>(token_bytes); }
  friend bool operator==(const LimitPolicy&, const LimitPolicy&) = default;
};

}  // namespace inferllama
