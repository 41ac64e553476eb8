#include "torrent/mirror.hpp"

#include <utility>  // before Asio (via libtorrent): Boost 1.74's awaitable.hpp needs std::exchange

#include <spdlog/spdlog.h>
#include <libtorrent/bdecode.hpp>
#include <libtorrent/bencode.hpp>
#include <libtorrent/entry.hpp>

#include <iterator>

#include "cache/download_wait.hpp"
#include "hub/snapshot_fetch.hpp"
#include "inferllama/cluster.hpp"
#include "inferllama/network.hpp"
#include "torrent/metainfo.hpp"
#include "upstream/curl_upstream.hpp"
#include "util/url.hpp"

namespace inferllama::torrent {
namespace {

using hub::error_reply;

// The source's .torrent with only the trackers and web seeds on the source node's own host (its HTTP
// origin, or its UDP tracker): what a hostile or confused source writes there never makes this node
// contact other hosts. The source node's own announce and web seed stand in when none is left.
std::string with_links_of(const std::string& metainfo, const std::string& from, const RepoId& repo,
                          const std::string& commit) {
  lt::error_code ec;
  const lt::bdecode_node root =
      lt::bdecode(lt::span<const char>(metainfo.data(), static_cast<std::ptrdiff_t>(metainfo.size())), ec);
  if (ec || root.type() != lt::bdecode_node::dict_t) return metainfo;  // parse_torrent accepted it: not so
  const std::string host(url::host_of(from));
  auto on_source = [&](lt::string_view url) {
    return url.starts_with(from + "/") || url.starts_with("udp://" + host + ":");
  };
  // parse_torrent accepted only canonical bencoding, so the info dict encodes back to its own bytes.
  lt::entry out(root);
  lt::entry::list_type tiers;
  if (const lt::bdecode_node list = root.dict_find_list("announce-list")) {
    for (int i = 0; i < list.list_size(); ++i) {
      const lt::bdecode_node tier = list.list_at(i);
      if (tier.type() != lt::bdecode_node::list_t) continue;
      for (int k = 0; k < tier.list_size(); ++k) {
        const lt::bdecode_node url = tier.list_at(k);
        if (url.type() == lt::bdecode_node::string_t && on_source(url.string_value())) {
          tiers.emplace_back(lt::entry::list_type{lt::entry(url.string_value())});
        }
      }
    }
  }
  if (tiers.empty()) tiers.emplace_back(lt::entry::list_type{lt::entry(from + "/announce")});
  lt::entry::list_type seeds;
  if (const lt::bdecode_node list = root.dict_find_list("url-list")) {
    for (int i = 0; i < list.list_size(); ++i) {
      const lt::bdecode_node url = list.list_at(i);
      if (url.type() == lt::bdecode_node::string_t && url.string_value().starts_with(from + "/")) {
        seeds.emplace_back(url.string_value());
      }
    }
  }
  if (seeds.empty()) {
    seeds.emplace_back(from + "/api/" + std::string(repo.api_segment()) + "/" + repo.name + "/webseed/" + commit + "/");
  }
  out["announce"] = tiers.front().list().front();
  out["announce-list"] = std::move(tiers);
  out["url-list"] = std::move(seeds);
  std::string bytes;
  lt::bencode(std::back_inserter(bytes), out);
  return bytes;
}

// What is wrong with `from` as the base URL of a node: http(s), a host, and nothing that would make the
// node send credentials or reach something other than a node's API root.
std::optional<std::string> source_url_problem(std::string_view from) {
  const bool https = from.starts_with("https://");
  if (!https && !from.starts_with("http://")) return "the source must be an http:// or https:// URL";
  for (char ch : from) {
    if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f || ch == '\\')
      return "the source URL must not contain spaces, control characters or backslashes";
  }
  if (from.find_first_of("?#") != std::string_view::npos) return "the source URL must not have a query or fragment";
  const std::string_view rest = from.substr(https ? 8 : 7);
  const std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.find('@') != std::string_view::npos) return "the source URL must not carry credentials (user@host)";
  if (authority.empty() || authority.front() == ':') return "the source URL has no host";
  return std::nullopt;
}

}  // namespace

