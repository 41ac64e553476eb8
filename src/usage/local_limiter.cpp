#include "usage/local_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

namespace inferllama::usage {
namespace {

constexpr double kNanosPerSecond = 1e9;
// A theoretical arrival time never runs further ahead of now than this (a century of debt), so a
// charge of absurd size cannot overflow the state.
constexpr double kMaxAheadNs = 100.0 * 365 * 24 * 3600 * kNanosPerSecond;
// Idle entries are looked for this often per shard.
constexpr std::int64_t kSweepEveryNs = 30 * 1'000'000'000LL;

// How far the state runs ahead of now: 0 once it has fully recovered.
double ahead_of(const GcraState& state, std::int64_t now_ns) {
  return static_cast<double>(std::max<std::int64_t>(state.tat_ns - now_ns, 0));
}

// Stored rounded down, so rounding never accumulates into refusing what the exact arithmetic allows.
void store(GcraState& state, std::int64_t now_ns, double ahead_ns) {
  state.tat_ns = now_ns + static_cast<std::int64_t>(std::floor(std::min(ahead_ns, kMaxAheadNs)));
}

std::int64_t nanoseconds_since_epoch(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::chrono::seconds whole_seconds_from(std::int64_t ns) {
  return std::chrono::seconds(static_cast<std::int64_t>(std::ceil(static_cast<double>(ns) / kNanosPerSecond)));
}

std::chrono::milliseconds whole_millis_from(std::int64_t ns) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(static_cast<double>(ns) / 1e6)));
}

double request_interval_ns(const LimitPolicy& policy) {
  return policy.request_interval_seconds() * kNanosPerSecond;
}
double byte_interval_ns(const LimitPolicy& policy) {
  return policy.byte_interval_seconds() * kNanosPerSecond;
}

}  // namespace

// A request of `cost` fits while the state, moved on by it, stays within `burst` intervals of now. The
// nanosecond of slack absorbs the floating-point error of burst * interval.
bool Gcra::try_take(GcraState& state, std::int64_t now_ns, double interval_ns, double burst, double cost,
                    std::int64_t& retry_after_ns) {
  const double ahead = ahead_of(state, now_ns) + cost * interval_ns;
  const double tolerance = burst * interval_ns;
  if (ahead <= tolerance + 1) {
    store(state, now_ns, ahead);
    retry_after_ns = 0;
    return true;
  }
  // The first nanosecond at which the same request passes the test above.
  retry_after_ns = static_cast<std::int64_t>(std::ceil(ahead - tolerance - 1));
  return false;
}

void Gcra::take(GcraState& state, std::int64_t now_ns, double interval_ns, double cost) {
  store(state, now_ns, ahead_of(state, now_ns) + cost * interval_ns);
}

double Gcra::remaining(const GcraState& state, std::int64_t now_ns, double interval_ns, double burst,
                       std::int64_t& reset_ns) {
  const double ahead = ahead_of(state, now_ns);
  reset_ns = static_cast<std::int64_t>(std::ceil(ahead));
  if (interval_ns <= 0) return burst;
  // Whole units; the relative epsilon keeps 98.9999999 (floating-point error) from counting as 98.
  const double units = (burst * interval_ns - ahead) / interval_ns;
  return std::max(0.0, std::floor(units + std::abs(units) * 1e-9 + 1e-9));
}

LocalRateLimiter::LocalRateLimiter(const Clock& clock) : clock_(clock) {}

Task<Decision> LocalRateLimiter::admit(const UserId& who, const LimitPolicy& policy, bool download) {
  co_return decide(who, policy, download);
}

LocalRateLimiter::Shard& LocalRateLimiter::shard_of(const std::string& key) {
  return shards_[std::hash<std::string>{}(key) % kShards];
}

LocalRateLimiter::Entry& LocalRateLimiter::entry_of(Shard& shard, const std::string& key, std::int64_t now_ns) {
  if (now_ns - shard.last_sweep_ns >= kSweepEveryNs) {
    shard.last_sweep_ns = now_ns;
    std::erase_if(shard.entries, [now_ns](const auto& item) {
      const Entry& e = item.second;
      return e.downloads == 0 && e.requests.tat_ns <= now_ns && e.tokens.tat_ns <= now_ns;
    });
  }
  return shard.entries[key];
}

