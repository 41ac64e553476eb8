#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "inferllama/version.hpp"

namespace inferllama {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct UpstreamRequest {
  std::string method = "GET";
  std::string url;
  HeaderList headers;
  std::string body;
};

struct UpstreamResponse {
  long status = 0;     // 0: no HTTP answer (see `error`)
  HeaderList headers;  // names lower-cased, in arrival order
  std::string body;
  std::string error;       // transport failure, empty when an answer arrived
  bool too_large = false;  // the answer went past UpstreamOptions::max_body: `error` says so, status is 0
  // > 0: the upstream throttles the credential this request went (or would have gone) with, for this long:
  // it answered 429 or 503 (see upstream/throttle.hpp), or the node held the request back unsent.
  std::chrono::seconds retry_after{0};
  bool held_back = false;  // never sent: the node waits out the upstream's back-off of this credential

  std::optional<std::string_view> header(std::string_view lower_name) const {
    for (const auto& [k, v] : headers) {
      if (k == lower_name) return std::string_view(v);
    }
    return std::nullopt;
  }
};

// Receives body bytes; returns how many it took. Taking fewer stops the transfer (not an error).
// While a transfer waits for bytes it may be called with none (about once a second): a sink that holds
// bytes back hands them on then.
using BodySink = std::function<std::size_t(std::span<const char>)>;

struct RangeResult {
  long status = 0;
  std::string error;  // empty on success or when the sink stopped the transfer
  std::uint64_t received = 0;
  HeaderList headers;  // of the last answer (after redirects), names lower-cased
  // > 0: the answer throttles (or the node held the request back, unsent): ask again no sooner than this.
  std::chrono::seconds retry_after{0};
  bool ok() const { return error.empty() && (status == 200 || status == 206); }
};

// The Hub (or a parent node) over HTTP. Calls block: run them on a blocking pool, never an I/O thread.
class Upstream {
 public:
  virtual ~Upstream() = default;
  // One request, redirects not followed (the caller decides what a 3xx means).
  virtual UpstreamResponse fetch(const UpstreamRequest& request) = 0;
  // GET `url` for bytes [first, last] into `sink`, following redirects. `headers` (credentials) go to
  // `url`'s own origin only (scheme, host and port), never to another one a redirect leads to; only http
  // and https are spoken. Stops at the sink's request or on error; `received` counts the bytes delivered.
  virtual RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first,
                                  std::uint64_t last, const BodySink& sink) = 0;
};

// What the node knows of the upstream's back-off of each credential its requests go with (anonymous, one of
// the node's tokens, a user's own token): see upstream/throttle.hpp.
class UpstreamThrottle {
 public:
  virtual ~UpstreamThrottle() = default;
  // How long requests with this Authorization ("" = anonymous) are held back from now; 0: they go out.
  virtual std::chrono::seconds held_for(std::string_view authorization) const = 0;
};

struct UpstreamOptions {
  std::chrono::milliseconds timeout{30000};  // connect timeout, and how long a transfer may stall
  std::string user_agent = std::string("inferllama/") + kVersion;
  // The most a metadata answer (fetch) may carry: a larger or endless one is cut off and fails.
  std::uint64_t max_body = kMaxMetadataBody;
  static constexpr std::uint64_t kMaxMetadataBody = 64ull << 20;
};

}  // namespace inferllama
