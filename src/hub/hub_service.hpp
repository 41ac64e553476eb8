#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "cache/download.hpp"
#include "cache/evictor.hpp"
#include "hub/metadata_store.hpp"
#include "hub/pass_through.hpp"
#include "hub/reply.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/clock.hpp"
#include "inferllama/config.hpp"
#include "inferllama/hosted.hpp"
#include "inferllama/index.hpp"
#include "inferllama/metrics.hpp"
#include "inferllama/repo.hpp"
#include "inferllama/repo_policy.hpp"
#include "inferllama/upstream.hpp"

namespace inferllama::hub {

// Says that an answer names a branch at the last commit the node saw, because the Hub could not be asked.
inline constexpr const char* kStaleHeader = "X-InferLlama-Stale";

// Who is asking: the client's own credentials, checked by the Hub for gated and private repos.
struct Caller {
  std::string authorization;  // the Authorization header as sent, empty when anonymous
  std::string via;            // the Via header as sent: the nodes the request passed through, empty for none
};

// How this node names itself in the Via header of its upstream requests ("inferllama-" and 8 random
// bytes, new at each start): a request that arrives carrying it went round a loop of upstreams.
const std::string& via_name();
// A request that passed through more nodes than this is taken for a loop as well (of nodes restarted
// since they added their names).
inline constexpr std::size_t kMaxViaHops = 16;
// The status a node answers a request that went round a loop with (WebDAV's Loop Detected).
inline constexpr unsigned kLoopDetected = 508;
// The nodes a Via header names ("1.1 inferllama-" and 16 hex digits each), in order; anything else in it
// (another proxy's name, comments) is neither counted nor sent on.
std::vector<std::string_view> node_hops(std::string_view via);
// The Via an upstream request carries: the nodes of the caller's chain, then this node.
std::string via_for_upstream(const Caller& caller);

// A file at a commit: either stored (blob), on its way (download), passed through (pass), or only
// described (HEAD).
struct FileAnswer {
  std::string commit;
  std::string stale;  // why a branch name was answered from the last commit seen (upstream down), or ""
  FileEntry file;
  std::shared_ptr<const BlobEntry> blob;
  std::shared_ptr<cache::Download> download;
  std::shared_ptr<void> lease;    // keeps a stored blob from being evicted while it is served
  bool started_download = false;  // `download` was started for this answer (else it was already running)
  // The repo's rule is `pass`: the bytes are streamed from here to the client (PassThroughs) and kept nowhere.
  std::shared_ptr<const cache::BlobSource> pass;
  // The X-InferLlama-Scan value the scan policy gave this answer (src/http/scan_gate.*); "" when scanning is off
  // for the repo.
  std::string scan;
};

struct HubCounters {
  std::atomic<std::uint64_t> upstream_requests{0};
  std::atomic<std::uint64_t> upstream_transport_errors{0};  // no answer: connection, timeout, TLS
  std::atomic<std::uint64_t> upstream_server_errors{0};     // 5xx answers
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};
  // Metadata requests with parameters outside the stored allowlist: forwarded, their answers not kept.
  std::atomic<std::uint64_t> metadata_unstored{0};
};

// The node's view of the Hub: resolves revisions, keeps the metadata of cached commits, decides
// access, and finds or starts the download of a file. Blocking calls (everything but *_fast) must run
// on the blocking pool.
class HubService {
 public:
  // What the node remembers from the Hub expires by `clock`.
  HubService(const Config& config, Index& index, Upstream& upstream, cache::Downloads& downloads,
             cache::Evictor& evictor, const Clock& clock = monotonic_clock());
  // Another view of the same index (a mirror's source) shares its stored metadata and budget.
  HubService(const Config& config, Index& index, Upstream& upstream, cache::Downloads& downloads,
             cache::Evictor& evictor, MetadataStore& shared_metadata, const Clock& clock = monotonic_clock());

  // A stored file of a repo known to be public, answered from memory without blocking; nullopt when
  // the slow path has to decide.
  std::optional<FileAnswer> resolve_fast(const RepoId& repo, const std::string& rev, const std::string& path);

