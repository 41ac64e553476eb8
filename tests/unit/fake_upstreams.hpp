// Upstreams for unit tests, in memory: one file, a scripted server, and the Hub's API as the node calls
// it (the protocol of tests/fakes/fake_hub.py, without the network). Plus a wait for downloads.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cache/download.hpp"
#include "cache/hashing.hpp"
#include "inferllama/upstream.hpp"

namespace inferllama::testing {

// Serves one in-memory file; can cut connections and count what it sent.
class MemoryUpstream : public Upstream {
 public:
  explicit MemoryUpstream(std::vector<std::uint8_t> data) : data_(std::move(data)) {}
  UpstreamResponse fetch(const UpstreamRequest&) override { return {}; }
  RangeResult fetch_range(const std::string&, const HeaderList&, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    RangeResult r{206, {}, 0};
    ++requests;
    std::uint64_t end = std::min<std::uint64_t>(last + 1, data_.size());
    // The cut breaks the first request long enough to be cut, whichever of the connections asks first.
    std::uint64_t cut = end - first > cut_after.load() ? cut_after.exchange(0) : 0;
    for (std::uint64_t pos = first; pos < end;) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(64 * 1024, end - pos));
      if (cut && r.received + n > cut) {
        r.error = "connection reset";
        return r;
      }
      // Counted before the sink sees the bytes: the download may be stored before the sink returns.
      sent += n;
      std::size_t taken = sink(std::span<const char>(reinterpret_cast<const char*>(data_.data() + pos), n));
      sent -= n - taken;
      r.received += taken;
      if (taken < n) return r;
      pos += n;
    }
    return r;
  }
  std::atomic<std::uint64_t> cut_after{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<int> requests{0};

 private:
  std::vector<std::uint8_t> data_;
};

// Answers every request with what `answer` says and remembers the URLs it was asked for.
class ScriptedUpstream final : public Upstream {
 public:
  explicit ScriptedUpstream(std::function<UpstreamResponse(const UpstreamRequest&)> answer)
      : answer_(std::move(answer)) {}
  UpstreamResponse fetch(const UpstreamRequest& request) override {
    {
      std::lock_guard lock(mutex_);
      urls_.push_back(request.url);
    }
    return answer_(request);
  }
  RangeResult fetch_range(const std::string& url, const HeaderList&, std::uint64_t, std::uint64_t,
                          const BodySink&) override {
    std::lock_guard lock(mutex_);
    urls_.push_back(url);
    return RangeResult{0, "not scripted", 0};
  }
  std::vector<std::string> urls() const {
    std::lock_guard lock(mutex_);
    return urls_;
  }

 private:
  std::function<UpstreamResponse(const UpstreamRequest&)> answer_;
  mutable std::mutex mutex_;
  std::vector<std::string> urls_;
};

// Wakes on a download's progress; until_done blocks until it is no longer running (30 s at most).
class Waiter : public cache::ProgressListener {
 public:
  void on_progress() override {
    std::lock_guard lock(m);
    cv.notify_all();
  }
  void until_done(cache::Download& d) {
    std::unique_lock lock(m);
    cv.wait_for(lock, std::chrono::seconds(30), [&] { return d.state() != cache::Download::State::running; });
  }
  std::mutex m;
  std::condition_variable cv;
};

// The Hub's API for model repos at kUrl: repo info with its visibility, revisions, trees, HEAD on resolve
// (LFS files redirect to kUrl/cdn/<sha256>), and the bytes. Gated repos refuse anonymous callers with 401
// and unapproved tokens with 403 (GatedRepo); private and unknown repos answer 401 RepoNotFound. Every call
// is recorded as "METHOD URL". Thread-safe; change repos only while no download runs.
class FakeHub final : public Upstream {
 public:
  static constexpr std::string_view kUrl = "http://hub.test";
  enum class Access { open, gated, restricted };
  struct File {
    std::string bytes;
    bool lfs = false;
    std::optional<std::uint64_t> claimed_size;  // what HEAD says the size is, when it lies
  };
  struct Repo {
    Access access = Access::open;
    std::set<std::string> approved;                                // Authorization values let in
    std::map<std::string, std::string> branches;                   // name -> commit
    std::map<std::string, std::map<std::string, File>> snapshots;  // commit -> path -> file
  };