// Every limit is checked against the state before this request; only when all of them pass does the
// request count (one request, one download slot), so a refused request changes nothing. When several
// refuse, `refused_by` names the first (requests, tokens, concurrent) and `retry_after` is the longest
// wait: the request cannot pass before all of them let it through.
Decision LocalRateLimiter::decide(const UserId& who, const LimitPolicy& policy, bool download) {
  Decision decision;
  if (!policy.limits_anything()) {
    allowed_.add();
    return decision;
  }
  const std::string& key = who.str();
  const std::int64_t now_ns = nanoseconds_since_epoch(clock_.now());
  const bool takes_slot = download && policy.concurrent > 0;
  std::chrono::milliseconds retry_after{0};
  auto refuse = [&](LimitKind kind, std::chrono::milliseconds wait) {
    if (!decision.refused_by) decision.refused_by = kind;
    retry_after = std::max(retry_after, wait);
  };
  {
    Shard& shard = shard_of(key);
    std::lock_guard lock(shard.mutex);
    Entry& entry = entry_of(shard, key, now_ns);

    GcraState requests = entry.requests;
    if (policy.requests > 0) {
      std::int64_t wait_ns = 0;
      if (!Gcra::try_take(requests, now_ns, request_interval_ns(policy),
                          static_cast<double>(policy.effective_request_burst()), 1, wait_ns)) {
        refuse(LimitKind::requests, whole_millis_from(wait_ns));
      }
    }
    if (policy.tokens > 0) {
      // Costs nothing now (the bytes are charged as they flow); refused only while in debt.
      GcraState tokens = entry.tokens;
      std::int64_t wait_ns = 0;
      if (!Gcra::try_take(tokens, now_ns, byte_interval_ns(policy), policy.burst_bytes(), 0, wait_ns)) {
        refuse(LimitKind::tokens, whole_millis_from(wait_ns));
      }
    }
    if (takes_slot && entry.downloads >= policy.concurrent) {
      refuse(LimitKind::concurrent, std::chrono::seconds(1));  // a hint: a download ends at no known time
    }

    decision.allowed = !decision.refused_by;
    if (decision.allowed) {
      entry.requests = requests;
      if (takes_slot) ++entry.downloads;
    }
    decision.retry_after = retry_after;
    fill_status(decision, entry, policy, now_ns);
  }
  (decision.allowed ? allowed_ : refused_).add();
  if (decision.allowed && takes_slot) {
    // Made outside the shard's lock: should allocating it fail, the deleter runs at once and frees the
    // slot just counted, which takes the lock.
    decision.slot = std::shared_ptr<void>(new std::string(key), [this](std::string* slot_key) {
      release_download(*slot_key);
      delete slot_key;
    });
  }
  return decision;
}

void LocalRateLimiter::fill_status(Decision& decision, const Entry& entry, const LimitPolicy& policy,
                                   std::int64_t now_ns) {
  std::int64_t reset_ns = 0;
  if (policy.requests > 0) {
    const double left = Gcra::remaining(entry.requests, now_ns, request_interval_ns(policy),
                                        static_cast<double>(policy.effective_request_burst()), reset_ns);
    decision.status.push_back({LimitKind::requests, policy.requests, policy.request_window,
                               static_cast<std::uint64_t>(left), whole_seconds_from(reset_ns)});
  }
  if (policy.tokens > 0) {
    const double left = Gcra::remaining(entry.tokens, now_ns, byte_interval_ns(policy), policy.burst_bytes(), reset_ns);
    decision.status.push_back({LimitKind::tokens, policy.tokens * policy.token_bytes, policy.token_window,
                               static_cast<std::uint64_t>(left), whole_seconds_from(reset_ns)});
  }
  if (policy.concurrent > 0) {
    const unsigned in_use = std::min(entry.downloads, policy.concurrent);
    decision.status.push_back(
        {LimitKind::concurrent, policy.concurrent, std::chrono::seconds(0), policy.concurrent - in_use, {}});
  }
}

void LocalRateLimiter::charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) {
  if (policy.tokens == 0 || bytes == 0) return;
  const std::string& key = who.str();
  const std::int64_t now_ns = nanoseconds_since_epoch(clock_.now());
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  Gcra::take(entry_of(shard, key, now_ns).tokens, now_ns, byte_interval_ns(policy), static_cast<double>(bytes));
}

void LocalRateLimiter::release_download(const std::string& key) {
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  // An entry with a download in progress is never swept, so it is there.
  auto it = shard.entries.find(key);
  if (it != shard.entries.end() && it->second.downloads > 0) --it->second.downloads;
}

void LocalRateLimiter::render_metrics(std::string& out) const {
  metrics::write_header(out, kDecisions);
  render_decisions(out);
}

void LocalRateLimiter::render_decisions(std::string& out) const {
  metrics::write_sample(out, kDecisions, "backend=\"local\",result=\"allowed\"", static_cast<double>(allowed_.value()));
  metrics::write_sample(out, kDecisions, "backend=\"local\",result=\"refused\"", static_cast<double>(refused_.value()));
}

}  // namespace inferllama::usage
