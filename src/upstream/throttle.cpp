#include "upstream/throttle.hpp"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <strings.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <vector>

#include "inferllama/metrics.hpp"

namespace inferllama::upstream {
namespace {

using std::chrono::seconds;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool named(std::string_view header, std::string_view lower_name) {
  return header.size() == lower_name.size() && ::strncasecmp(header.data(), lower_name.data(), header.size()) == 0;
}

// Digits only; a number too large to mean anything saturates (it is clamped later).
std::optional<std::uint64_t> whole_number(std::string_view text) {
  text = trim(text);
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  if (text.size() > 12) return std::uint64_t{999'999'999'999};
  std::uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

int month_number(std::string_view name) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i) {
    if (named(name, kMonths[i])) return i + 1;
  }
  return 0;
}

// An HTTP-date (RFC 9110 §5.6.7) in any of its three forms: "Sun, 06 Nov 1994 08:49:37 GMT",
// "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994".
std::optional<SystemTime> http_date(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ' ' || text[i] == ',' || text[i] == '-') {
      if (i > start) words.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (words.size() < 5) return std::nullopt;
  std::string_view day, month, year, time;
  if (month_number(words[1]) != 0) {  // asctime: weekday month day time year
    month = words[1], day = words[2], time = words[3], year = words[4];
  } else {  // weekday day month year time [GMT]
    day = words[1], month = words[2], year = words[3], time = words[4];
    if (words.size() > 5 && !named(words[5], "gmt")) return std::nullopt;
  }
  const auto d = whole_number(day), y = whole_number(year);
  const int m = month_number(month);
  if (!d || !y || m == 0 || time.size() != 8 || time[2] != ':' || time[5] != ':') return std::nullopt;
  const auto hh = whole_number(time.substr(0, 2)), mm = whole_number(time.substr(3, 2)),
             ss = whole_number(time.substr(6, 2));
  if (!hh || !mm || !ss || *hh > 23 || *mm > 59 || *ss > 60) return std::nullopt;
  // RFC 850's two-digit year: the nearest century that is not more than 50 years ahead.
  std::uint64_t full_year = *y;
  if (year.size() == 2) full_year += full_year < 70 ? 2000 : 1900;
  if (full_year < 1970 || full_year > 9999) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year(static_cast<int>(full_year)),
                                         std::chrono::month(static_cast<unsigned>(m)),
                                         std::chrono::day(static_cast<unsigned>(*d))};
  if (!date.ok()) return std::nullopt;
  return SystemTime(std::chrono::sys_days(date).time_since_epoch() + std::chrono::hours(*hh) +
                    std::chrono::minutes(*mm) + seconds(*ss));
}

// `"api";r=0;t=55, "other";r=3;t=10`: the longest `t` of the items with nothing remaining (r=0).
std::optional<seconds> ratelimit_reset(std::string_view field) {
  std::optional<seconds> longest;
  bool quoted = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= field.size(); ++i) {
    if (i < field.size() && field[i] == '"') quoted = !quoted;
    if (i < field.size() && (quoted || field[i] != ',')) continue;
    std::string_view item = field.substr(start, i - start);
    start = i + 1;
    std::optional<std::uint64_t> remaining, reset;
    for (std::size_t at = item.find(';'); at != std::string_view::npos;) {
      const std::size_t next = item.find(';', at + 1);
      const std::string_view param = trim(item.substr(at + 1, next == std::string_view::npos ? next : next - at - 1));
      at = next;
      const std::size_t eq = param.find('=');
      if (eq == std::string_view::npos) continue;
      const std::string_view name = trim(param.substr(0, eq));
      if (name == "r") remaining = whole_number(param.substr(eq + 1));
      if (name == "t") reset = whole_number(param.substr(eq + 1));
    }
    if (remaining == std::uint64_t{0} && reset) longest = std::max(longest.value_or(seconds(0)), seconds(*reset));
  }
  return longest;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

// A wait the node keeps to: at least a second, at most `longest`.
seconds bounded(seconds wait, seconds longest) {
  return std::clamp(wait, seconds(1), std::max(seconds(1), longest));
}

seconds whole_seconds_up(std::chrono::nanoseconds d) {
  return std::max(seconds(1), std::chrono::ceil<seconds>(d));
}

std::string utc_text(SystemTime t) {
  const std::time_t when = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&when, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::size_t slot(Identity::Kind kind) {
  return static_cast<std::size_t>(kind);
}

}  // namespace

bool is_throttling(long status) {
  return status == 429 || status == 503;
}

std::optional<seconds> requested_wait(const HeaderList& headers, SystemTime wall_now) {
  std::optional<seconds> wait;
  auto longer = [&](seconds s) { wait = std::max(wait.value_or(seconds(0)), s); };
  for (const auto& [name, value] : headers) {
    if (named(name, "retry-after")) {
      if (auto delay = whole_number(value)) {
        longer(seconds(*delay));
      } else if (auto date = http_date(trim(value))) {
        longer(*date > wall_now ? std::chrono::ceil<seconds>(*date - wall_now) : seconds(0));
      }
    } else if (named(name, "ratelimit")) {
      if (auto reset = ratelimit_reset(value)) longer(*reset);
    } else if (named(name, "ratelimit-reset")) {
      if (auto reset = whole_number(value)) longer(seconds(*reset));
    }
  }
  return wait;
}

std::string Identity::label() const {
  switch (kind) {
    case Kind::anonymous:
      return "anonymous";
    case Kind::node:
      return "node-token-" + std::to_string(node_token + 1);
    case Kind::user:
      return "user-" + key.substr(std::string_view("user/").size(), 8);
  }
  return "anonymous";
}

std::string_view kind_name(Identity::Kind kind) {
  switch (kind) {
    case Identity::Kind::anonymous:
      return "anonymous";
    case Identity::Kind::node:
      return "node";
    case Identity::Kind::user:
      return "user";
  }
  return "anonymous";
}

ThrottleSettings ThrottleSettings::from(const Config& config) {
  ThrottleSettings settings;
  settings.max_wait = config.upstream_throttle_max;
  return settings;
}

BackoffTable::BackoffTable(ThrottleSettings settings, const Clock& clock, const Clock& wall)
    : settings_(settings), clock_(clock), wall_(wall) {}

std::chrono::milliseconds BackoffTable::left(const Identity& who) const {
  const SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  auto it = episodes_.find(who.key);
  if (it == episodes_.end() || it->second.until <= now) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(it->second.until - now);
}

std::optional<seconds> BackoffTable::hold(const Identity& who) {
  const SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  auto it = episodes_.find(who.key);
  if (it == episodes_.end() || it->second.until <= now) return std::nullopt;
  ++it->second.held;
  ++counts_[slot(who.kind)].held;
  return whole_seconds_up(it->second.until - now);
}

seconds BackoffTable::throttled(const Identity& who, long status, std::optional<seconds> wait) {
  const SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  ++counts_[slot(who.kind)].throttling_answers;
  auto it = episodes_.find(who.key);
  const bool starts = it == episodes_.end();
  if (starts) {
    if (who.kind == Identity::Kind::user) {
      make_room_locked(now);
      ++users_;
    }
    it = episodes_.emplace(who.key, Episode{who, now, now, 0, 0}).first;
    ++counts_[slot(who.kind)].episodes;
  } else if (it->second.until <= now) {
    ++it->second.repeats;  // throttled again as soon as it asked again
  }
  Episode& episode = it->second;
  seconds length;
  std::string reason = "HTTP " + std::to_string(status);
  if (wait) {
    length = bounded(*wait, settings_.max_wait);
    reason += ", asking for " + std::to_string(wait->count()) + " s";
  } else {
    const seconds doubled(kFirstDefaultWait.count() << std::min(episode.repeats, 16u));
    length = bounded(std::min(doubled, kLongestDefaultWait), settings_.max_wait);
    reason += " without saying how long";
  }
  episode.until = std::max(episode.until, now + length);
  const seconds remaining = whole_seconds_up(episode.until - now);
  if (starts) {
    spdlog::warn("the upstream is throttling {} ({}): its requests wait, unsent, until {} ({} s)", who.label(), reason,
                 utc_text(wall_.now() + remaining), remaining.count());
  } else if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("the upstream is throttling {} still ({}): until {} s from now", who.label(), reason,
                  remaining.count());
  }
  return remaining;
}

