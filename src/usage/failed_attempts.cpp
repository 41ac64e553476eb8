#include "usage/failed_attempts.hpp"

#include "inferllama/metrics.hpp"

namespace inferllama::usage {

FailedAttempts::FailedAttempts(const Clock& clock, const LimitPolicy& policy, std::size_t max_addresses)
    : clock_(clock), policy_(policy), max_addresses_(max_addresses) {}

std::int64_t FailedAttempts::now_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch()).count();
}

bool FailedAttempts::blocked(std::string_view address, std::chrono::milliseconds& retry_after) {
  if (policy_.requests == 0) return false;
  const std::int64_t now = now_ns();
  std::lock_guard lock(mutex_);
  const auto it = addresses_.find(address);
  if (it == addresses_.end()) return false;
  // Blocked while not even one more failure would fit: the same test as a failure's, without taking it.
  GcraState probe = it->second;
  std::int64_t retry_ns = 0;
  if (Gcra::try_take(probe, now, policy_.request_interval_seconds() * 1e9,
                     static_cast<double>(policy_.effective_request_burst()), 1, retry_ns)) {
    return false;
  }
  retry_after = std::chrono::ceil<std::chrono::milliseconds>(std::chrono::nanoseconds(retry_ns));
  ++refusals_;
  return true;
}

void FailedAttempts::failed(std::string_view address) {
  ++failures_;
  if (policy_.requests == 0) return;
  const std::int64_t now = now_ns();
  const double interval = policy_.request_interval_seconds() * 1e9;
  std::lock_guard lock(mutex_);
  auto it = addresses_.find(address);
  if (it == addresses_.end()) {
    if (addresses_.size() >= max_addresses_) sweep(now);
    if (addresses_.size() >= max_addresses_) return;  // full of addresses still failing: this one goes untracked
    it = addresses_.emplace(std::string(address), GcraState{}).first;
  }
  Gcra::take(it->second, now, interval, 1);
}

void FailedAttempts::sweep(std::int64_t now) {
  std::erase_if(addresses_, [&](const auto& entry) { return entry.second.tat_ns <= now; });
}

std::size_t FailedAttempts::tracked() const {
  std::lock_guard lock(mutex_);
  return addresses_.size();
}

namespace {
constexpr metrics::FamilySpec kFailures{
    "inferllama_auth_failures_total", "counter",
    "Credentials refused (node keys, passkeys, the admin key), counted per client address"};
constexpr metrics::FamilySpec kBlocked{
    "inferllama_auth_blocked_total", "counter",
    "Requests refused (429) because their address presented too many refused credentials"};
constexpr metrics::FamilySpec kTracked{"inferllama_auth_tracked_addresses", "gauge",
                                       "Client addresses with recent refused credentials"};
}  // namespace

void FailedAttempts::render_metrics(std::string& out) const {
  using metrics::write_family;
  write_family(out, kFailures, static_cast<double>(failures()));
  write_family(out, kBlocked, static_cast<double>(refusals()));
  write_family(out, kTracked, static_cast<double>(tracked()));
}

}  // namespace inferllama::usage
