// Fetching the files of a snapshot the node does not hold yet, as clients' requests fetch them: shared by
// the torrents of snapshots (completed before they are built) and the prefetch (src/prefetch/).
#pragma once
#include <cstddef>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "hub/hub_service.hpp"
#include "inferllama/index.hpp"

namespace inferllama::hub {

// Whether the stored blob `etag` answers for `repo`: a blob held for another, restricted repo is fetched from
// this repo's upstream and verified first.
bool stored_for(Index& index, const RepoId& repo, const std::string& etag);

struct FetchFailure {
  std::string path;
  std::optional<Reply> refused;  // the Hub's (or the node's) refusal to fetch it, relayed as it is
  std::string error;             // else why its download failed
};

struct SnapshotFetch {
  std::size_t fetched = 0;             // files whose download this fetch started or joined, and which are stored
  std::vector<FetchFailure> failures;  // files not stored, in the order they failed
  bool stopped = false;                // the stop token ended it before every file was asked for
};

// Fetches each of `files` (a snapshot of `repo` at `commit`) that is not stored for the repo through
// HubService::resolve, as a client's request would: one download per file shared with clients' requests
// (single flight), the node's own credentials (its token for public repos only). At most `parallel` files at
// once; `on_stored(file)` after each file stored by this fetch. No new file is started once `stop` is
// requested. Blocking: on the blocking pool.
SnapshotFetch fetch_snapshot(HubService& hub, Index& index, const RepoId& repo, const std::string& commit,
                             const std::vector<HubService::SnapshotEntry>& files, std::size_t parallel,
                             std::stop_token stop = {},
                             const std::function<void(const HubService::SnapshotEntry&)>& on_stored = {});

}  // namespace inferllama::hub