void BackoffTable::answered(const Identity& who) {
  const SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  auto it = episodes_.find(who.key);
  // An answer to a request sent before the back-off began says nothing of its end.
  if (it == episodes_.end() || it->second.until > now) return;
  end_locked(it, now, "it answers again");
}

void BackoffTable::end_locked(std::unordered_map<std::string, Episode>::iterator it, SystemTime now,
                              std::string_view why) {
  const Episode& episode = it->second;
  spdlog::info("the upstream throttled {} for {} s ({}); {} requests were held back meanwhile", episode.who.label(),
               std::chrono::ceil<seconds>(now - episode.started).count(), why, episode.held);
  if (episode.who.kind == Identity::Kind::user) --users_;
  episodes_.erase(it);
}

// Users' credentials come from clients: past the bound, episodes whose back-off is over end first, then
// the user's whose back-off ends soonest.
void BackoffTable::make_room_locked(SystemTime now) {
  if (users_ < settings_.max_users) return;
  for (auto it = episodes_.begin(); it != episodes_.end();) {
    auto next = std::next(it);
    if (it->second.who.kind == Identity::Kind::user && it->second.until <= now) end_locked(it, now, "forgotten");
    it = next;
  }
  while (users_ >= settings_.max_users) {
    auto soonest = episodes_.end();
    for (auto it = episodes_.begin(); it != episodes_.end(); ++it) {
      if (it->second.who.kind == Identity::Kind::user &&
          (soonest == episodes_.end() || it->second.until < soonest->second.until)) {
        soonest = it;
      }
    }
    if (soonest == episodes_.end()) return;
    end_locked(soonest, now, "forgotten for room");
  }
}

