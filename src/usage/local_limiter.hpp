#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "inferllama/metrics.hpp"
#include "inferllama/usage.hpp"

namespace inferllama::usage {

// Decisions of every rate limiter, labelled by the backend that made them: one family, whichever renders.
inline constexpr metrics::FamilySpec kDecisions{"inferllama_ratelimit_decisions_total", "counter",
                                                "Rate-limit decisions, by the backend that made them and the result."};

// GCRA state of one limit: the theoretical arrival time, in nanoseconds of the injected clock.
struct GcraState {
  std::int64_t tat_ns = 0;
};

// The arithmetic of one decision, shared by the local limiter and the tests of the Redis script's
// answers: GCRA with emission interval window/quota and a tolerance of (burst - 1) intervals.
struct Gcra {
  // Allowed when a request costing `cost` units fits now; on success `state` moves on.
  static bool try_take(GcraState& state, std::int64_t now_ns, double interval_ns, double burst, double cost,
                       std::int64_t& retry_after_ns);
  // Charges `cost` units unconditionally (a debt may build up).
  static void take(GcraState& state, std::int64_t now_ns, double interval_ns, double cost);
  // Units still available now, and the time until all `burst` are available again.
  static double remaining(const GcraState& state, std::int64_t now_ns, double interval_ns, double burst,
                          std::int64_t& reset_ns);
};

// Limits kept in this process (the default backend, and the fallback when Redis cannot be asked).
// Idle identities are dropped once their state has fully recovered, so memory follows active callers.
// Thread-safe. A download's Decision::slot refers back to the limiter: the limiter must outlive every
// slot it handed out (the node destroys its limiter after the server and its streams).
class LocalRateLimiter final : public RateLimiter {
 public:
  explicit LocalRateLimiter(const Clock& clock);
  Task<Decision> admit(const UserId& who, const LimitPolicy& policy, bool download) override;
  std::optional<Decision> decide_now(const UserId& who, const LimitPolicy& policy, bool download) override {
    return decide(who, policy, download);
  }
  void charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) override;
  void render_metrics(std::string& out) const override;
  // This limiter's samples of kDecisions (a shared backend renders them under its own header).
  void render_decisions(std::string& out) const;

  // The same decision without a coroutine (admit() is this), for callers off the I/O threads and tests.
  Decision decide(const UserId& who, const LimitPolicy& policy, bool download);

 private:
  struct Entry {
    GcraState requests;
    GcraState tokens;
    unsigned downloads = 0;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, Entry> entries;
    std::int64_t last_sweep_ns = 0;
  };
  Shard& shard_of(const std::string& key);
  // The identity's entry, created when missing; sweeps the shard's idle entries now and then. Under the
  // shard's lock.
  Entry& entry_of(Shard& shard, const std::string& key, std::int64_t now_ns);
  static void fill_status(Decision& decision, const Entry& entry, const LimitPolicy& policy, std::int64_t now_ns);
  void release_download(const std::string& key);

  const Clock& clock_;
  static constexpr std::size_t kShards = 16;
  Shard shards_[kShards];
  mutable metrics::Counter allowed_, refused_;
};

}  // namespace inferllama::usage
