#include <curl/curl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "hub/hub_protocol.hpp"
#include "inferllama/repo.hpp"
#include "util/url.hpp"

namespace inferllama::cli {
namespace {

struct Fetched {
  long status = 0;
  std::string body;
  std::string link;
  std::string error;
};

class Client {
 public:
  explicit Client(const PullOptions& options) : options_(options), curl_(curl_easy_init()) {}
  ~Client() { curl_easy_cleanup(curl_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Fetched get_text(const std::string& url) {
    Fetched out;
    prepare(url);
    curl_easy_setopt(
        curl_, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
          static_cast<std::string*>(u)->append(d, s * n);
          return s * n;
        });
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &out.body);
    curl_easy_setopt(
        curl_, CURLOPT_HEADERFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
          std::string_view line(d, s * n);
          if (line.size() > 5 && (line.starts_with("Link:") || line.starts_with("link:"))) {
            *static_cast<std::string*>(u) = std::string(line.substr(5));
          }
          return s * n;
        });
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &out.link);
    perform(out);
    return out;
  }

  // Streams a file to nowhere, drawing a progress bar; the node keeps the bytes.
  Fetched download(const std::string& url, const std::string& label, std::uint64_t expected) {
    Fetched out;
    prepare(url);
    struct Progress {
      const std::string* label;
      std::uint64_t expected;
      std::uint64_t received = 0;
      bool draw;
      std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last{};
    } progress{&label, expected, 0, !options_.quiet && isatty(STDERR_FILENO)};
    curl_easy_setopt(
        curl_, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void* u) {
          auto* p = static_cast<Progress*>(u);
          p->received += s * n;
          auto now = std::chrono::steady_clock::now();
          if (p->draw && now - p->last > std::chrono::milliseconds(100)) {
            p->last = now;
            double fraction = p->expected ? static_cast<double>(p->received) / static_cast<double>(p->expected) : 1.0;
            int filled = static_cast<int>(fraction * 30);
            double secs = std::chrono::duration<double>(now - p->start).count();
            std::fprintf(stderr, "\r[%-30s] %3.0f%% %8.1f MiB/s  %s",
                         std::string(static_cast<std::size_t>(filled), '#').c_str(), fraction * 100,
                         secs > 0 ? static_cast<double>(p->received) / secs / (1 << 20) : 0.0, p->label->c_str());
          }
          return s * n;
        });
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &progress);
    perform(out);
    if (out.error.empty() && out.status == 200 && progress.received != expected) {
      out.error = "received " + std::to_string(progress.received) + " of " + std::to_string(expected) + " bytes";
    }
    if (!options_.quiet) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - progress.start).count();
      std::fprintf(stderr, "%s%s  %.1f MiB in %.2fs  %s\n", progress.draw ? "\r" : "",
                   out.error.empty() && out.status == 200 ? "ok  " : "FAIL",
                   static_cast<double>(progress.received) / (1 << 20), secs, label.c_str());
    }
    return out;
  }

 private:
  void prepare(const std::string& url) {
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_FOLLOWLOCATION, 1L);
    // A node speaks http(s); the token is a custom header, which libcurl (7.83+) keeps to the first origin.
    curl_easy_setopt(curl_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_USERAGENT, "inferllama-pull/0.1");
    if (headers_) curl_slist_free_all(headers_);
    headers_ = nullptr;
    if (!options_.token.empty()) {
      headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + options_.token).c_str());
    }
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
  }
  void perform(Fetched& out) {
    CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) out.error = curl_easy_strerror(rc);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &out.status);
  }

  const PullOptions& options_;
  CURL* curl_;
  curl_slist* headers_ = nullptr;
};

std::string describe_failure(const Fetched& f) {
  if (!f.error.empty()) return f.error;
  auto body = nlohmann::json::parse(f.body, nullptr, false);
  if (body.is_object() && body.contains("error") && body["error"].is_string()) {
    return "HTTP " + std::to_string(f.status) + ": " + body["error"].get<std::string>();
  }
  return "HTTP " + std::to_string(f.status);
}

}  // namespace

int pull(const PullOptions& options) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  RepoId repo{*parse_repo_type(options.repo_type), options.repo};
  std::string node = options.node;
  while (node.ends_with("/")) node.pop_back();
  Client client(options);
  const std::string api = node + "/api/" + std::string(repo.api_segment()) + "/" + repo.name;

  auto revision = client.get_text(api + "/revision/" + url::encode(options.revision));
  auto info = nlohmann::json::parse(revision.body, nullptr, false);
  if (revision.status != 200 || !info.is_object() || !info.contains("sha")) {
    std::fprintf(stderr, "cannot resolve %s@%s: %s\n", repo.name.c_str(), options.revision.c_str(),
                 describe_failure(revision).c_str());
    return 1;
  }
  const std::string commit = info["sha"].get<std::string>();

  std::vector<std::pair<std::string, std::uint64_t>> files;
  std::string next = api + "/tree/" + commit + "?recursive=true";
  while (!next.empty()) {
    auto page = client.get_text(next);
    auto entries = nlohmann::json::parse(page.body, nullptr, false);
    if (page.status != 200 || !entries.is_array()) {
      std::fprintf(stderr, "cannot list %s@%s: %s\n", repo.name.c_str(), commit.c_str(),
                   describe_failure(page).c_str());
      return 1;
    }
    for (const auto& e : entries) {
      if (e.value("type", "") == "file") files.emplace_back(e.value("path", ""), e.value("size", std::uint64_t{0}));
    }
    auto path = hub::next_link_path(page.link);
    next = path ? node + *path : "";
  }

  std::fprintf(stderr, "%s@%s: %zu files\n", repo.name.c_str(), commit.c_str(), files.size());
  int failures = 0;
  for (const auto& [path, size] : files) {
    auto got = client.download(
        node + "/" + std::string(repo.url_prefix()) + repo.name + "/resolve/" + commit + "/" + url::encode(path, true),
        path, size);
    if (!got.error.empty() || got.status != 200) {
      std::fprintf(stderr, "  %s: %s\n", path.c_str(), describe_failure(got).c_str());
      ++failures;
    }
  }
  if (failures) {
    std::fprintf(stderr, "%d of %zu files failed\n", failures, files.size());
    return 1;
  }
  return 0;
}

}  // namespace inferllama::cli
