#include "upstream/parent_set.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>

#include <spdlog/spdlog.h>

#include "inferllama/cluster.hpp"
#include "inferllama/metrics.hpp"
#include "util/rendezvous.hpp"
#include "util/url.hpp"

namespace inferllama::upstream {
namespace {

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD";
}

// The upstream is gone or refuses all work (a transport error, or 503 from a node that is stopping or
// full); any other answer is the upstream's word and goes back to the caller as it is.
bool upstream_failed(long status, const std::string& error) {
  return (status == 0 && !error.empty()) || status == 503;
}

// A range also fails when its transfer breaks after the answer began; but a 200 to a range that does not
// start at 0 is an upstream that ignored the Range: no cut transfer another upstream could finish, an
// error the download must see.
bool range_failed(const RangeResult& r, std::uint64_t first) {
  if (r.status == 200 && first != 0) return false;
  return upstream_failed(r.status, r.error) || (!r.error.empty() && (r.status == 200 || r.status == 206));
}

std::string label_value(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

struct Target {
  std::string url;
  bool fallback = false;
  std::string redacted;  // the URL without user info: logs, the cluster view, placement
  std::string label;     // the redacted URL, as a metric label value

  mutable std::mutex mutex;
  UpstreamKind kind = UpstreamKind::unknown;
  SystemTime down_until{};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> bytes{0};
};

class Parents final : public ParentSet {
 public:
  Parents(Upstream& http, const Config& config, const Clock& clock)
      : http_(http), base_(config.upstream), backoff_(config.upstream_backoff), clock_(clock) {
    std::vector<std::string> parents = config.upstream_parents;
    if (parents.empty()) parents = {config.upstream};
    for (const std::string& url : parents) add_target(url, false);
    if (!config.upstream_fallback.empty()) add_target(config.upstream_fallback, true);
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    auto path = path_of(request.url);
    if (!path) return http_.fetch(request);
    UpstreamResponse response;
    for (Target* target : order(rendezvous_key(*path))) {
      UpstreamRequest sent = request;
      sent.url = target->url + std::string(*path);
      ++target->requests;
      response = http_.fetch(sent);
      if (upstream_failed(response.status, response.error) && !response.too_large) {
        failed(*target, response.status, response.error);
        if (is_idempotent(request.method)) continue;
        return response;
      }
      learn_kind(*target, *path, response);
      if (target->url != base_) rebase_links(*target, response);
      return response;
    }
    return response;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    auto path = path_of(url);
    if (!path) {
      RangeResult r = http_.fetch_range(url, headers, first, last, sink);
      redirected_bytes_ += r.received;
      return r;
    }
    RangeResult result;
    std::uint64_t received = 0;
    for (Target* target : order(rendezvous_key(*path))) {
      ++target->requests;
      const std::uint64_t from = first + received;
      result = http_.fetch_range(target->url + std::string(*path), headers, from, last, sink);
      target->bytes += result.received;
      received += result.received;
      if (!range_failed(result, from)) break;
      // The rest of the range from the next upstream: the same file at the same commit, which the
      // download checks against its etag whoever sent it.
      failed(*target, result.status, result.error);
    }
    result.received = received;
    return result;
  }

  std::vector<UpstreamTargetStatus> status() const override {
    const SystemTime now = clock_.now();
    std::vector<UpstreamTargetStatus> out;
    for (const auto& target : targets_) {
      UpstreamTargetStatus s;
      s.url = target->redacted;
      s.fallback = target->fallback;
      {
        std::lock_guard lock(target->mutex);
        s.kind = target->kind;
        s.healthy = now >= target->down_until;
        if (!s.healthy) s.backoff_seconds = std::chrono::duration<double>(target->down_until - now).count();
      }
      s.failures = target->failures.load();
      s.requests = target->requests.load();
      s.bytes = target->bytes.load();
      out.push_back(std::move(s));
    }
    return out;
  }

  std::uint64_t redirected_bytes() const override { return redirected_bytes_.load(); }

  void render_metrics(std::string& out) const override {
    static constexpr metrics::FamilySpec kUp{
        "inferllama_upstream_up", "gauge",
        "0 while the upstream backs off after a failure (tried only when nothing else answers), else 1"};
    static constexpr metrics::FamilySpec kFailures{"inferllama_upstream_failures_total", "counter",
                                                   "Upstream requests that failed (transport error or 503)"};
    static constexpr metrics::FamilySpec kRequests{"inferllama_upstream_target_requests_total", "counter",
                                                   "Requests sent to each upstream"};
    static constexpr metrics::FamilySpec kBytes{"inferllama_upstream_file_bytes_total", "counter",
                                                "File bytes received from each upstream"};
    const auto targets = status();
    auto labels = [&](std::size_t i) { return "upstream=\"" + targets_[i]->label + "\""; };
    metrics::write_header(out, kUp);
    for (std::size_t i = 0; i < targets.size(); ++i) metrics::write_sample(out, kUp, labels(i), targets[i].healthy);
    metrics::write_header(out, kFailures);
    for (std::size_t i = 0; i < targets.size(); ++i)
      metrics::write_sample(out, kFailures, labels(i), static_cast<double>(targets[i].failures));
    metrics::write_header(out, kRequests);
    for (std::size_t i = 0; i < targets.size(); ++i)
      metrics::write_sample(out, kRequests, labels(i), static_cast<double>(targets[i].requests));
    metrics::write_header(out, kBytes);
    for (std::size_t i = 0; i < targets.size(); ++i)
      metrics::write_sample(out, kBytes, labels(i), static_cast<double>(targets[i].bytes));
  }

 private:
  void add_target(const std::string& url, bool fallback) {
    auto target = std::make_unique<Target>();
    target->url = url;
    target->fallback = fallback;
    target->redacted = url::redact(url);
    target->label = label_value(target->redacted);
    targets_.push_back(std::move(target));
  }

  // The part of `url` after the base URL the node composes against, or nothing for another URL.
  std::optional<std::string_view> path_of(const std::string& url) const {
    if (!url.starts_with(base_)) return std::nullopt;
    std::string_view rest = std::string_view(url).substr(base_.size());
    if (!rest.empty() && rest.front() != '/' && rest.front() != '?') return std::nullopt;
    return rest;
  }

  // Healthy parents by rank, then the fallback, then parents backing off (better a late try than none).
  std::vector<Target*> order(const std::string& key) const {
    const SystemTime now = clock_.now();
    std::vector<std::pair<std::uint64_t, Target*>> ranked;
    Target* fallback = nullptr;
    for (const auto& target : targets_) {
      if (target->fallback) {
        fallback = target.get();
      } else {
        // By the URL without its user info: edges with other credentials still agree on each file's parent,
        // and every edge sends a file to the same parent.
        ranked.emplace_back(rendezvous_weight(target->redacted, key), target.get());
      }
    }
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<Target*> healthy, backing_off;
    for (const auto& [weight, target] : ranked) {
      std::lock_guard lock(target->mutex);
      (now >= target->down_until ? healthy : backing_off).push_back(target);
    }
    if (fallback) healthy.push_back(fallback);
    healthy.insert(healthy.end(), backing_off.begin(), backing_off.end());
    return healthy;
  }

  void failed(Target& target, long status, const std::string& error) {
    ++target.failures;
    {
      std::lock_guard lock(target.mutex);
      target.down_until = clock_.now() + backoff_;
    }
    if (targets_.size() > 1) {
      spdlog::warn("upstream {} failed ({}); skipping it for {} ms", target.redacted,
                   error.empty() ? "HTTP " + std::to_string(status) : error, backoff_.count());
    }
  }

  // A node marks every answer; an answer to a resolve URL without the mark comes from the Hub.
  static void learn_kind(Target& target, std::string_view path, const UpstreamResponse& response) {
    if (path.find("/resolve/") == std::string_view::npos || response.status == 0 || response.status >= 500) return;
    const auto kind = response.header(cluster::kNodeHeaderLower) ? UpstreamKind::parent : UpstreamKind::hub;
    std::lock_guard lock(target.mutex);
    target.kind = kind;
  }

  // Absolute links into the upstream that answered name it as the base the node composes against, so
  // that the node's own checks (a redirect within the upstream, the next page) see one upstream.
  void rebase_links(const Target& target, UpstreamResponse& response) const {
    const std::string from = target.url + "/";
    for (auto& [name, value] : response.headers) {
      if (name != "location" && name != "link") continue;
      for (auto at = value.find(from); at != std::string::npos; at = value.find(from, at + base_.size() + 1)) {
        if (at != 0 && value[at - 1] != '<') continue;
        value.replace(at, from.size(), base_ + "/");
      }
    }
  }

  Upstream& http_;
  const std::string base_;
  const std::chrono::milliseconds backoff_;
  const Clock& clock_;
  std::vector<std::unique_ptr<Target>> targets_;
  std::atomic<std::uint64_t> redirected_bytes_{0};
};

}  // namespace

std::string rendezvous_key(std::string_view path) {
  path = path.substr(0, path.find('?'));
  // /api/{models|datasets|spaces}/{repo}/torrent/{commit}/{file} names the file that
  // /{""|datasets/|spaces/}{repo}/resolve/{commit}/{file} names.
  constexpr std::string_view kApi = "/api/";
  constexpr std::string_view kTorrent = "/torrent/";
  if (path.starts_with(kApi)) {
    std::string_view rest = path.substr(kApi.size());
    const auto type_end = rest.find('/');
    const auto marker = rest.find(kTorrent);
    if (type_end != std::string_view::npos && marker != std::string_view::npos && marker > type_end) {
      const std::string_view type = rest.substr(0, type_end);
      const std::string_view repo = rest.substr(type_end + 1, marker - type_end - 1);
      const std::string_view file = rest.substr(marker + kTorrent.size());
      const std::string prefix = type == "models" ? "/" : "/" + std::string(type) + "/";
      return prefix + std::string(repo) + "/resolve/" + std::string(file);
    }
  }
  return std::string(path);
}

std::unique_ptr<ParentSet> make_parent_set(Upstream& http, const Config& config, const Clock& clock) {
  return std::make_unique<Parents>(http, config, clock);
}

}  // namespace inferllama::upstream
