#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "inferllama/limit_policy.hpp"
#include "inferllama/usage.hpp"
#include "usage/local_limiter.hpp"

namespace inferllama::usage {

// A credential-stuffing guard: failed credentials (a wrong node key, passkey or admin key) per client
// address, under a GCRA policy ("requests=20/1m burst=20": 20 failures at once, then one every 3 s).
// An address past it is blocked from presenting credentials until it recovers. At most `max_addresses`
// are remembered; recovered ones are dropped first, and past the bound a new address is not tracked.
// Thread-safe.
class FailedAttempts {
 public:
  FailedAttempts(const Clock& clock, const LimitPolicy& policy, std::size_t max_addresses = 100000);

  // Whether `address` may present credentials now; if not, how long until it may.
  bool blocked(std::string_view address, std::chrono::milliseconds& retry_after);
  // `address` presented a credential that was refused.
  void failed(std::string_view address);

  std::size_t tracked() const;
  std::uint64_t failures() const { return failures_.load(); }
  std::uint64_t refusals() const { return refusals_.load(); }
  // Prometheus families: failures, refusals and the addresses tracked.
  void render_metrics(std::string& out) const;

 private:
  std::int64_t now_ns() const;
  void sweep(std::int64_t now);  // under mutex_

  const Clock& clock_;
  const LimitPolicy policy_;
  const std::size_t max_addresses_;
  mutable std::mutex mutex_;
  // Looked up by a string_view (the connection's network) without building a string.
  struct AddressHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view address) const { return std::hash<std::string_view>{}(address); }
  };
  std::unordered_map<std::string, GcraState, AddressHash, std::equal_to<>> addresses_;
  std::atomic<std::uint64_t> failures_{0}, refusals_{0};
};

}  // namespace inferllama::usage