Mirror::Mirror(Parts parts)
    : parts_(std::move(parts)),
      folder_(parts_.config.data_dir / "mirror"),
      own_network_(parts_.network ? nullptr
                                  : upstream::make_curl_upstream(UpstreamOptions{parts_.config.upstream_timeout})),
      network_(parts_.network ? *parts_.network : *own_network_) {
  std::filesystem::create_directories(folder_);
  // Files that arrived over BitTorrent enter the store through the node's own downloads, read from this
  // folder: chunked, hashed and checked against the Hub's etag before one index write makes them visible.
  local_files_ = upstream::make_local_file_upstream(folder_);
  FetcherOptions fetcher;
  // The seed's host at any free port; every interface when the node does not seed (bt_listen empty).
  fetcher.listen = HostPort{HostPort::parse(parts_.config.bt_listen).value_or(HostPort{"0.0.0.0"}).host, 0}.str();
  fetcher.dht = parts_.config.bt_dht;
  fetcher.lsd = parts_.config.bt_lsd;
  fetcher_ = std::make_unique<TorrentFetcher>(fetcher);
}

Mirror::~Mirror() = default;

hub::HubService& Mirror::source_hub(const std::string& from) {
  auto& [config, hub] = sources_[from];
  if (!hub) {
    // The source node answers the Hub's API for what it holds: the same HubService, another upstream,
    // writing the trees it lists into this node's index under the same keys.
    config = std::make_unique<Config>(parts_.config);
    config->upstream = from;
    config->upstream_tokens.clear();  // the node's Hub tokens never go to another node
    hub = std::make_unique<hub::HubService>(*config, parts_.index, network_, parts_.downloads, parts_.evictor,
                                            parts_.hub.metadata());
  }
  return *hub;
}

std::optional<hub::Reply> Mirror::refuse_source(const std::string& from) {
  if (auto problem = source_url_problem(from)) return error_reply(400, *problem);
  // Redirects are never followed (fetch does not), and an answer that is one is refused: the node asks
  // only the host it was given, and only once that host has shown it is a node.
  auto probe = network_.fetch(UpstreamRequest{"GET", from + "/healthz", {}, {}});
  if (!probe.error.empty()) return error_reply(502, "the source node " + from + " cannot be reached: " + probe.error);
  if (probe.status >= 300 && probe.status < 400) {
    return error_reply(502, "the source " + from + " answered with a redirect (HTTP " + std::to_string(probe.status) +
                                "): mirror sources are named by their own URL, redirects are refused");
  }
  if (probe.status != 200 || !probe.header(cluster::kNodeHeaderLower)) {
    return error_reply(502, "the source " + from + " is not an InferLlama node (its /healthz answered HTTP " +
                                std::to_string(probe.status) + " without " + cluster::kNodeHeader + ")");
  }
  return std::nullopt;
}

