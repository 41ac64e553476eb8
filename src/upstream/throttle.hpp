#pragma once
// Good manners toward the Hub. An upstream that answers 429 (Too Many Requests) or 503 throttles the
// credential the request went with (its identity: anonymous, one of the node's tokens, a user's own
// token). Requests of that identity then wait, unsent, for as long as the answer's Retry-After or
// RateLimit header asked (clamped to 1 s .. upstream_throttle_max), or, when it said nothing, 1 s,
// doubled each time the upstream throttles again right after a wait, up to a minute. The time from the
// first throttling answer to the first other answer after the back-off is one episode: logged when it
// starts and when it ends, counted in /metrics.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "inferllama/clock.hpp"
#include "inferllama/config.hpp"
#include "inferllama/upstream.hpp"

namespace inferllama::upstream {

// 429, and 503: what an upstream answers a client it wants to see less of.
bool is_throttling(long status);

// The wait a throttling answer asks for: the longest of Retry-After (delay-seconds, or an HTTP-date taken
// against `wall_now`), the reset (`t`) of each RateLimit item with nothing remaining (`r=0`; the IETF
// draft the Hub follows: `"api";r=0;t=55`) and the older drafts' RateLimit-Reset; nullopt when none of
// them says. Whole seconds, unclamped; a date already past is 0 s.
std::optional<std::chrono::seconds> requested_wait(const HeaderList& headers, SystemTime wall_now);

// Who a request goes upstream as, told by its Authorization.
struct Identity {
  enum class Kind { anonymous, node, user };
  static constexpr std::size_t kKinds = 3;
  Kind kind = Kind::anonymous;
  std::size_t node_token = 0;  // kind node: which of the node's tokens, 0-based
  std::string key;             // "anonymous", "node/N", or "user/" and the SHA-256 (hex) of the Authorization
  // For logs: anonymous, node-token-N (1-based), user-XXXXXXXX (8 hex digits of the hash); never the
  // credential itself.
  std::string label() const;
};
// anonymous, node, user: the bounded label of a metric.
std::string_view kind_name(Identity::Kind kind);

// Built by from(): the defaults are the configuration's.
struct ThrottleSettings {
  std::chrono::seconds max_wait{};  // the longest back-off (upstream_throttle_max)
  // Users' credentials are client input: at most this many of them are remembered in back-off at once.
  std::size_t max_users = 4096;
  static ThrottleSettings from(const Config& config);
};

// The back-off of each identity. Thread-safe; times from a monotonic `clock`, the wall clock only for the
// log's "until".
class BackoffTable {
 public:
  BackoffTable(ThrottleSettings settings, const Clock& clock, const Clock& wall);

  // How long requests as `who` wait from now; zero when they go out.
  std::chrono::milliseconds left(const Identity& who) const;
  // Before a request as `who` goes: nullopt when it may; else it is counted as held back, and the whole
  // seconds still to wait (rounded up, at least 1).
  std::optional<std::chrono::seconds> hold(const Identity& who);
  // The upstream throttled `who` with `status`, asking for `wait` (nullopt: it did not say): starts an
  // episode or lengthens the one in progress. The whole seconds the back-off lasts from now.
  std::chrono::seconds throttled(const Identity& who, long status, std::optional<std::chrono::seconds> wait);
  // The upstream answered `who` without throttling: an episode whose back-off is over ends.
  void answered(const Identity& who);

  struct KindCounts {
    std::uint64_t backing_off = 0;  // identities whose back-off runs now
    std::uint64_t episodes = 0;
    std::uint64_t held = 0;                // requests not sent
    std::uint64_t throttling_answers = 0;  // 429 and 503 answers
  };
  KindCounts counts(Identity::Kind kind) const;
  // Identities remembered (in an episode): users' ones at most ThrottleSettings::max_users.
  std::size_t size() const;

  // The longest back-off without a word from the upstream, and the first.
  static constexpr std::chrono::seconds kFirstDefaultWait{1};
  static constexpr std::chrono::seconds kLongestDefaultWait{60};

 private:
  struct Episode {
    Identity who;
    SystemTime started{};
    SystemTime until{};
    std::uint64_t held = 0;
    unsigned repeats = 0;  // throttling answers right after a back-off ended: each doubles the default wait
  };
  void end_locked(std::unordered_map<std::string, Episode>::iterator it, SystemTime now, std::string_view why);
  void make_room_locked(SystemTime now);

  const ThrottleSettings settings_;
  const Clock& clock_;
  const Clock& wall_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Episode> episodes_;  // by Identity::key
  std::size_t users_ = 0;                              // of them, users' ones
  std::array<KindCounts, Identity::kKinds> counts_{};
};

// The Upstream the node talks to the Hub through: every request to the upstream URL (config.upstream,
// which the parent set spreads over the parents) goes as the identity of its Authorization, and waits,
// unsent, while that identity backs off: it gets a 503 with `held_back` and `retry_after` at once. A
// throttling answer sets `retry_after` (how long the identity now backs off). Requests to any other URL (a
// CDN a download was sent to) pass, with `retry_after` from a throttling answer's headers. Also the
// UpstreamThrottle the Hub view picks the node's tokens by.
class ThrottledUpstream : public Upstream, public UpstreamThrottle {
 public:
  virtual Identity identify(std::string_view authorization) const = 0;
  virtual const BackoffTable& table() const = 0;
  // inferllama_upstream_throttled, _throttle_episodes_total, _held_back_total, _throttling_answers_total
  // (by identity kind), and inferllama_upstream_node_token_requests_total, _node_token_throttled (by the
  // token's number in the node's list).
  virtual void render_metrics(std::string& out) const = 0;
};

// Over `next`; the node's tokens are config.upstream_tokens.
std::unique_ptr<ThrottledUpstream> make_throttled_upstream(Upstream& next, const Config& config,
                                                           const Clock& clock = monotonic_clock(),
                                                           const Clock& wall = system_clock());

}  // namespace inferllama::upstream
