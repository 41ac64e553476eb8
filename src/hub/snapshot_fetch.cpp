#include "hub/snapshot_fetch.hpp"

#include <algorithm>

#include "cache/download_wait.hpp"

namespace inferllama::hub {

bool stored_for(Index& index, const RepoId& repo, const std::string& etag) {
  return index.get_blob(etag) && index.blob_serves(etag, repo);
}

SnapshotFetch fetch_snapshot(HubService& hub, Index& index, const RepoId& repo, const std::string& commit,
                             const std::vector<HubService::SnapshotEntry>& files, std::size_t parallel,
                             std::stop_token stop,
                             const std::function<void(const HubService::SnapshotEntry&)>& on_stored) {
  SnapshotFetch result;
  struct Running {
    const HubService::SnapshotEntry* file;
    std::shared_ptr<cache::Download> download;
  };
  std::vector<Running> running;
  cache::DownloadWaiter waiter;
  auto settle = [&](const Running& r) {
    if (r.download->state() == cache::Download::State::failed) {
      result.failures.push_back({r.file->path, std::nullopt, r.download->error()});
      return;
    }
    ++result.fetched;
    if (on_stored) on_stored(*r.file);
  };
  auto next = files.begin();
  while (true) {
    for (; next != files.end() && running.size() < std::max<std::size_t>(parallel, 1); ++next) {
      if (stop.stop_requested()) {
        result.stopped = true;
        next = files.end();
        break;
      }
      if (stored_for(index, repo, next->file.etag)) continue;
      auto outcome = hub.resolve(repo, commit, next->path, Caller{}, true);
      if (auto* refused = std::get_if<Reply>(&outcome)) {
        result.failures.push_back({next->path, std::move(*refused), ""});
        continue;
      }
      auto& answer = std::get<FileAnswer>(outcome);
      if (!answer.download) continue;  // stored meanwhile
      waiter.watch(answer.download);
      running.push_back({&*next, std::move(answer.download)});
    }
    if (running.empty()) break;
    waiter.wait([&] {
      return std::any_of(running.begin(), running.end(),
                         [](const Running& r) { return r.download->state() != cache::Download::State::running; });
    });
    // A download ends with its state set before its file is in the index: a failure is final, a complete one
    // is stored (its commit precedes the state).
    std::erase_if(running, [&](const Running& r) {
      if (r.download->state() == cache::Download::State::running) return false;
      settle(r);
      return true;
    });
  }
  return result;
}

}  // namespace inferllama::hub
