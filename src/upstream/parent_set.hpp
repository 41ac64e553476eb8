#pragma once
// Several upstreams behind one base URL: the node composes every upstream URL against `upstream` (the
// first listed), and this decorator sends each request to the parent that rendezvous hashing picks for
// the file it names, skips a parent that failed for a back-off period, and tries the fallback last.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "inferllama/clock.hpp"
#include "inferllama/config.hpp"
#include "inferllama/upstream.hpp"

namespace inferllama::upstream {

// What a node learns of an upstream from its answers: a node marks its resolve answers (see
// cluster::kNodeHeader); the Hub does not.
enum class UpstreamKind { unknown, parent, hub };

struct UpstreamTargetStatus {
  std::string url;
  UpstreamKind kind = UpstreamKind::unknown;
  bool fallback = false;
  bool healthy = true;
  double backoff_seconds = 0;  // left of the back-off, 0 when healthy
  std::uint64_t failures = 0;  // transport errors, 503 answers and cut transfers, ever
  std::uint64_t requests = 0;
  std::uint64_t bytes = 0;  // file bytes (ranges) received from it
};

class ParentSet : public Upstream {
 public:
  // Every upstream, parents first in the order listed, then the fallback.
  virtual std::vector<UpstreamTargetStatus> status() const = 0;
  // File bytes from URLs that are none of the upstreams: a Hub's redirect to its CDN.
  virtual std::uint64_t redirected_bytes() const = 0;
  virtual void render_metrics(std::string& out) const = 0;
};

// The key rendezvous hashing places: a file's resolve URL and its torrent route name the same file, so
// they go to the same parent. `path` is a URL's path after the base (with its query, if any).
std::string rendezvous_key(std::string_view path);

// `http` makes the requests. Parents and fallback come from `config` (upstream_parents, upstream_fallback,
// upstream_backoff); `clock` times the back-off.
std::unique_ptr<ParentSet> make_parent_set(Upstream& http, const Config& config,
                                           const Clock& clock = monotonic_clock());

}  // namespace inferllama::upstream
