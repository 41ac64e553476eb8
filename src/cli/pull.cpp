#include <curl/curl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.hpp"
#include "cli/text.hpp"
#include "hub/hub_protocol.hpp"
#include "inferllama/repo.hpp"
#include "util/url.hpp"

namespace inferllama::cli {
namespace {

struct Fetched {
  long status = 0;
  std::string body;
  std::string link;     // the Link header (next page)
  std::string fetched;  // X-InferLlama-Fetched: what the node holds of a file on its way
  std::string error;
};

// One connection to the node, reused for every request of the pull.
class Client {
 public:
  Client(std::string token) : token_(std::move(token)), curl_(curl_easy_init()) {}
  ~Client() {
    curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Fetched get_text(const std::string& url) { return perform(url, false, nullptr); }
  Fetched head(const std::string& url) { return perform(url, true, nullptr); }
  // The body goes to `sink` (bytes, count); the node keeps the bytes, the client needs none.
  using Sink = std::function<void(std::size_t)>;
  Fetched stream(const std::string& url, const Sink& sink) { return perform(url, false, &sink); }

 private:
  Fetched perform(const std::string& url, bool head_only, const Sink* sink) {
    Fetched out;
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_FOLLOWLOCATION, 1L);
    // A node speaks http(s); the token is a custom header, which libcurl (7.83+) keeps to the first origin.
    curl_easy_setopt(curl_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_USERAGENT, "inferllama-pull/0.1");
    curl_slist_free_all(headers_);
    headers_ = nullptr;
    if (!token_.empty()) headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + token_).c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
    if (head_only) curl_easy_setopt(curl_, CURLOPT_NOBODY, 1L);
    struct Body {
      std::string* text;
      const Sink* sink;
    } body{&out.body, sink};
    curl_easy_setopt(
        curl_, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
          auto* b = static_cast<Body*>(u);
          if (b->sink) {
            (*b->sink)(s * n);
          } else {
            b->text->append(d, s * n);
          }
          return s * n;
        });
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(
        curl_, CURLOPT_HEADERFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
          auto* f = static_cast<Fetched*>(u);
          std::string_view line(d, s * n);
          while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
          const auto colon = line.find(':');
          if (colon == std::string_view::npos) return s * n;
          std::string name(line.substr(0, colon));
          for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          auto value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
          if (name == "link") f->link = value;
          if (name == "x-inferllama-fetched") f->fetched = value;
          return s * n;
        });
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &out);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) out.error = curl_easy_strerror(rc);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &out.status);
    return out;
  }

  std::string token_;
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

// The node fetches a large file over several connections while this client reads it in order: the bar
// shows the node's progress, asked every two seconds on a connection of its own (a HEAD, which the node
// may pass on to the Hub and counts against the caller's limits: large files only), or what arrived here
// when that is more.
constexpr std::uint64_t kPolledSize = 64ull << 20;
class FileProgress {
 public:
  FileProgress(const std::string& url, const std::string& token, std::string label, std::uint64_t size, bool draw)
      : label_(std::move(label)), size_(size), draw_(draw) {
    if (draw_ && size >= kPolledSize) poller_ = std::thread([this, url, token] { poll(url, token); });
  }
  ~FileProgress() { stop(); }
  FileProgress(const FileProgress&) = delete;
  FileProgress& operator=(const FileProgress&) = delete;

  void received(std::size_t n) {
    received_ += n;
    const auto now = std::chrono::steady_clock::now();
    if (draw_ && now - last_draw_ > std::chrono::milliseconds(100)) {
      last_draw_ = now;
      draw(now);
    }
  }
  std::uint64_t received_bytes() const { return received_; }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  // Ends the bar: its line is cleared for what is printed next.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      stopped_ = true;
    }
    wake_.notify_all();
    if (poller_.joinable()) poller_.join();
    if (draw_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  void poll(const std::string& url, const std::string& token) {
    Client client(token);
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::seconds(2), [this] { return stopped_; })) {
      lock.unlock();
      const Fetched head = client.head(url);
      if (!head.fetched.empty()) node_fetched_ = std::strtoull(head.fetched.c_str(), nullptr, 10);
      lock.lock();
    }
  }

  void draw(std::chrono::steady_clock::time_point now) {
    const std::uint64_t have = std::max<std::uint64_t>(received_, node_fetched_.load());
    const double fraction = size_ ? static_cast<double>(std::min(have, size_)) / static_cast<double>(size_) : 1.0;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const int filled = static_cast<int>(fraction * 30);
    std::fprintf(stderr, "\r\033[K[%-30s] %3.0f%% %9s/s  %s",
                 std::string(static_cast<std::size_t>(filled), '#').c_str(), fraction * 100,
                 human_bytes(secs > 0 ? static_cast<std::uint64_t>(static_cast<double>(have) / secs) : 0).c_str(),
                 label_.c_str());
  }

  const std::string label_;
  const std::uint64_t size_;
  const bool draw_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_draw_{};
  std::uint64_t received_ = 0;
  std::atomic<std::uint64_t> node_fetched_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopped_ = false;
  std::thread poller_;
};

