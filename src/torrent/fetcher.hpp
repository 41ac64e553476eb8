#pragma once
// Downloads a torrent into a folder: how a mirror copies a snapshot from other nodes' seeds and web
// seeds. libtorrent stays out of this header.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace inferllama::torrent {

struct FetcherOptions {
  std::string listen = "0.0.0.0:0";  // HOST:PORT the fetching session accepts peers on (TCP)
  bool dht = false;
  bool lsd = false;
};

struct PeerEndpoint {
  std::string address;  // IPv4 or IPv6 literal
  std::uint16_t port = 0;
};

struct FetchProgress {
  std::uint64_t done = 0;   // verified payload bytes (pads excluded)
  std::uint64_t total = 0;  // payload bytes wanted
  int peers = 0;
};

struct FetchRequest {
  std::string metainfo;             // the .torrent; its url-list web seeds (BEP 19) and trackers are used
  std::filesystem::path directory;  // files land under directory/<torrent name>/... (single file: directory/<name>)
  std::vector<PeerEndpoint> peers;  // connected to directly, besides whatever trackers and web seeds give
  std::vector<std::string> skip;    // files not to fetch (already held), '/'-separated paths under the name
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  // for the whole download
  std::function<void(const FetchProgress&)> on_progress;        // called from fetch()'s thread, about twice a second
};

struct FetchResult {
  std::string error;  // "" when every piece was downloaded, verified and written
  std::uint64_t bytes = 0;
};

// One libtorrent session with its ordinary disk storage. fetch() calls are served one at a time (a
// second caller waits for the first); any thread may call it.
class TorrentFetcher {
 public:
  explicit TorrentFetcher(const FetcherOptions& options = {});
  ~TorrentFetcher();
  TorrentFetcher(const TorrentFetcher&) = delete;
  TorrentFetcher& operator=(const TorrentFetcher&) = delete;

  // Blocks until the torrent is complete on disk, the timeout passes, or `stop` is requested. On any
  // failure the torrent is dropped from the session; the partial files stay for a later attempt.
  FetchResult fetch(const FetchRequest& request, std::stop_token stop = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace inferllama::torrent
