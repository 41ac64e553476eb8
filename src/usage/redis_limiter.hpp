#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "inferllama/usage.hpp"
#include "usage/local_limiter.hpp"
#include "usage/redis_client.hpp"

namespace inferllama::usage {

// Limit state in Redis, shared by every node pointed at it: each decision is one atomic Lua script
// (GCRA over Redis's own clock, so the nodes' clocks need not agree), charges are scripts too, sent
// without waiting. Talks RESP over Asio on the caller's I/O threads (pipelined on one connection per
// I/O context, reconnecting with backoff). While Redis cannot be asked, decisions are made by
// `fallback` (or refused when refuse_when_down), and the log and /metrics say so.
class RedisRateLimiter final : public RateLimiter {
 public:
  RedisRateLimiter(asio::io_context& io, RedisSettings settings, LocalRateLimiter& fallback);
  ~RedisRateLimiter() override;
  Task<Decision> admit(const UserId& who, const LimitPolicy& policy, bool download) override;
  void charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) override;
  void render_metrics(std::string& out) const override;

  bool connected() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace inferllama::usage