  // `/{repo}/resolve/{rev}/{path}`: a FileAnswer, or the Hub's refusal/redirect to relay.
  std::variant<FileAnswer, Reply> resolve(const RepoId& repo, const std::string& rev, const std::string& path,
                                          const Caller& caller, bool want_body);

  Reply info(const RepoId& repo, const std::optional<std::string>& rev, std::string_view query, const Caller& caller);
  Reply tree(const RepoId& repo, const std::string& rev, const std::string& path, std::string_view query,
             const Caller& caller, const std::string& public_base);
  Reply paths_info(const RepoId& repo, const std::string& rev, const std::string& content_type, const std::string& body,
                   const Caller& caller);
  Reply refs(const RepoId& repo, std::string_view query, const Caller& caller);

  // Any other route of the Hub's, passed on uncached: `target` (path and query, as the client encoded
  // them) with `method` (HEAD asks for the GET answer, whose head the client gets), `headers` and `body`,
  // and the caller's own credentials. The node's token goes only with an anonymous read of `content_of`
  // (the repo whose files, history or parquet listing the target reads) when that repo is public. The
  // answer keeps the Hub's status, content, error headers and validators.
  // A target naming a repo (`repo`) its rule denies is refused before anything goes upstream.
  Reply forward(const std::string& method, const std::string& target, const HeaderList& headers,
                const std::string& body, const Caller& caller, const std::optional<RepoId>& repo, bool reads_content,
                const std::string& public_base);

  // The node's own repos: answered from `hosted`, never asked upstream. Set once at start-up.
  void set_hosted(HostedRepos* hosted) { hosted_ = hosted; }
  // What the upstream throttles: the node's tokens it throttles are passed over while another is free. Set
  // once at start-up; without it every token is taken as free.
  void set_throttle(const UpstreamThrottle* throttle) { throttle_ = throttle; }
  bool hosts(const RepoId& repo) const { return hosted_ && hosted_->owns(repo); }

  // The operator's repo rules, asked on every route that names a Hub repo before anything is asked upstream
  // (none: every repo is allowed). Set once at start-up; the rules behind it change on a reload.
  void set_policy(const RepoPolicy* policy) { policy_ = policy; }
  // What the rules say of `repo` now; the node's own (hosted) repos are always allowed, as is every repo
  // without rules.
  RepoDecision decide(const RepoId& repo) const;
  // The answer to a request for `repo` that its rule refuses, counted by rule: a `deny` is the Hub's 404
  // RepoNotFound naming the rule; with `keeping` (pin, mirror, torrents: what keeps or seeds the repo's
  // files) a `pass` is a 403 too. nullopt when the repo may go on.
  std::optional<Reply> refused(const RepoId& repo, bool keeping = false);
  // Reads of files of pass repos.
  PassThroughs& passes() { return passes_; }

  HubCounters& counters() { return counters_; }
  cache::Downloads& downloads() { return downloads_; }
  cache::Evictor& evictor() { return evictor_; }
  MetadataStore& metadata() { return metadata_; }
  // Prometheus families of the Hub's requests and of the stored metadata (the downloads' failures
  // included in inferllama_upstream_errors_total).
  void render_metrics(std::string& out) const;

  // Whether the Hub says anyone may read the repo (neither private nor gated); remembered for access_ttl,
  // and while the Hub cannot be asked, the last answer. Blocking.
  // `caller`: whose request asks (its Via chain goes upstream with the question).
  bool is_public(const RepoId& repo, const Caller& caller = {});
  struct Visibility {
    bool open = false;      // neither private nor gated
    bool known = false;     // false: the Hub cannot be asked and the node never learnt it
    bool from_hub = false;  // the Hub said so within access_ttl (not a remembered answer)
  };
  Visibility visibility(const RepoId& repo, const Caller& caller = {});
  // What the Hub said last, as the index keeps it (nullopt: never asked). Blocking.
  std::optional<RepoVisibility> recorded_visibility(const RepoId& repo);

