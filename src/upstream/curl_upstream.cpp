#include "upstream/curl_upstream.hpp"

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "util/url.hpp"

namespace inferllama::upstream {
namespace {

std::once_flag g_curl_init;

// A hostile upstream's body may never end: an error or redirect body in place of file bytes is read (and
// dropped) only this far before the transfer is cut. (Metadata answers are bounded by options.max_body.)
constexpr std::size_t kMaxDroppedErrorBody = 64u << 10;

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct ListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;
using HeaderSlist = std::unique_ptr<curl_slist, ListDeleter>;

HeaderSlist to_slist(const HeaderList& headers) {
  curl_slist* list = nullptr;
  for (const auto& [k, v] : headers) list = curl_slist_append(list, (k + ": " + v).c_str());
  return HeaderSlist(list);
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// Collects the headers of the last response (a redirect chain resets them at each status line).
size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<HeaderList*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    headers->clear();
  } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    headers->emplace_back(std::move(name), trim(line.substr(colon + 1)));
  }
  return size * count;
}

const HeaderList kNoHeaders;

// Redirects a Range fetch follows (the Hub's resolve URL to its CDN, a CDN to its storage).
constexpr int kMaxRedirects = 5;

bool is_redirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

struct BodyLimit {
  std::string* body;
  std::uint64_t max;
  bool exceeded = false;
};

