#include "http/http_stats.hpp"

namespace inferllama::http {

void HttpStats::request(RouteId route, unsigned status, double seconds) {
  const auto r = static_cast<std::size_t>(route);
  // A status outside 100..599 is counted as the 500 it stands for.
  const unsigned index = status >= kFirstStatus && status < kFirstStatus + kStatuses ? status - kFirstStatus : 400;
  requests_[r][index].add();
  latency_[r].observe(seconds);
}

namespace {

using metrics::FamilySpec;
constexpr FamilySpec kRequests{"inferllama_http_requests_total", "counter", "HTTP requests by route and status"};
constexpr FamilySpec kDuration{"inferllama_http_request_duration_seconds", "histogram",
                               "Time to answer a request, by route"};
constexpr FamilySpec kOpen{"inferllama_http_open_connections", "gauge", "Open client connections"};
constexpr FamilySpec kRefused{"inferllama_http_refused_connections_total", "counter",
                              "Connections refused over max_connections"};
constexpr FamilySpec kServed{"inferllama_served_bytes_total", "counter", "Body bytes sent, by where they came from"};
constexpr FamilySpec kInternalErrors{"inferllama_http_internal_errors_total", "counter",
                                     "Requests the node failed to answer for a fault of its own (500 or a closed "
                                     "connection)"};
constexpr FamilySpec kUnauthorized{"inferllama_http_unauthorized_total", "counter",
                                   "Requests refused with 401: a bad node key or passkey, or none under require_auth"};
constexpr FamilySpec kLimited{"inferllama_http_rate_limited_total", "counter",
                              "Requests refused by a rate limit (429, 503)"};

}  // namespace

void HttpStats::render(std::string& out, bool accounts) const {
  using metrics::write_family;
  using metrics::write_header;
  using metrics::write_sample;
  write_header(out, kRequests);
  for (std::size_t r = 0; r < kRouteIds; ++r) {
    for (unsigned s = 0; s < kStatuses; ++s) {
      const auto n = requests_[r][s].value();
      if (n == 0) continue;
      write_sample(out, kRequests,
                   std::string("route=\"") + route_name(static_cast<RouteId>(r)) + "\",status=\"" +
                       std::to_string(s + kFirstStatus) + "\"",
                   static_cast<double>(n));
    }
  }
  write_header(out, kDuration);
  for (std::size_t r = 0; r < kRouteIds; ++r) {
    bool used = false;
    for (const auto& counter : requests_[r]) used = used || counter.value() > 0;
    if (!used) continue;
    latency_[r].render(out, std::string(kDuration.name),
                       std::string("route=\"") + route_name(static_cast<RouteId>(r)) + "\"");
  }
  write_family(out, kOpen, static_cast<double>(open_connections.load()));
  write_family(out, kRefused, static_cast<double>(refused_connections.value()));
  write_header(out, kServed);
  write_sample(out, kServed, "source=\"cache\"", static_cast<double>(bytes_from_cache.value()));
  write_sample(out, kServed, "source=\"download\"", static_cast<double>(bytes_from_downloads.value()));
  write_family(out, kInternalErrors, static_cast<double>(internal_errors.value()));
  if (!accounts) return;
  write_family(out, kUnauthorized, static_cast<double>(unauthorized.value()));
  write_family(out, kLimited, static_cast<double>(limited.value()));
}

}  // namespace inferllama::http