  // How a branch or tag name is resolved: as every route resolves it (what the node remembers, within
  // ref_ttl), or by asking the Hub now (a prefetch looking for a moved branch).
  enum class RefLookup { remembered, ask_hub };
  // The commit `rev` names, or the Hub's refusal; `stale` (if given) says why it is the last commit seen
  // rather than the Hub's answer, or is empty. Blocking.
  std::variant<std::string, Reply> commit_of(const RepoId& repo, const std::string& rev, std::string* stale = nullptr,
                                             RefLookup lookup = RefLookup::remembered);

  // Forgets what `rev` of `repo` resolved to (a branch force-pushed on the Hub), and the default branch's
  // unnamed resolution, which may be the same branch: the next request asks the Hub at once. The commit
  // stays the last one seen, answered while the Hub cannot be asked. Returns the commit `rev` named,
  // nullopt when the node never resolved it. Blocking.
  std::optional<std::string> forget_ref(const RepoId& repo, const std::string& rev);

  // Every file of a public repo at a commit, from the Hub's recursive tree (stored like any tree answer,
  // so a cached commit lists without the Hub). Blocking.
  struct SnapshotEntry {
    std::string path;
    FileEntry file;
  };
  // `stored_only`: from the tree pages the node keeps, never asking upstream (a 404 when one is missing).
  std::variant<std::vector<SnapshotEntry>, Reply> snapshot_files(const RepoId& repo, const std::string& commit,
                                                                 bool stored_only = false);

  // A snapshot mirrored from another node verified: remember `rev` as naming `commit`, and a repo the
  // node knew nothing about as public (the source offers torrents of public repos only), so the
  // snapshot is served while the Hub is away.
  void adopt_mirrored(const RepoId& repo, const std::string& rev, const std::string& commit);
  // Treats the repo as public for a while without asking and without writing it down: for a view of
  // another node's answers, whose word must never become this node's record of the Hub's.
  void assume_public_for(const RepoId& repo, std::chrono::seconds how_long);

  // Pins or unpins the snapshot `rev` names (pinned snapshots are never evicted). A snapshot of which
  // nothing is cached is not pinned (409: pull it first); a Reply too when the revision cannot be resolved.
  struct PinOutcome {
    std::string commit;
    bool changed = false;          // false: it was pinned (or unpinned) already
    std::size_t cached_files = 0;  // stored blobs among the snapshot's files the node knows (one per content)
  };
  std::variant<PinOutcome, Reply> pin(const RepoId& repo, const std::string& rev, bool pinned);

 private:
  template <class T>
  struct Memo {
    T value;
    SystemTime expires;
  };

  // The Authorization an upstream call goes with: the caller's own, or one of the node's tokens picked for
  // a public repo (`node_token_for` its key), which call() trades for another of them when the upstream
  // throttles it.
  struct Credentials {
    std::string authorization;
    std::string node_token_for;
  };

