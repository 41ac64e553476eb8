#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/hashing.hpp"
#include "inferllama/asio.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/config.hpp"
#include "inferllama/index.hpp"
#include "inferllama/scan.hpp"
#include "inferllama/upstream.hpp"
#include "util/elastic_threads.hpp"

namespace inferllama::scan {
class FileScanner;
class ScanService;
}  // namespace inferllama::scan

namespace inferllama::cache {

// A path in a repo at a commit that wants a blob: committed with it so the path resolves as cached.
// A claim without a path stores the blob for no file yet (a mirror lists a snapshot only once every
// file of it verified). The blob answers for the claim's repo once the bytes verified (see BlobScope).
struct FileClaim {
  RepoId repo;
  std::string commit;
  std::string path;
  // The repo is public: bytes it delivered answer for every repo, and the claim may share a download with
  // any repo's. A restricted repo's claim shares only its own repo's download (or a public one).
  bool shared = false;
};

// Where a blob's bytes come from and what they must hash to.
struct BlobSource {
  std::string url;     // the CDN's signed URL for LFS files, the Hub's resolve URL for regular ones
  HeaderList headers;  // credentials, sent only to `credentials_origin` (see url::http_origin)
  std::string etag;    // SHA-256 (LFS) or git blob SHA-1 (regular), lower-case hex
  bool lfs = false;
  std::uint64_t size = 0;
  std::function<std::optional<std::string>()> refresh_url;  // a fresh signed URL when one expired
  // Where the bytes come from when not from the registry's upstream (files that arrived over BitTorrent):
  // one registry for every way in keeps single flight and the staging folder of an etag to one download.
  Upstream* upstream = nullptr;
  // The one origin `headers` may go to; decided again for every URL the download uses (the first, a
  // refreshed one, each redirect). Empty: `headers` go nowhere.
  std::string credentials_origin;
};

// Built by from(): the defaults are the configuration's (config/config.cpp's key table), stated nowhere else.
struct DownloadSettings {
  std::uint32_t chunk_size{};
  unsigned connections{};
  std::uint64_t parallel_threshold{};
  unsigned retries{};
  std::chrono::milliseconds backoff{200};  // before the first retry, doubled for each next one; not a setting
  // The longest wait for a throttling upstream (its Retry-After, or the back-off the node keeps for the
  // credential) that a retry sits out; a longer one fails the download. upstream_timeout: how long a stall
  // may last anyway.
  std::chrono::milliseconds throttle_patience{};

  static DownloadSettings from(const Config& config);
};

// Told (from any thread) that a download made progress or ended; must not block.
class ProgressListener {
 public:
  virtual ~ProgressListener() = default;
  virtual void on_progress() = 0;
};

struct DownloadCounters {
  std::atomic<std::uint64_t> upstream_bytes{0};
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> resumed_bytes{0};  // staged by an earlier attempt, not fetched again
  // Files that arrived by other means (a mirror's BitTorrent download) and went through the ingest.
  std::atomic<std::uint64_t> ingests_started{0};
  std::atomic<std::uint64_t> ingests_completed{0};
  std::atomic<std::uint64_t> ingests_failed{0};
};

class Downloads;

// One file being fetched from upstream, shared by every request that wants it (single flight).
// Bytes land in staged chunk files as they arrive; readers follow each chunk's fill level. Chunks are
// hashed on the worker pool as they fill, the whole file in order; when the file matches its etag the
// chunks move to their content addresses and one index write makes the file visible.
class Download : public std::enable_shared_from_this<Download> {
 public:
  enum class State { running, complete, failed };

  Download(Downloads& owner, BlobSource source, FileClaim claim, std::string key);
  ~Download();
  Download(const Download&) = delete;
  Download& operator=(const Download&) = delete;

  std::uint64_t size() const { return source_.size; }
  const std::string& etag() const { return source_.etag; }
  bool lfs() const { return source_.lfs; }
  State state() const { return state_.load(std::memory_order_acquire); }
  bool verified() const { return verified_.load(std::memory_order_acquire); }
  std::string error() const;

  // Bytes readable from `offset` without waiting, up to the end of the chunk holding it. The file's last
  // byte is held back until the whole file has been verified, so a reader never sees a complete-looking
  // body that failed its hash. (Verified comes before complete: storing it durably is not the reader's wait.)
  std::uint64_t readable(std::uint64_t offset) const;
  // Bytes held so far, over every chunk (connections fill them out of order).
  std::uint64_t fetched() const;
  // Descriptor of the staged chunk holding `offset` and the offset within it; valid while this lives.
  std::pair<int, std::uint64_t> locate(std::uint64_t offset) const;
  // Fetch the bytes at `offset` next (a Range request landing in the middle of the file).
  void prioritize(std::uint64_t offset);

