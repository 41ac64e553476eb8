#include "torrent/snapshot_torrents.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "hub/snapshot_fetch.hpp"
#include "torrent/metainfo.hpp"
#include "util/url.hpp"

namespace inferllama::torrent {
namespace {

using Json = nlohmann::json;

using hub::error_reply;

const char* format_name(Format format) {
  switch (format) {
    case Format::hybrid:
      return "hybrid";
    case Format::v2:
      return "v2";
    case Format::v1:
      break;
  }
  return "v1";
}

// Records written before v2 torrents existed name "v1" or "hybrid"; anything unknown is the default.
Format format_named(const std::string& name) {
  if (name == "hybrid") return Format::hybrid;
  if (name == "v2") return Format::v2;
  return Format::v1;
}

std::string last_segment(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string record_key(const RepoId& repo, const std::string& commit) {
  return "torrents|" + repo.key() + '@' + commit;
}

}  // namespace

SnapshotTorrents::SnapshotTorrents(const ChunkStore& store, Index& index, hub::HubService& hub, Hooks hooks)
    : store_(store), index_(index), hub_(hub), hooks_(std::move(hooks)) {}

std::string SnapshotTorrents::key(const RepoId& repo, const std::string& commit, const std::string& path,
                                  Format format) {
  return repo.key() + '@' + commit + '|' + format_name(format) + '|' + path;
}

std::vector<std::string> SnapshotTorrents::damaged_files_beside(const Sha256& chunk) {
  std::map<std::string, const BlobEntry*> suspects;  // etag -> blob, of every torrent holding the chunk
  std::vector<std::shared_ptr<const std::vector<std::pair<std::string, BlobEntry>>>> held;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, torrent] : seeded_) {
      const auto& contents = *torrent.contents;
      const bool holds = std::any_of(contents.begin(), contents.end(), [&](const auto& file) {
        return std::any_of(file.second.chunks.begin(), file.second.chunks.end(),
                           [&](const auto& c) { return c.id == chunk; });
      });
      if (!holds) continue;
      held.push_back(torrent.contents);  // keeps the blobs alive once the lock is gone
      for (const auto& [path, blob] : contents) suspects.emplace(blob.etag, &blob);
    }
  }
  std::vector<std::string> damaged;
  for (const auto& [etag, blob] : suspects) {
    const bool gone = std::any_of(blob->chunks.begin(), blob->chunks.end(),
                                  [&](const auto& c) { return store_.chunk_damaged(c.id, c.size); });
    if (gone) damaged.push_back(etag);
  }
  return damaged;
}

std::variant<SnapshotTorrent, hub::Reply> SnapshotTorrents::get(const Request& request) {
  // A repo the operator's rules deny or pass through has no torrent: nothing of it is kept to seed.
  if (auto refused = hub_.refused(request.repo, /*keeping=*/true)) return *refused;
  auto resolved = hub_.commit_of(request.repo, request.rev);
  if (auto* refused = std::get_if<hub::Reply>(&resolved)) return *refused;
  const std::string commit = std::get<std::string>(resolved);
  if (!hub_.is_public(request.repo)) {
    // A swarm cannot ask the Hub who may read a file: gated and private repos stay off BitTorrent.
    return error_reply(
        403, "torrents are offered for public repositories only; " + request.repo.name + " is gated or private");
  }
  {
    std::lock_guard lock(mutex_);
    if (auto it = seeded_.find(key(request.repo, commit, request.path, request.format)); it != seeded_.end())
      return it->second;
  }
  auto listed = hub_.snapshot_files(request.repo, commit);
  if (auto* refused = std::get_if<hub::Reply>(&listed)) return *refused;
  Files files = std::move(std::get<Files>(listed));
  if (!request.path.empty()) {
    auto it = std::find_if(files.begin(), files.end(), [&](const auto& f) { return f.path == request.path; });
    if (it == files.end()) {
      return error_reply(404, request.path + " does not exist at " + commit + " of " + request.repo.name,
                         "EntryNotFound");
    }
    files = Files{*it};
  }
  std::uint64_t total = 0;
  for (const auto& f : files) total += f.file.size;
  if (total == 0) return error_reply(404, "nothing to share: every file of this torrent is empty", "EntryNotFound");

  auto stored = complete(request.repo, commit, files, request.wait);
  if (auto* refused = std::get_if<hub::Reply>(&stored)) return *refused;
  return build(request.repo, commit, request.path, request.format, files, std::move(std::get<Stored>(stored)));
}

