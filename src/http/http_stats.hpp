// The HTTP edge's own counters, declared once and rendered here. Requests are counted per route and
// status without a lock or a lookup: routes are a fixed set and statuses a small range.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "http/router.hpp"
#include "inferllama/metrics.hpp"

namespace inferllama::http {

class HttpStats {
 public:
  void request(RouteId route, unsigned status, double seconds);

  metrics::Counter bytes_from_cache;      // stored files
  metrics::Counter bytes_from_downloads;  // streamed while fetched upstream
  metrics::Counter refused_connections;   // over max_connections
  metrics::Counter internal_errors;       // a fault of the node's own (500 or a closed connection)
  metrics::Counter unauthorized;          // 401
  metrics::Counter limited;               // 429, 503 from a rate limit
  std::atomic<std::uint64_t> open_connections{0};

  // The families above; those of accounts only when the node keeps users (`accounts`).
  void render(std::string& out, bool accounts) const;

 private:
  static constexpr unsigned kFirstStatus = 100, kStatuses = 500;  // 100..599
  std::array<std::array<metrics::Counter, kStatuses>, kRouteIds> requests_{};
  std::array<metrics::Histogram, kRouteIds> latency_{};
};

}  // namespace inferllama::http