BackoffTable::KindCounts BackoffTable::counts(Identity::Kind kind) const {
  const SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  KindCounts counts = counts_[slot(kind)];
  counts.backing_off = static_cast<std::uint64_t>(std::count_if(episodes_.begin(), episodes_.end(), [&](const auto& e) {
    return e.second.who.kind == kind && e.second.until > now;
  }));
  return counts;
}

std::size_t BackoffTable::size() const {
  std::lock_guard lock(mutex_);
  return episodes_.size();
}

namespace {

std::string_view authorization_of(const HeaderList& headers) {
  for (const auto& [name, value] : headers) {
    if (named(name, "authorization")) return value;
  }
  return {};
}

constexpr metrics::FamilySpec kThrottled{
    "inferllama_upstream_throttled", "gauge",
    "Credentials the upstream throttles now (their requests wait unsent), by kind: anonymous, the node's "
    "tokens, users' own tokens"};
constexpr metrics::FamilySpec kEpisodes{"inferllama_upstream_throttle_episodes_total", "counter",
                                        "Times the upstream began throttling a credential, by kind"};
constexpr metrics::FamilySpec kHeldBack{"inferllama_upstream_held_back_total", "counter",
                                        "Upstream requests not sent while their credential backed off, by kind"};
constexpr metrics::FamilySpec kThrottlingAnswers{"inferllama_upstream_throttling_answers_total", "counter",
                                                 "429 and 503 answers of the upstream, by the credential's kind"};
constexpr metrics::FamilySpec kNodeTokenRequests{
    "inferllama_upstream_node_token_requests_total", "counter",
    "Upstream requests sent with each of the node's tokens (numbered as listed: upstream_token first)"};
constexpr metrics::FamilySpec kNodeTokenThrottled{"inferllama_upstream_node_token_throttled", "gauge",
                                                  "1 while the upstream throttles this token of the node's"};

class Throttled final : public ThrottledUpstream {
 public:
  Throttled(Upstream& next, const Config& config, const Clock& clock, const Clock& wall)
      : next_(next),
        base_(config.upstream),
        wall_(wall),
        max_wait_(config.upstream_throttle_max),
        table_(ThrottleSettings::from(config), clock, wall),
        node_requests_(std::make_unique<std::atomic<std::uint64_t>[]>(config.upstream_tokens.size())) {
    for (std::size_t i = 0; i < config.upstream_tokens.size(); ++i) {
      node_tokens_.emplace(sha256_hex("Bearer " + config.upstream_tokens[i]), i);
    }
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    if (!on_upstream(request.url)) return next_.fetch(request);
    const Identity who = identify(authorization_of(request.headers));
    if (auto left = table_.hold(who)) return held_back(who, *left);
    count_request(who);
    UpstreamResponse response = next_.fetch(request);
    if (response.status == 0) return response;  // no answer: an outage, which says nothing of manners
    if (is_throttling(response.status)) {
      response.retry_after = table_.throttled(who, response.status, requested_wait(response.headers, wall_.now()));
    } else {
      table_.answered(who);
    }
    return response;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    if (!on_upstream(url)) {
      RangeResult result = next_.fetch_range(url, headers, first, last, sink);
      if (is_throttling(result.status)) {
        if (auto wait = requested_wait(result.headers, wall_.now())) {
          result.retry_after = bounded(*wait, max_wait_);
        }
      }
      return result;
    }
    const Identity who = identify(authorization_of(headers));
    if (auto left = table_.hold(who)) {
      RangeResult held;
      held.status = 503;
      held.error =
          "held back: the upstream throttles " + who.label() + " for " + std::to_string(left->count()) + " s more";
      held.retry_after = *left;
      return held;
    }
    count_request(who);
    RangeResult result = next_.fetch_range(url, headers, first, last, sink);
    if (result.status == 0) return result;
    if (is_throttling(result.status)) {
      result.retry_after = table_.throttled(who, result.status, requested_wait(result.headers, wall_.now()));
    } else {
      table_.answered(who);
    }
    return result;
  }

