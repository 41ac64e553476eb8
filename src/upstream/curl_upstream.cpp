#include "curl_upstream.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace inferllama::upstream {
namespace {

std::once_flag g_curl_init;

// A hostile upstream's body may never end: a metadata answer is held in memory up to this size, and an
// error body in place of file bytes is read (and dropped) only this far before the transfer is cut.
constexpr std::size_t kMaxMetadataBody = 64u << 20;
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

class CurlUpstream final : public Upstream {
 public:
  explicit CurlUpstream(const UpstreamOptions& options) : options_(options) {
    std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    CURL* c = handle();
    UpstreamResponse response;
    auto headers = to_slist(request.headers);
    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (request.method == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (request.method == "POST") {
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    } else {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.headers);
    curl_easy_setopt(
        c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
          auto* body = static_cast<std::string*>(u);
          if (body->size() + s * n > kMaxMetadataBody) return 0;  // curl fails the transfer: an error value
          body->append(d, s * n);
          return s * n;
        });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      response.error = curl_easy_strerror(rc);
    } else {
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    return response;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList& extra, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
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
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &headers_seen);
    curl_easy_setopt(
        c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
          auto* ctx = static_cast<Context*>(u);
          long status = 0;
          curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &status);
          if (status != 200 && status != 206) {  // an error body: drop it, up to a bound
            ctx->dropped += s * n;
            return ctx->dropped > kMaxDroppedErrorBody ? 0 : s * n;
          }
          std::size_t taken = (*ctx->sink)(std::span<const char>(d, s * n));
          ctx->result->received += taken;
          if (taken < s * n) ctx->stopped = true;
          return taken;
        });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ctx);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &result.status);
    if (rc == CURLE_WRITE_ERROR && ctx.stopped) {
      // The sink asked to stop; the connection is closed by curl, which is what we want.
    } else if (rc != CURLE_OK) {
      result.error = curl_easy_strerror(rc);
    } else if (result.status != 200 && result.status != 206) {
      result.error = "upstream answered HTTP " + std::to_string(result.status);
    } else if (result.status == 200 && first != 0) {
      result.error = "upstream ignored the Range header";
    }
    curl_easy_setopt(c, CURLOPT_RANGE, nullptr);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    return result;
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
    return c;
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

std::unique_ptr<Upstream> make_offline_upstream() { return std::make_unique<OfflineUpstream>(); }

std::unique_ptr<Upstream> make_curl_upstream(const UpstreamOptions& options) {
  return std::make_unique<CurlUpstream>(options);
}

}  // namespace inferllama::upstream