std::variant<SnapshotTorrents::Stored, hub::Reply> SnapshotTorrents::complete(const RepoId& repo,
                                                                              const std::string& commit,
                                                                              const Files& files, bool wait) {
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!hub::stored_for(index_, repo, files[i].file.etag)) missing.push_back(i);
  }
  if (!missing.empty() && !wait) {
    return error_reply(409, std::to_string(missing.size()) + " of the " + std::to_string(files.size()) +
                                " files are not cached yet (first: " + files[missing.front()].path +
                                "); ask without wait=false and the node fetches them first");
  }
  // Every missing file is fetched at once through the cache, as if a client had asked for it.
  auto fetched = hub::fetch_snapshot(hub_, index_, repo, commit, files, files.size());
  if (!fetched.failures.empty()) {
    auto& first = fetched.failures.front();
    if (first.refused) return std::move(*first.refused);
    return error_reply(502, "fetching " + first.path + " for the torrent failed: " + first.error);
  }
  // Leases keep every file in the store until the torrent is seeded; from then on eviction stops it first.
  Stored stored;
  stored.blobs.reserve(files.size());
  for (const auto& f : files) {
    auto lease = hub_.evictor().lease(f.file.etag);
    auto blob = index_.get_blob(f.file.etag);
    if (!lease || !blob || !index_.blob_serves(f.file.etag, repo)) {
      return error_reply(503, f.path +
                                  " was evicted while the torrent was being built (is the disk budget smaller "
                                  "than the snapshot?); retry");
    }
    if (blob->size != f.file.size) {
      return error_reply(502, "the upstream tree claims " + std::to_string(f.file.size) + " bytes for " + f.path +
                                  ", whose bytes have " + std::to_string(blob->size));
    }
    index_.put_file(repo, commit, f.path, f.file);
    stored.blobs.push_back(std::move(*blob));
    stored.leases.push_back(std::move(lease));
  }
  return stored;
}

BuildOptions SnapshotTorrents::options_for(const SnapshotTorrent& torrent, const NodeLinks* links) const {
  BuildOptions options;
  options.read_chunk = [this](const Sha256& chunk) -> std::optional<std::vector<std::uint8_t>> {
    std::ifstream in(store_.chunk_path(chunk), std::ios::binary);
    if (!in) return std::nullopt;
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
  };
  options.format = torrent.format;
  options.single_file = !torrent.path.empty();
  options.name = last_segment(options.single_file ? torrent.path : torrent.repo.name);
  if (!links) return options;
  if (links->passkey.empty()) {
    options.trackers.push_back(links->base + "/announce");
    if (!links->udp_announce.empty()) options.trackers.push_back(links->udp_announce);
  } else {
    options.trackers.push_back(links->base + "/announce/" + links->passkey);  // UDP cannot carry a passkey
  }
  const std::string& repo = torrent.repo.name;
  const std::string seed_base = links->passkey.empty() ? links->base : links->base + "/p/" + links->passkey;
  if (options.single_file) {
    // A single-file web seed URL is used as it is (BEP 19): the file's own resolve URL.
    options.web_seeds.push_back(seed_base + "/" + std::string(torrent.repo.url_prefix()) + repo + "/resolve/" +
                                torrent.commit + "/" + url::encode(torrent.path, true));
  } else {
    // Clients append "<name>/<path>" (and ".pad/N" for padding) to a URL that ends in '/'.
    options.web_seeds.push_back(seed_base + "/api/" + std::string(torrent.repo.api_segment()) + "/" + repo +
                                "/webseed/" + torrent.commit + "/");
  }
  options.comment = torrent.repo.name + " at " + torrent.commit + (options.single_file ? ": " + torrent.path : "");
  return options;
}