std::variant<MirrorOutcome, hub::Reply> Mirror::mirror(const RepoId& repo, const std::string& rev,
                                                       const std::string& from) {
  std::lock_guard one_at_a_time(mirror_mutex_);
  if (!is_valid_repo_name(repo.name)) return error_reply(400, "invalid repository name");
  // The operator's rules before anything: a repo they deny or pass through is never kept.
  if (auto refused = parts_.hub.refused(repo, /*keeping=*/true)) return *refused;
  // 0. The Hub's word first: a repo it calls gated or private is never mirrored, whatever a source says.
  const auto visibility = parts_.hub.visibility(repo);
  if (visibility.known && !visibility.open) {
    return error_reply(403, repo.name + " is gated or private on the Hub: only public repositories are mirrored");
  }
  if (auto refused = refuse_source(from)) return *refused;

  // 1. The source's torrent of the snapshot; it names the commit.
  const std::string torrent_url =
      from + "/api/" + std::string(repo.api_segment()) + "/" + repo.name + "/torrent/" + url::encode(rev);
  auto answer = network_.fetch(UpstreamRequest{"GET", torrent_url, {}, {}});
  if (!answer.error.empty()) return error_reply(502, "the source node " + from + " cannot be reached: " + answer.error);
  if (answer.status >= 300 && answer.status < 400) {
    return error_reply(502, "the source node answered a redirect (HTTP " + std::to_string(answer.status) +
                                ") for the torrent of " + repo.name + "@" + rev + ": redirects are refused");
  }
  if (answer.status != 200) {
    std::string why(answer.header("x-error-message").value_or(answer.body.substr(0, 200)));
    return error_reply(502, "the source node answered " + std::to_string(answer.status) + " for the torrent of " +
                                repo.name + "@" + rev + ": " + why);
  }
  const std::string commit(answer.header("x-repo-commit").value_or(""));
  if (!is_commit_sha(commit)) return error_reply(502, "the source node's torrent answer names no commit");
  auto parsed = parse_torrent(answer.body);
  if (auto* bad = std::get_if<TorrentError>(&parsed)) {
    return error_reply(502, "the source node's torrent is not acceptable: " + bad->message);
  }
  const ParsedTorrent& source = std::get<ParsedTorrent>(parsed);

  // 2. Which files the commit holds, with their Hub etags: the Hub's tree when it answers (and its commit
  // must be the source's), else the source's tree (stored here too, so the snapshot lists while the Hub
  // is away). The branch moves to the commit only once every file verified.
  std::variant<std::vector<hub::HubService::SnapshotEntry>, hub::Reply> listed;
  if (visibility.from_hub) {
    std::string stale;
    auto hub_commit = parts_.hub.commit_of(repo, rev, &stale);
    if (auto* refused = std::get_if<hub::Reply>(&hub_commit)) return *refused;
    if (stale.empty() && std::get<std::string>(hub_commit) != commit) {
      return error_reply(409, "the source holds " + commit + " but the Hub names " + std::get<std::string>(hub_commit) +
                                  " for " + rev + "; mirror again once the source has it");
    }
    listed = parts_.hub.snapshot_files(repo, commit);
  } else {
    hub::HubService& source_api = source_hub(from);
    source_api.assume_public_for(repo, std::chrono::minutes(1));  // it offered the torrent: public for it
    listed = source_api.snapshot_files(repo, commit);
  }
  if (auto* refused = std::get_if<hub::Reply>(&listed)) return *refused;
  const auto& files = std::get<std::vector<hub::HubService::SnapshotEntry>>(listed);
  std::map<std::string, std::uint64_t> in_torrent;
  for (const auto& f : source.files)
    if (!f.pad) in_torrent[f.path] = f.size;
  std::map<std::string, std::uint64_t> in_tree;
  for (const auto& f : files) in_tree[f.path] = f.file.size;
  if (in_torrent != in_tree) {
    return error_reply(502, "the source node's torrent of " + repo.name + "@" + commit +
                                " does not list the files of the commit's tree");
  }

  MirrorOutcome outcome;
  outcome.commit = commit;
  outcome.files = files.size();
  std::vector<const hub::HubService::SnapshotEntry*> missing;
  std::vector<std::string> held;  // stored already: not fetched again
  for (const auto& f : files) {
    // A blob held for another, restricted repo is not this repo's until the source delivered its bytes too.
    if (hub::stored_for(parts_.index, repo, f.file.etag)) {
      held.push_back(f.path);
    } else {
      missing.push_back(&f);
    }
  }

  // 3. The swarm: the source's seed and every other peer its tracker knows, and its web seed.
  const std::filesystem::path landing = folder_ / source.info_hash_v1.hex();
  if (!missing.empty()) {
    FetchRequest request;
    request.metainfo = with_links_of(answer.body, from, repo, commit);
    request.skip = std::move(held);
    request.directory = landing;
    request.timeout = std::chrono::hours(6);
    std::uint64_t last_logged = 0;
    request.on_progress = [&](const FetchProgress& p) {
      if (p.done - last_logged >= 256 * kMiB || p.done == p.total) {
        spdlog::info("mirror {}@{}: {} of {} bytes from {} peers", repo.key(), commit, p.done, p.total, p.peers);
        last_logged = p.done;
      }
    };
    auto fetched = fetcher_->fetch(request, cancel_.get_token());
    if (!fetched.error.empty()) {
      return error_reply(502, "fetching " + repo.name + "@" + commit + " from the swarm failed: " + fetched.error);
    }
    outcome.fetched_bytes = fetched.bytes;
  }

  // 4. Each file through the ingest: a file whose bytes do not hash to the Hub's etag is refused. Blobs are
  // stored without their paths, so a refused snapshot lists none of its files.
  std::vector<std::shared_ptr<cache::Download>> ingests;
  std::vector<const hub::HubService::SnapshotEntry*> ingested;
  for (const auto* f : missing) {
    cache::BlobSource from_disk;
    from_disk.url = (landing / (source.single_file ? source.name : source.name + "/" + f->path)).string();
    from_disk.etag = f->file.etag;
    from_disk.lfs = f->file.lfs;
    from_disk.size = f->file.size;
    from_disk.upstream = local_files_.get();
    // Shared: the Hub (or, while it is away, the node's record) calls the repo public.
    if (auto download = parts_.downloads.get_or_start(from_disk, cache::FileClaim{repo, commit, "", true})) {
      ingests.push_back(std::move(download));
      ingested.push_back(f);
    }
  }
  cache::wait_until_done(ingests);
  std::string failures;
  for (std::size_t i = 0; i < ingests.size(); ++i) {
    if (ingests[i]->state() == cache::Download::State::failed)
      failures += (failures.empty() ? "" : "; ") + ingested[i]->path + ": " + ingests[i]->error();
  }
  std::error_code ignored;
  std::filesystem::remove_all(landing, ignored);
  if (!failures.empty()) return error_reply(502, "mirrored files failed verification: " + failures);
  for (const auto& f : files) {
    auto blob = parts_.index.get_blob(f.file.etag);
    if (!blob || !parts_.index.blob_serves(f.file.etag, repo)) {
      return error_reply(503, f.path + " is not stored (the node is stopping?)");
    }
    if (blob->size != f.file.size) {
      return error_reply(502, "the file list of " + repo.name + "@" + commit + " claims " +
                                  std::to_string(f.file.size) + " bytes for " + f.path + ", whose bytes have " +
                                  std::to_string(blob->size));
    }
  }
  outcome.fetched_files = missing.size();
  for (const auto& f : files) parts_.index.put_file(repo, commit, f.path, f.file);
  parts_.hub.adopt_mirrored(repo, rev, commit);

  // 5. Seed it here too.
  auto seeded = parts_.torrents.get(SnapshotTorrents::Request{repo, commit, "", Format::v1, false});
  if (auto* refused = std::get_if<hub::Reply>(&seeded)) return *refused;
  const auto& own = std::get<SnapshotTorrent>(seeded);
  outcome.info_hash = own.torrent->swarm_hash().hex();
  outcome.same_swarm = own.torrent->info_hash_v1 == source.info_hash_v1;
  if (!outcome.same_swarm) {
    spdlog::warn("mirror {}@{}: this node's torrent differs from the source's ({} vs {}): is its chunk_size different?",
                 repo.key(), commit, outcome.info_hash, source.info_hash_v1.hex());
  }
  spdlog::info("mirrored {}@{} from {}: {} files, {} fetched ({} bytes)", repo.key(), commit, from, outcome.files,
               outcome.fetched_files, outcome.fetched_bytes);
  return outcome;
}

std::vector<RepoRef> Mirror::synced_mirrors() const {
  std::vector<RepoRef> specs;
  for (const auto& item : split_config_list(parts_.config.mirrors)) {
    auto spec = parse_repo_ref(item);
    if (!spec) throw ConfigError("invalid mirrors entry \"" + item + "\": expected REPO[@REV]");
    specs.push_back(std::move(*spec));
  }
  return specs;
}

void Mirror::sync(const std::vector<RepoRef>& specs) {
  std::string from = parts_.config.mirror_from.empty() ? parts_.config.upstream : parts_.config.mirror_from;
  while (from.ends_with('/')) from.pop_back();  // URLs are built by appending "/api/..."
  for (const auto& spec : specs) {
    if (cancel_.stop_requested()) return;
    auto outcome = mirror(spec.repo, spec.rev, from);
    if (auto* refused = std::get_if<hub::Reply>(&outcome)) {
      spdlog::warn("mirror {}@{}: {}", spec.repo.key(), spec.rev, refused->body);
    }
  }
}

void Mirror::cancel() {
  cancel_.request_stop();
}

}  // namespace inferllama::torrent