  static std::string etag_of(const File& f) {
    if (f.lfs) return cache::sha256(f.bytes).hex();
    cache::Sha1Stream blob;
    cache::start_git_blob(blob, f.bytes.size());
    blob.update(f.bytes);
    return blob.finish().hex();
  }

  void put(const std::string& name, Repo repo) {
    std::lock_guard lock(mutex_);
    repos_[name] = std::move(repo);
  }
  void move_branch(const std::string& name, const std::string& branch, const std::string& commit) {
    std::lock_guard lock(mutex_);
    repos_.at(name).branches[branch] = commit;
  }
  void set_down(bool down) { down_ = down; }

  // How many recorded calls contain `needle` (e.g. "HEAD ", "/revision/", "RANGE ").
  std::size_t count(std::string_view needle) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(calls_.begin(), calls_.end(), [&](const std::string& c) { return c.find(needle) != c.npos; }));
  }
  std::size_t calls() const {
    std::lock_guard lock(mutex_);
    return calls_.size();
  }

  UpstreamResponse fetch(const UpstreamRequest& request) override {
    std::lock_guard lock(mutex_);
    calls_.push_back(request.method + " " + request.url);
    if (down_) return UpstreamResponse{0, {}, {}, "connection refused"};
    std::string authorization;
    for (const auto& [name, value] : request.headers)
      if (name == "Authorization") authorization = value;
    auto target = parse(request.url);
    if (!target) return answer(404, {{"x-error-code", "EntryNotFound"}});
    auto repo = repos_.find(target->repo);
    if (repo == repos_.end()) return answer(401, {{"x-error-code", "RepoNotFound"}});
    if (target->kind == Kind::info && target->rev.empty()) {
      // The repo's own info, which anyone may read for public and gated repos.
      if (repo->second.access == Access::restricted && !repo->second.approved.contains(authorization))
        return answer(401, {{"x-error-code", "RepoNotFound"}});
      const bool restricted = repo->second.access == Access::restricted;
      const bool gated = repo->second.access == Access::gated;
      return answer(200, {},
                    std::string(R"({"private":)") + (restricted ? "true" : "false") + R"(,"gated":)" +
                        (gated ? R"("auto")" : "false") + "}");
    }
    if (auto refused = refusal(repo->second, authorization)) return *refused;
    const std::string commit = commit_of(repo->second, target->rev);
    if (commit.empty()) return answer(404, {{"x-error-code", "RevisionNotFound"}});
    const auto& files = repo->second.snapshots[commit];
    switch (target->kind) {
      case Kind::info:
        return answer(200, {}, R"({"sha":")" + commit + R"(","query":")" + target->query + R"("})");
      case Kind::tree: {
        std::string body = "[";
        for (const auto& [path, f] : files) {
          if (body.size() > 1) body += ',';
          body += R"({"type":"file","path":")" + path + R"(","size":)" + std::to_string(f.bytes.size());
          body += f.lfs ? R"(,"oid":")" + std::string(40, '0') + R"(","lfs":{"oid":")" + etag_of(f) +
                              R"(","size":)" + std::to_string(f.bytes.size()) + "}}"
                        : R"(,"oid":")" + etag_of(f) + R"("})";
        }
        return answer(200, {}, body + "]");
      }
      case Kind::resolve: {
        auto file = files.find(target->path);
        if (file == files.end()) return answer(404, {{"x-error-code", "EntryNotFound"}});
        const auto& f = file->second;
        const std::string size = std::to_string(f.claimed_size.value_or(f.bytes.size()));
        if (!f.lfs) {
          return answer(200, {{"x-repo-commit", commit}, {"etag", '"' + etag_of(f) + '"'}, {"content-length", size}});
        }
        return answer(302, {{"x-repo-commit", commit},
                            {"x-linked-etag", '"' + etag_of(f) + '"'},
                            {"x-linked-size", size},
                            {"location", std::string(kUrl) + "/cdn/" + etag_of(f)}});
      }
    }
    return answer(404);
  }

  RangeResult fetch_range(const std::string& url, const HeaderList& headers, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    std::string bytes;
    {
      std::lock_guard lock(mutex_);
      calls_.push_back("RANGE " + url);
      if (down_) return RangeResult{0, "connection refused", 0};
      std::string authorization;
      for (const auto& [name, value] : headers)
        if (name == "Authorization") authorization = value;
      if (!find_bytes(url, authorization, bytes)) return RangeResult{404, "HTTP 404", 0};
    }
    if (first >= bytes.size()) return RangeResult{206, {}, 0};
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(last + 1, bytes.size()) - first);
    const std::size_t taken = sink(std::span<const char>(bytes.data() + first, n));
    return RangeResult{206, {}, taken};
  }

 private:
  enum class Kind { info, tree, resolve };
  struct Target {
    Kind kind;
    std::string repo;
    std::string rev;
    std::string path;
    std::string query;
  };

  static UpstreamResponse answer(long status, HeaderList headers = {}, std::string body = {}) {
    if (!body.empty()) headers.emplace_back("content-type", "application/json");
    return UpstreamResponse{status, std::move(headers), std::move(body), {}};
  }

  // "/api/models/{ns}/{name}[/revision/{rev}|/tree/{rev}]?q" or "/{ns}/{name}/resolve/{rev}/{path}".
  static std::optional<Target> parse(std::string_view url) {
    if (!url.starts_with(kUrl)) return std::nullopt;
    url.remove_prefix(kUrl.size());
    Target t{Kind::info, {}, {}, {}, {}};
    if (auto q = url.find('?'); q != url.npos) {
      t.query = std::string(url.substr(q + 1));
      url = url.substr(0, q);
    }
    const bool api = url.starts_with("/api/models/");
    url.remove_prefix(api ? 12 : 1);
    auto slash = url.find('/');
    if (slash == url.npos) return std::nullopt;
    auto end = url.find('/', slash + 1);
    t.repo = std::string(url.substr(0, end));
    if (end == url.npos) return api ? std::optional(t) : std::nullopt;
    std::string_view rest = url.substr(end + 1);
    auto next = rest.find('/');
    const std::string_view what = rest.substr(0, next);
    rest = next == rest.npos ? std::string_view() : rest.substr(next + 1);
    auto rev_end = rest.find('/');
    t.rev = std::string(rest.substr(0, rev_end));
    t.path = rev_end == rest.npos ? "" : std::string(rest.substr(rev_end + 1));
    if (api && what == "revision") return t;
    if (api && what == "tree") return t.kind = Kind::tree, std::optional(t);
    if (!api && what == "resolve") return t.kind = Kind::resolve, std::optional(t);
    return std::nullopt;
  }

  static std::optional<UpstreamResponse> refusal(const Repo& repo, const std::string& authorization) {
    if (repo.access == Access::open || repo.approved.contains(authorization)) return std::nullopt;
    if (repo.access == Access::restricted) return answer(401, {{"x-error-code", "RepoNotFound"}});
    return answer(authorization.empty() ? 401 : 403, {{"x-error-code", "GatedRepo"}});
  }

  static std::string commit_of(const Repo& repo, const std::string& rev) {
    if (repo.snapshots.contains(rev)) return rev;
    auto branch = repo.branches.find(rev.empty() ? "main" : rev);
    return branch == repo.branches.end() ? "" : branch->second;
  }

  bool find_bytes(const std::string& url, const std::string& authorization, std::string& bytes) {
    const std::string cdn = std::string(kUrl) + "/cdn/";
    if (url.starts_with(cdn)) {
      for (const auto& [name, repo] : repos_)
        for (const auto& [commit, files] : repo.snapshots)
          for (const auto& [path, f] : files)
            if (f.lfs && etag_of(f) == url.substr(cdn.size())) return bytes = f.bytes, true;
      return false;
    }
    auto target = parse(url);
    if (!target || target->kind != Kind::resolve) return false;
    auto repo = repos_.find(target->repo);
    if (repo == repos_.end() || refusal(repo->second, authorization)) return false;
    const auto& files = repo->second.snapshots[commit_of(repo->second, target->rev)];
    auto file = files.find(target->path);
    if (file == files.end()) return false;
    bytes = file->second.bytes;
    return true;
  }

  mutable std::mutex mutex_;
  std::map<std::string, Repo> repos_;
  std::vector<std::string> calls_;
  std::atomic<bool> down_{false};
};

}  // namespace inferllama::testing