std::variant<SnapshotTorrent, hub::Reply> SnapshotTorrents::build(const RepoId& repo, const std::string& commit,
                                                                  const std::string& path, Format format,
                                                                  const Files& files, Stored stored) {
  auto contents = std::make_shared<std::vector<std::pair<std::string, BlobEntry>>>();
  for (std::size_t i = 0; i < files.size(); ++i) contents->emplace_back(files[i].path, std::move(stored.blobs[i]));
  SnapshotTorrent torrent{repo, commit, path, format, nullptr, contents};
  std::vector<SnapshotFile> inputs;
  for (const auto& [file_path, blob] : *contents) inputs.push_back(SnapshotFile{file_path, &blob});
  auto built = build_torrent(inputs, options_for(torrent, nullptr));
  if (auto* error = std::get_if<TorrentError>(&built))
    return error_reply(500, "cannot build the torrent: " + error->message);
  torrent.torrent = std::make_shared<const Torrent>(std::move(std::get<Torrent>(built)));

  const std::string k = key(repo, commit, path, format);
  {
    // Registered and seeded as one step, so that a release() cannot fall between the two.
    std::lock_guard seeding(seeding_mutex_);
    {
      std::lock_guard lock(mutex_);
      if (auto it = seeded_.find(k); it != seeded_.end()) return it->second;  // built meanwhile by another caller
      seeded_.emplace(k, torrent);
      for (const auto& [file_path, blob] : *contents) by_etag_[blob.etag].insert(k);
    }
    hooks_.seed(torrent);
  }
  remember(torrent);
  spdlog::info("seeding {} at {}{} ({}, info-hash {})", repo.key(), commit, path.empty() ? "" : " " + path,
               format_name(format), torrent.torrent->swarm_hash().hex());
  return torrent;
}

void SnapshotTorrents::remember(const SnapshotTorrent& torrent) {
  std::lock_guard lock(mutex_);
  const std::string record = record_key(torrent.repo, torrent.commit);
  auto stored = Json::parse(index_.get_meta(record).value_or("[]"), nullptr, false);
  if (!stored.is_array()) stored = Json::array();
  Json entry{{"path", torrent.path}, {"format", format_name(torrent.format)}};
  for (const auto& e : stored)
    if (e == entry) return;
  stored.push_back(entry);
  index_.put_meta(record, stored.dump());
}

std::set<std::pair<std::string, std::string>> SnapshotTorrents::cached_snapshots() {
  std::set<std::pair<std::string, std::string>> snapshots;
  index_.list_files([&](const Index::ListedFile& f) {
    if (f.cached) snapshots.emplace(f.repo_key, f.commit);
  });
  return snapshots;
}

void SnapshotTorrents::restore() {
  const auto snapshots = cached_snapshots();
  std::size_t restored = 0;
  for (const auto& [repo_key, commit] : snapshots) {
    auto record = index_.get_meta("torrents|" + repo_key + '@' + commit);
    auto repo = parse_repo_key(repo_key);
    if (!record || !repo || hub_.decide(*repo).access != RepoAccess::allow) continue;
    // Only what the node last knew to be public; the Hub is asked again when a client wants the torrent.
    if (hub_.recorded_visibility(*repo) != RepoVisibility::open) continue;
    auto entries = Json::parse(*record, nullptr, false);
    if (!entries.is_array()) continue;
    auto listed = hub_.snapshot_files(*repo, commit);
    if (!std::holds_alternative<Files>(listed)) continue;
    const Files& all = std::get<Files>(listed);
    for (const auto& e : entries) {
      if (!e.is_object()) continue;
      const std::string path = e.value("path", "");
      const Format format = format_named(e.value("format", ""));
      Files files;
      for (const auto& f : all)
        if (path.empty() || f.path == path) files.push_back(f);
      if (files.empty()) continue;
      // Nothing is fetched at start-up: a torrent comes back only if all of its files are still stored.
      auto stored = complete(*repo, commit, files, false);
      if (!std::holds_alternative<Stored>(stored)) continue;
      if (std::holds_alternative<SnapshotTorrent>(
              build(*repo, commit, path, format, files, std::move(std::get<Stored>(stored)))))
        ++restored;
    }
  }
  if (restored) spdlog::info("seeding {} torrents again from the index", restored);
}