class CurlUpstream final : public Upstream {
 public:
  explicit CurlUpstream(const UpstreamOptions& options) : options_(options) {
    std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    CURL* c = handle();
    UpstreamResponse response;
    auto headers = to_slist(request.headers);
    const bool typed = std::any_of(request.headers.begin(), request.headers.end(),
                                   [](const auto& h) { return ::strcasecmp(h.first.c_str(), "content-type") == 0; });
    // libcurl would call a body without a type a form (application/x-www-form-urlencoded).
    if (!typed && request.method != "GET" && request.method != "HEAD") {
      headers.reset(curl_slist_append(headers.release(), "Content-Type:"));
    }
    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (request.method == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (request.method == "GET") {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
      // POST, and PUT, PATCH or DELETE (passed through for the caller) with their bodies, possibly empty.
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
      if (request.method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.headers);
    // An answer is read whole into memory: one larger than max_body (or endless) is cut off.
    BodyLimit limit{&response.body, options_.max_body};
    // A HEAD's Content-Length describes the file, not an answer to read: only bodies are capped.
    if (request.method != "HEAD") {
      curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options_.max_body));
    }
    curl_easy_setopt(
        c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
          auto* limit = static_cast<BodyLimit*>(u);
          if (limit->body->size() + s * n > limit->max) {
            limit->exceeded = true;
            return 0;  // CURLE_WRITE_ERROR
          }
          limit->body->append(d, s * n);
          return s * n;
        });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &limit);
    CURLcode rc = curl_easy_perform(c);
    if (limit.exceeded || rc == CURLE_FILESIZE_EXCEEDED) {
      response.too_large = true;
      response.error =
          "the upstream answer is larger than the " + std::to_string(options_.max_body >> 20) + " MiB the node reads";
      response.body.clear();
      response.headers.clear();
    } else if (rc != CURLE_OK) {
      response.error = curl_easy_strerror(rc);
    } else {
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    return response;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList& extra, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    // Redirects are followed here rather than by libcurl, so that the credentials in `extra` are decided
    // for every URL against the first one's origin; libcurl also drops a custom Authorization header on a
    // redirect to another host, port or scheme (7.83+), but the node does not rely on that.
    const auto origin = url::http_origin(url);
    std::string current = url;
    for (int hop = 0;; ++hop) {
      const auto here = url::http_origin(current);
      if (!here) {
        RangeResult refused;
        refused.error =
            hop == 0 ? "the upstream URL is not http(s)" : "the upstream redirected to a URL that is not http(s)";
        return refused;
      }
      std::string next;
      const HeaderList& headers = *here == *origin ? extra : kNoHeaders;
      RangeResult result = fetch_range_once(current, headers, first, last, sink, next);
      if (!is_redirect(result.status)) return result;
      if (next.empty()) return result;  // no Location, or the transfer failed: the error says which
      if (hop == kMaxRedirects) {
        result.error = "the upstream redirected more than " + std::to_string(kMaxRedirects) + " times";
        return result;
      }
      if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("upstream HTTP {}: {} redirects to {}", result.status, url::redact(current), url::redact(next));
      }
      current = std::move(next);
    }
  }

 private:
  CURL* handle() {
    thread_local EasyHandle easy;
    if (!easy) {
      easy.reset(curl_easy_init());
    } else {
      curl_easy_reset(easy.get());  // keeps the connection cache
    }
    CURL* c = easy.get();
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, options_.user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.timeout.count()));
    // A transfer that moves less than 1 byte/s for the timeout has stalled.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, std::max<long>(1, options_.timeout.count() / 1000));
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, nullptr);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    // The Hub, its CDN and parent nodes speak HTTP(S); never file://, ftp:// or anything else a hostile
    // answer names. Redirects are followed by the node itself (see fetch_range), never with
    // credentials to another origin.
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
    return c;
  }

  // One GET without following redirects; `location` receives the absolute target of a 3xx.
  RangeResult fetch_range_once(const std::string& url, const HeaderList& extra, std::uint64_t first, std::uint64_t last,
                               const BodySink& sink, std::string& location) {
    CURL* c = handle();
    RangeResult result;
    HeaderList headers_seen;
    auto headers = to_slist(extra);
    std::string range = std::to_string(first) + "-" + std::to_string(last);
    struct Context {
      const BodySink* sink;
      RangeResult* result;
      CURL* curl;
      bool stopped = false;
      std::size_t dropped = 0;
    } ctx{&sink, &result, c};
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &headers_seen);
    curl_easy_setopt(
        c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
          auto* ctx = static_cast<Context*>(u);
          long status = 0;
          curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &status);
          if (status != 200 && status != 206) {  // an error or redirect body: drop it, up to a bound
            ctx->dropped += s * n;
            return ctx->dropped > kMaxDroppedErrorBody ? 0 : s * n;
          }
          std::size_t taken = (*ctx->sink)(std::span<const char>(d, s * n));
          ctx->result->received += taken;
          if (taken < s * n) ctx->stopped = true;
          return taken;
        });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
    // Called about once a second while the transfer waits (and more often while it moves).
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(
        c, CURLOPT_XFERINFOFUNCTION, +[](void* u, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
          auto* ctx = static_cast<Context*>(u);
          long status = 0;
          curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &status);
          if (status == 200 || status == 206) (*ctx->sink)(std::span<const char>());
          return 0;
        });
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &ctx);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &result.status);
    if (rc == CURLE_WRITE_ERROR && ctx.stopped) {
      // The sink asked to stop; the connection is closed by curl, which is what we want.
    } else if (rc != CURLE_OK) {
      result.error = curl_easy_strerror(rc);
    } else if (is_redirect(result.status)) {
      char* target = nullptr;
      if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &target) == CURLE_OK && target) location = target;
      result.error = "upstream answered HTTP " + std::to_string(result.status) +
                     (location.empty() ? " without a usable Location" : "");
    } else if (result.status != 200 && result.status != 206) {
      result.error = "upstream answered HTTP " + std::to_string(result.status);
    } else if (result.status == 200 && first != 0) {
      result.error = "upstream ignored the Range header";
    }
    curl_easy_setopt(c, CURLOPT_RANGE, nullptr);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    result.headers = std::move(headers_seen);  // a throttling answer says in them how long to wait
    return result;
  }

  UpstreamOptions options_;
};

class OfflineUpstream final : public Upstream {
 public:
  UpstreamResponse fetch(const UpstreamRequest&) override {
    UpstreamResponse r;
    r.error = "offline mode: the node does not contact the upstream";
    return r;
  }
  RangeResult fetch_range(const std::string&, const HeaderList&, std::uint64_t, std::uint64_t,
                          const BodySink&) override {
    RangeResult r;
    r.error = "offline mode: the node does not contact the upstream";
    return r;
  }
};

}  // namespace

std::unique_ptr<Upstream> make_offline_upstream() {
  return std::make_unique<OfflineUpstream>();
}

std::unique_ptr<Upstream> make_curl_upstream(const UpstreamOptions& options) {
  return std::make_unique<CurlUpstream>(options);
}

}  // namespace inferllama::upstream