  void subscribe(const std::shared_ptr<ProgressListener>& listener);
  // False once the blob is committed with its claims: the caller records its path itself.
  bool add_claim(FileClaim claim);
  // Whether a claim names a file of `repo` at `commit`.
  bool claims(const RepoId& repo, const std::string& commit) const;

  // Whether the download scans its bytes (see Downloads::set_scanning): a verdict will come.
  bool scanning() const { return scanner_ != nullptr; }
  // The scanner's verdict once it no longer depends on bytes still to come (a header format's as soon as its
  // header is in, a pickle's at its end); null before, and for a download that does not scan. Listeners are
  // told when it is set.
  std::shared_ptr<const ScanVerdict> verdict() const;

 private:
  friend class Downloads;
  struct Chunk {
    std::uint64_t start = 0;
    std::uint32_t size = 0;
    std::atomic<std::uint32_t> filled{0};
    int fd = -1;
    ChunkRef ref;
    Sha1 padded_sha1;
    Sha256 file_root;                          // the pieces root of a file that is only this chunk
    std::atomic<bool> hashes_recorded{false};  // ref, padded_sha1 and file_root are set (under mutex_)
  };
  struct Segment {
    std::uint64_t next = 0;
    std::uint64_t end = 0;
    bool active = false;
    bool urgent = false;
  };

  void start();
  // Picks up the chunks an earlier attempt staged for this file; returns the bytes found.
  std::uint64_t resume_staged();
  void run_connection(unsigned ordinal);
  // The next segment for a connection, or -1 when the connection ends (it is no longer counted then).
  int claim_segment();
  // After a connection (the ordinal-th the download started) wrote `bytes`.
  void pace_connections_locked(std::uint32_t bytes, bool first_of_connection, unsigned ordinal);
  void fetch_segment(int segment);
  std::size_t write_body(int segment, std::span<const char> bytes);
  int chunk_fd_locked(std::size_t index);
  void chunk_filled(std::size_t index);
  bool read_staged(const Chunk& chunk, const std::function<void(std::span<const std::uint8_t>)>& consume);
  void hash_chunk(std::size_t index, bool in_background);
  // Whether the in-order whole-file hash has more than a segment of full chunks waiting: the CPU, not the
  // upstream, is what limits the transfer then.
  bool file_hash_behind();
  // On a worker, once the file is verified: hashes every chunk the hashing pool has not begun.
  void hash_remaining_chunks();
  void advance_file_hash();
  // Feeds the scanner bytes of the file, in order (from the whole-file hash: no second read).
  void scan(std::span<const std::uint8_t> bytes);
  // Sets verdict_ from the scanner when it has decided, or at the end of the file; true when it was set now.
  bool settle_verdict(bool end_of_file);
  void verify_file();
  void maybe_finalize();
  void finalize();
  void fail(const std::string& why);
  void notify();
  // Before retry `attempt`: the exponential back-off, or `at_least` when that is longer.
  bool wait_backoff(unsigned attempt, std::chrono::milliseconds at_least);
  // False when no thread could be had for it.
  bool spawn_connection_locked();

  Downloads& owner_;
  BlobSource source_;
  const std::string key_;  // in the registry: the etag, and the repo of a restricted download
  const bool shared_;      // the bytes come from a public repo's upstream
  std::vector<FileClaim> claims_;
  bool claims_closed_ = false;  // the committed blob names every claim: no more are taken
  std::filesystem::path staging_;
  std::size_t chunk_count_ = 0;
  std::unique_ptr<Chunk[]> chunks_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Segment> segments_;
  unsigned connections_ = 0;
  unsigned spawned_ = 0;             // connections started so far: the next one's ordinal
  unsigned max_connections_ = 1;     // upstream_connections for a file past parallel_threshold, else 1
  unsigned wanted_connections_ = 1;  // what the rate says pays (see pace_connections_locked)
  struct Ramp {
    std::chrono::steady_clock::time_point requested;     // when the first connection was started
    std::chrono::nanoseconds window{};                   // set at the first connection's first byte
    std::chrono::steady_clock::time_point window_start;  // zero: until the newest connection's first byte
    unsigned newest = 0;                                 // the ordinal of the connection being measured
    std::uint64_t older_bytes = 0;                       // in this window, from connections before it
    std::uint64_t newest_bytes = 0;
    double rate = 0;  // bytes/s of every connection in the window before
    bool settled = false;
  } ramp_;
  std::size_t hashed_count_ = 0;
  std::size_t file_hashed_ = 0;  // chunks fed to the whole-file hash, in order
  bool file_hashing_ = false;
  bool file_checked_ = false;  // the whole-file hash was compared with the etag
  bool finalizing_ = false;
  std::string error_;
  std::vector<std::weak_ptr<ProgressListener>> listeners_;
  std::atomic<State> state_{State::running};
  std::atomic<bool> verified_{false};  // the whole file matched its etag: every byte may be read
  std::string url_;