std::size_t SnapshotTorrents::seed_cached() {
  const auto snapshots = cached_snapshots();
  std::size_t started = 0;
  for (const auto& [repo_key, commit] : snapshots) {
    auto repo = parse_repo_key(repo_key);
    // Only what the node last knew to be public (the visibility check stops one that stopped being so), and
    // what the operator's rules let it keep.
    if (!repo || hub_.decide(*repo).access != RepoAccess::allow ||
        hub_.recorded_visibility(*repo) != RepoVisibility::open)
      continue;
    {
      std::lock_guard lock(mutex_);
      if (seeded_.contains(key(*repo, commit, "", Format::v1))) continue;
    }
    auto listed = hub_.snapshot_files(*repo, commit, /*stored_only=*/true);
    if (!std::holds_alternative<Files>(listed)) continue;
    const Files& files = std::get<Files>(listed);
    if (files.empty()) continue;
    auto stored = complete(*repo, commit, files, false);
    if (!std::holds_alternative<Stored>(stored)) continue;
    if (std::holds_alternative<SnapshotTorrent>(
            build(*repo, commit, "", Format::v1, files, std::move(std::get<Stored>(stored))))) {
      ++started;
    }
  }
  if (started) spdlog::info("seeding {} more cached snapshots", started);
  return started;
}

void SnapshotTorrents::release(const std::string& etag) {
  std::lock_guard seeding(seeding_mutex_);
  std::vector<std::string> keys;
  {
    std::lock_guard lock(mutex_);
    if (auto holders = by_etag_.find(etag); holders != by_etag_.end())
      keys.assign(holders->second.begin(), holders->second.end());
  }
  stop(keys, etag + " is leaving the store");
}

void SnapshotTorrents::recheck_visibility() {
  std::map<std::string, RepoId> repos;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [k, torrent] : seeded_) repos.emplace(torrent.repo.key(), torrent.repo);
  }
  for (const auto& [repo_key, repo] : repos) {
    const auto visibility = hub_.visibility(repo);
    if (!visibility.known || visibility.open) continue;
    std::lock_guard seeding(seeding_mutex_);
    std::vector<std::string> keys;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [k, torrent] : seeded_)
        if (torrent.repo == repo) keys.push_back(k);
    }
    stop(keys, repo.name + " is gated or private now");
  }
}

std::size_t SnapshotTorrents::apply_rules() {
  std::map<std::string, std::pair<RepoId, RepoDecision>> refused;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [k, torrent] : seeded_) {
      if (refused.contains(torrent.repo.key())) continue;
      auto decision = hub_.decide(torrent.repo);
      if (decision.access != RepoAccess::allow) refused.emplace(torrent.repo.key(), std::pair{torrent.repo, decision});
    }
  }
  std::size_t stopped = 0;
  for (const auto& [repo_key, refusal] : refused) {
    const auto& [repo, decision] = refusal;
    std::lock_guard seeding(seeding_mutex_);
    std::vector<std::string> keys;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [k, torrent] : seeded_)
        if (torrent.repo == repo) keys.push_back(k);
    }
    stopped += keys.size();
    stop(keys, "the repo rule \"" + decision.rule + "\" no longer lets the node keep it");
  }
  return stopped;
}

void SnapshotTorrents::stop(const std::vector<std::string>& keys, const std::string& why) {
  std::vector<SnapshotTorrent> stopping;
  {
    std::lock_guard lock(mutex_);
    for (const auto& k : keys) {
      auto it = seeded_.find(k);
      if (it == seeded_.end()) continue;
      for (const auto& [path, blob] : *it->second.contents) {
        auto holders = by_etag_.find(blob.etag);
        if (holders == by_etag_.end()) continue;
        holders->second.erase(k);
        if (holders->second.empty()) by_etag_.erase(holders);
      }
      stopping.push_back(std::move(it->second));
      seeded_.erase(it);
    }
  }
  for (const auto& torrent : stopping) {
    hooks_.unseed(torrent);
    spdlog::info("stopped seeding {} at {}: {}", torrent.repo.key(), torrent.commit, why);
  }
}

std::string SnapshotTorrents::metainfo(const SnapshotTorrent& torrent, const NodeLinks& links) {
  std::vector<SnapshotFile> inputs;
  for (const auto& [path, blob] : *torrent.contents) inputs.push_back(SnapshotFile{path, &blob});
  auto built = build_torrent(inputs, options_for(torrent, &links));
  if (auto* t = std::get_if<Torrent>(&built)) return t->metainfo;
  return {};
}

std::string SnapshotTorrents::magnet(const SnapshotTorrent& torrent, const NodeLinks& links) {
  const BuildOptions options = options_for(torrent, &links);
  return magnet_uri(*torrent.torrent, options.trackers, options.web_seeds);
}

}  // namespace inferllama::torrent