std::string node_url(const PullOptions& options) {
  std::string node = options.node;
  for (const char* variable : {"INFERLLAMA_NODE", "HF_ENDPOINT"}) {
    const char* value = std::getenv(variable);
    if (node.empty() && value && *value) node = value;
  }
  if (node.empty()) node = "http://127.0.0.1:8080";
  while (node.ends_with("/")) node.pop_back();
  return node;
}

std::string token_of(const PullOptions& options) {
  if (!options.token_flag.empty()) {
    throw UsageError(
        "--token would show the token to every user of the machine (ps): give it as --token-file FILE or "
        "the environment variable HF_TOKEN");
  }
  if (!options.token_file.empty()) return read_secret_file(options.token_file, "--token-file");
  const char* token = std::getenv("HF_TOKEN");
  return token ? token : "";
}

RepoRef snapshot_of(const PullOptions& options) {
  RepoRef ref = snapshot_argument(options.repo, options.repo_type);
  if (options.repo.find('@') == std::string::npos) ref.rev = options.revision;
  return ref;
}

}  // namespace

int pull(const PullOptions& options) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const RepoRef snapshot = snapshot_of(options);
  const RepoId& repo = snapshot.repo;
  const std::string node = node_url(options);
  const std::string token = token_of(options);
  Client client(token);
  const std::string api = node + "/api/" + std::string(repo.api_segment()) + "/" + repo.name;

  auto revision = client.get_text(api + "/revision/" + url::encode(snapshot.rev));
  auto info = nlohmann::json::parse(revision.body, nullptr, false);
  if (!revision.error.empty()) {
    std::fprintf(stderr,
                 "inferllama: cannot reach the node at %s: %s (start it with `inferllama serve`, or name it "
                 "with --node URL or INFERLLAMA_NODE)\n",
                 node.c_str(), revision.error.c_str());
    return 1;
  }
  if (revision.status != 200 || !info.is_object() || !info.contains("sha") || !info["sha"].is_string()) {
    std::fprintf(stderr, "inferllama: cannot resolve %s@%s at %s: %s\n", repo.name.c_str(), snapshot.rev.c_str(),
                 node.c_str(), describe_failure(revision).c_str());
    return 1;
  }
  const std::string commit = info["sha"].get<std::string>();

  std::vector<std::pair<std::string, std::uint64_t>> files;
  std::string next = api + "/tree/" + commit + "?recursive=true";
  while (!next.empty()) {
    auto page = client.get_text(next);
    auto entries = nlohmann::json::parse(page.body, nullptr, false);
    if (page.status != 200 || !entries.is_array()) {
      std::fprintf(stderr, "inferllama: cannot list %s@%s: %s\n", repo.name.c_str(), commit.c_str(),
                   describe_failure(page).c_str());
      return 1;
    }
    for (const auto& e : entries) {
      if (e.value("type", "") == "file") files.emplace_back(e.value("path", ""), e.value("size", std::uint64_t{0}));
    }
    auto path = hub::next_link_path(page.link);
    next = path ? node + *path : "";
  }

  const bool draw = !options.quiet && ::isatty(STDERR_FILENO);
  if (!options.quiet) std::fprintf(stderr, "%s@%s: %zu files\n", repo.name.c_str(), commit.c_str(), files.size());
  const auto started = std::chrono::steady_clock::now();
  std::uint64_t total = 0;
  int failures = 0;
  for (const auto& [path, size] : files) {
    const std::string url =
        node + "/" + std::string(repo.url_prefix()) + repo.name + "/resolve/" + commit + "/" + url::encode(path, true);
    FileProgress progress(url, token, path, size, draw);
    Fetched got = client.stream(url, [&](std::size_t n) { progress.received(n); });
    progress.stop();
    if (got.error.empty() && got.status == 200 && progress.received_bytes() != size) {
      got.error = "received " + std::to_string(progress.received_bytes()) + " of " + std::to_string(size) + " bytes";
    }
    const bool ok = got.error.empty() && got.status == 200;
    total += progress.received_bytes();
    if (!ok) {
      ++failures;
      std::fprintf(stderr, "FAIL  %s: %s\n", path.c_str(), describe_failure(got).c_str());
    } else if (!options.quiet) {
      std::fprintf(stderr, "ok    %9s in %5.2fs  %s\n", human_bytes(size).c_str(), progress.seconds(), path.c_str());
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (failures) {
    std::fprintf(stderr, "inferllama: %d of %zu files of %s@%s failed\n", failures, files.size(), repo.name.c_str(),
                 commit.c_str());
    return 1;
  }
  std::printf("%s@%s: %zu files, %s in %.1fs, cached on %s\n", repo.key().c_str(), commit.c_str(), files.size(),
              human_bytes(total).c_str(), seconds, node.c_str());
  return 0;
}

}  // namespace inferllama::cli