  struct FileHasher;
  std::unique_ptr<FileHasher> file_hasher_;
  // Touched only by the in-order hash (one run at a time); verdict_ under mutex_.
  std::unique_ptr<scan::FileScanner> scanner_;
  std::chrono::nanoseconds scan_time_{0};
  std::shared_ptr<const ScanVerdict> verdict_;
};

// The registry of running downloads, with the pools they run on.
class Downloads {
 public:
  Downloads(ChunkStore& store, Index& index, Upstream& upstream, asio::thread_pool& workers, DownloadSettings settings,
            unsigned max_connections = 64);
  ~Downloads();

  // The running download of `source.etag` the claim may share, or a new one; nullptr if the stored blob
  // answers for the claim's repo (Index::blob_serves). A blob stored for another, restricted repo is fetched
  // again from this claim's upstream and verified: it then answers for this repo too (its chunks are not
  // stored twice). A running download of another size is returned without the claim: the caller refuses.
  // `started` (when given) says whether this call started the download rather than joined a running one.
  std::shared_ptr<Download> get_or_start(const BlobSource& source, const FileClaim& claim, bool* started = nullptr);
  std::shared_ptr<Download> find(const std::string& etag);
  // Files of `repo` at `commit` whose every byte arrived and matched, still being stored: in the index in
  // a moment (a client may have read them whole already).
  std::vector<std::string> verified_for(const RepoId& repo, const std::string& commit);
  std::size_t in_flight();
  // Of those, the ones whose every byte arrived, still being hashed and made durable: a stop waits for them.
  std::size_t committing();

  // Stops every download (they fail with "shutting down") and waits for their connections.
  void shutdown();

  // Called on a worker after a file was stored (etag), and when a download hit a full disk (its size).
  void set_hooks(std::function<void(const std::string&)> on_stored, std::function<void(std::uint64_t)> on_disk_full);
  // Scanning of model files: a download whose first claim's repo is scanned (scan_policy, or its rule, is not
  // off) feeds its bytes to a scanner as the whole-file hash reads them, and its verdict is recorded before the
  // blob is committed. Set once at start-up; null (the default) scans nothing.
  void set_scanning(scan::ScanService* scanning) { scanning_ = scanning; }
  scan::ScanService* scanning() const { return scanning_; }
  // Scans a stored blob that has no verdict (stored before scanning, or by a download that did not scan) by
  // reading its chunks once, in order, as far as the format needs, and records the verdict. Null without
  // scanning, when the blob (or a chunk of it) is gone, or when the node stops meanwhile. `path` names the file,
  // for its format. Blocking.
  std::shared_ptr<const ScanVerdict> scan_stored(const BlobEntry& blob, const std::string& path);
  std::shared_ptr<const ScanVerdict> scan_stored(const std::string& etag, const std::string& path);

  const DownloadSettings& settings() const { return settings_; }
  DownloadCounters& counters() { return counters_; }
  // Prometheus families of the downloads and ingests (their failures are in the hub's upstream errors).
  void render_metrics(std::string& out);

 private:
  friend class Download;
  void finished(const Download& download);

  ChunkStore& store_;
  Index& index_;
  Upstream& upstream_;
  asio::thread_pool& workers_;
  asio::thread_pool hashers_;   // chunk hashes with idle CPU (see Download::chunk_filled)
  ElasticThreads connections_;  // one per upstream connection, while it runs
  DownloadSettings settings_;
  DownloadCounters counters_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Download>> running_;
  std::atomic<bool> stopping_{false};
  std::function<void(const std::string&)> on_stored_;
  std::function<void(std::uint64_t)> on_disk_full_;
  scan::ScanService* scanning_ = nullptr;
};

}  // namespace inferllama::cache
