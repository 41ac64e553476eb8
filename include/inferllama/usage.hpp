// The seams of accounting: who a request is from (UserId) and the rate limiter (local or shared); limits,
// daily records and retention follow an injected Clock (inferllama/clock.hpp).
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/asio.hpp"
#include "inferllama/clock.hpp"
#include "inferllama/limit_policy.hpp"

namespace inferllama {

// Who a request is accounted to and limited as: a node user ("alice"), or, without a node key, the
// client's address ("anon:203.0.113.7"). User names never contain ':'.
class UserId {
 public:
  UserId() = default;
  static UserId user(std::string name) { return UserId(std::move(name)); }
  static UserId address(std::string_view ip) { return UserId("anon:" + std::string(ip)); }
  // The stored form back ("alice", "anon:203.0.113.7").
  static UserId parse(std::string_view stored) { return UserId(std::string(stored)); }

  bool anonymous() const { return value_.starts_with("anon:"); }
  const std::string& str() const { return value_; }
  friend auto operator<=>(const UserId&, const UserId&) = default;

 private:
  explicit UserId(std::string value) : value_(std::move(value)) {}
  std::string value_;
};

enum class LimitKind { requests, tokens, concurrent };

// One limit of a policy as the RateLimit header fields describe it.
struct LimitStatus {
  LimitKind kind = LimitKind::requests;
  std::uint64_t quota = 0;         // requests, bytes (tokens x token_bytes) or downloads at once
  std::chrono::seconds window{0};  // 0 for concurrent downloads
  std::uint64_t remaining = 0;     // what may still be used now (bytes for tokens)
  std::chrono::seconds reset{0};   // until the whole quota is available again
};

struct Decision {
  bool allowed = true;
  std::optional<LimitKind> refused_by;
  std::chrono::milliseconds retry_after{0};  // when refused: until the refusing limit lets one through
  std::vector<LimitStatus> status;           // each limit of the policy, after this decision
  bool fallback = false;                     // decided locally: the shared backend could not be asked
  std::shared_ptr<void> slot;                // a concurrent-download slot, freed when the last copy goes
};

class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // Decides one request of `who` under `policy` (which limits something): counts a request when it is
  // allowed, refuses while the tokens are in debt, and for a file download takes a concurrent-download
  // slot. A refused request counts nothing.
  virtual Task<Decision> admit(const UserId& who, const LimitPolicy& policy, bool download) = 0;
  // The same decision when it can be made without waiting (a limiter in memory always can): admit() is
  // then not awaited, and a request costs no coroutine for it. nullopt: await admit().
  virtual std::optional<Decision> decide_now(const UserId&, const LimitPolicy&, bool) { return std::nullopt; }
  // `bytes` of file content sent to `who`, charged to its token limit as they flow. The limit may go
  // into debt: a download already streaming is never cut, the next request is refused instead.
  virtual void charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) = 0;
  // Prometheus text of the limiter's own counters.
  virtual void render_metrics(std::string& out) const = 0;
};

}  // namespace inferllama