  std::string api_url(const RepoId& repo) const;
  std::string resolve_url(const RepoId& repo, const std::string& rev, const std::string& path) const;
  std::variant<std::vector<SnapshotEntry>, Reply> stored_siblings(const RepoId& repo, const std::string& commit);
  // A tree page of a public commit as the node keeps it; nullopt when it keeps none for `query`.
  std::optional<Reply> stored_tree_page(const RepoId& repo, const std::string& sha, const std::string& path,
                                        std::string_view query, const std::string& public_base);
  // One upstream request on behalf of `caller`, whose Via chain it extends. With one of the node's tokens that
  // the upstream throttles, it goes again with another that is free, which `credentials` then names.
  UpstreamResponse call(const std::string& method, const std::string& url, const Caller& caller,
                        Credentials& credentials, const HeaderList& extra = {}, const std::string& body = {});
  UpstreamResponse call_once(const std::string& method, const std::string& url, const Caller& caller,
                             const std::string& authorization, const HeaderList& extra, const std::string& body);
  // Credentials for an upstream call: the caller's; the node's token only for public repos.
  Credentials credentials_for(const Caller& caller, const RepoId& repo, bool is_public) const;
  // One of the node's tokens for requests about `repo`: by rendezvous hashing the same one while it is free,
  // else the next free one by rank, else the one free soonest; none when the node has no token.
  Credentials node_credentials(const RepoId& repo) const;
  std::string node_authorization(const std::string& repo_key) const;
  void adopt_node_tokens();
  bool access_granted(const RepoId& repo, const Caller& caller);
  // While the Hub cannot be asked: did it let this caller in within `offline_grace`?
  bool granted_within_grace(const RepoId& repo, const Caller& caller);
  // The commit a revision names, from what the node saw last, however old; nullopt if never seen.
  std::optional<std::string> last_known_commit(const RepoId& repo, const std::string& rev);
  // Why `rev` is answered with `commit`, the last commit seen, when `failure` left the node to do so.
  std::string stale_note(const std::string& rev, const std::string& commit, const UpstreamResponse& failure) const;
  std::variant<FileAnswer, Reply> stored_during_outage(const RepoId& repo, const std::string& rev,
                                                       const std::string& path, const Caller& caller, bool open,
                                                       const UpstreamResponse& failure);
  void remember_access(const RepoId& repo, const Caller& caller);
  void record_visibility(const RepoId& repo, RepoVisibility visibility);
  // The commit of `rev`; when the Hub cannot be asked, the last one seen, with `stale` saying so.
  std::variant<std::string, Reply> resolve_commit(const RepoId& repo, const std::string& rev, const Caller& caller,
                                                  Credentials& credentials, std::string& stale,
                                                  RefLookup lookup = RefLookup::remembered);
  std::optional<std::string> fresh_ref(const RepoId& repo, const std::string& rev);
  void store_ref(const RepoId& repo, const std::string& rev, const std::string& commit);
  std::optional<FileAnswer> stored_file(const RepoId& repo, const std::string& commit, const std::string& path);
  // A file of a hosted repo: stored, or the Hub's 404 in its words.
  std::variant<FileAnswer, Reply> hosted_file(const RepoId& repo, const std::string& rev, const std::string& path);
  // What a relayed answer is: the node's metadata routes' (Xet markers stripped), or a passed-through
  // route's, with the validators and caching headers: the API's JSON (Xet markers stripped) or content
  // (a /raw/ file, as the upstream sent it).
  enum class Relayed { metadata, api, content };
  Reply relay(const UpstreamResponse& response, const std::string& public_base = {},
              Relayed what = Relayed::metadata) const;
  // The refusal of a repo by `decision`, counted by its rule.
  Reply refusal(const RepoDecision& decision, unsigned status, const std::string& message);
  Reply denied(const RepoDecision& decision);

  const Config& config_;
  const Clock& clock_;
  Index& index_;
  Upstream& upstream_;
  cache::Downloads& downloads_;
  cache::Evictor& evictor_;
  HubCounters counters_;
  HostedRepos* hosted_ = nullptr;
  const RepoPolicy* policy_ = nullptr;
  // Requests refused by each rule, labelled by the rule's text: the rules are the operator's, so are the labels.
  metrics::Family<metrics::Counter> refusals_;
  PassThroughs passes_;
  const UpstreamThrottle* throttle_ = nullptr;
  // The node's tokens (config.upstream_tokens) as "Bearer TOKEN", and the names rendezvous hashing ranks
  // them by (their SHA-256: a repo keeps its token when the list is reordered).
  std::vector<std::string> node_authorizations_;
  std::vector<std::string> node_token_names_;
  std::unique_ptr<MetadataStore> own_metadata_;  // unless shared
  MetadataStore& metadata_;

  // Passed-through requests in flight, at most kMaxForwarding (half of the node's blocking threads).
  static constexpr int kMaxForwarding = 32;
  std::atomic<int> forwarding_{0};

  std::mutex mutex_;
  std::unordered_map<std::string, Memo<std::string>> refs_;           // repo key + '\0' + rev -> commit
  std::unordered_map<std::string, Memo<RepoVisibility>> visibility_;  // repo key -> visibility
  std::unordered_map<std::string, SystemTime> access_;  // repo key + '\0' + credential hash -> grant expiry
  std::unordered_map<std::string, FileAnswer> files_;   // repo key@commit + '\0' + path -> stored file
};

}  // namespace inferllama::hub