  std::chrono::seconds held_for(std::string_view authorization) const override {
    const auto left = table_.left(identify(authorization));
    return left.count() > 0 ? std::chrono::ceil<std::chrono::seconds>(left) : std::chrono::seconds(0);
  }

  Identity identify(std::string_view authorization) const override {
    Identity who;
    if (authorization.empty()) {
      who.key = "anonymous";
      return who;
    }
    // By the credential's hash: the table never holds a token, and a user's token is never compared with
    // the node's byte by byte.
    std::string hash = sha256_hex(authorization);
    if (auto it = node_tokens_.find(hash); it != node_tokens_.end()) {
      who.kind = Identity::Kind::node;
      who.node_token = it->second;
      who.key = "node/" + std::to_string(it->second);
    } else {
      who.kind = Identity::Kind::user;
      who.key = "user/" + hash;
    }
    return who;
  }

  const BackoffTable& table() const override { return table_; }

  void render_metrics(std::string& out) const override {
    using metrics::write_header;
    using metrics::write_sample;
    static constexpr Identity::Kind kKinds[] = {Identity::Kind::anonymous, Identity::Kind::node, Identity::Kind::user};
    BackoffTable::KindCounts counts[Identity::kKinds];
    for (auto kind : kKinds) counts[slot(kind)] = table_.counts(kind);
    auto by_kind = [&](const metrics::FamilySpec& family, std::uint64_t BackoffTable::KindCounts::*field) {
      write_header(out, family);
      for (auto kind : kKinds) {
        write_sample(out, family, "identity=\"" + std::string(kind_name(kind)) + "\"",
                     static_cast<double>(counts[slot(kind)].*field));
      }
    };
    by_kind(kThrottled, &BackoffTable::KindCounts::backing_off);
    by_kind(kEpisodes, &BackoffTable::KindCounts::episodes);
    by_kind(kHeldBack, &BackoffTable::KindCounts::held);
    by_kind(kThrottlingAnswers, &BackoffTable::KindCounts::throttling_answers);
    if (node_tokens_.empty()) return;
    auto token_label = [](std::size_t i) { return "token=\"" + std::to_string(i + 1) + "\""; };
    write_header(out, kNodeTokenRequests);
    for (std::size_t i = 0; i < node_tokens_.size(); ++i) {
      write_sample(out, kNodeTokenRequests, token_label(i), static_cast<double>(node_requests_[i].load()));
    }
    write_header(out, kNodeTokenThrottled);
    for (std::size_t i = 0; i < node_tokens_.size(); ++i) {
      Identity who{Identity::Kind::node, i, "node/" + std::to_string(i)};
      write_sample(out, kNodeTokenThrottled, token_label(i), table_.left(who).count() > 0 ? 1 : 0);
    }
  }

 private:
  // A URL under the upstream the node composes against (the parent set spreads it over the parents).
  bool on_upstream(std::string_view url) const {
    if (!url.starts_with(base_)) return false;
    const std::string_view rest = url.substr(base_.size());
    return rest.empty() || rest.front() == '/' || rest.front() == '?';
  }

  void count_request(const Identity& who) {
    if (who.kind == Identity::Kind::node) ++node_requests_[who.node_token];
  }

  static UpstreamResponse held_back(const Identity& who, std::chrono::seconds left) {
    UpstreamResponse response;
    response.status = 503;
    response.headers = {{"retry-after", std::to_string(left.count())}};
    response.body = "the upstream throttles " + who.label() + " for " + std::to_string(left.count()) + " s more";
    response.retry_after = left;
    response.held_back = true;
    return response;
  }

  Upstream& next_;
  const std::string base_;
  const Clock& wall_;
  const std::chrono::seconds max_wait_;
  BackoffTable table_;
  std::unordered_map<std::string, std::size_t> node_tokens_;  // SHA-256 of "Bearer TOKEN" -> its index
  std::unique_ptr<std::atomic<std::uint64_t>[]> node_requests_;
};

}  // namespace

std::unique_ptr<ThrottledUpstream> make_throttled_upstream(Upstream& next, const Config& config, const Clock& clock,
                                                           const Clock& wall) {
  return std::make_unique<Throttled>(next, config, clock, wall);
}

}  // namespace inferllama::upstream
