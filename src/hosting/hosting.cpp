#include "hosting/hosting.hpp"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <unistd.h>
#include <algorithm>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cache/blob_writer.hpp"
#include "cache/hashing.hpp"
#include "hosting/commit_payload.hpp"
#include "hosting/git_objects.hpp"
#include "hosting/snapshot.hpp"
#include "hosting/upload_mode.hpp"
#include "inferllama/user_name.hpp"
#include "util/url.hpp"

namespace inferllama::hosting {
namespace {

using Json = nlohmann::json;
using hub::error_reply;
using hub::Reply;

// Keys of RecordTable::hosting, beside namespaces.cpp's and repo_content.cpp's.
constexpr std::string_view kPending = "upload|";  // upload|{oid}\0{repo key} -> seconds it was stored
constexpr std::string_view kPrCount = "prs|";     // prs|{repo key} -> the last pull request's number
constexpr std::string_view kDiscussion = "pr|";   // pr|{repo key}\0{number} -> JSON of the pull request
// Uploads no commit took up by then are garbage.
constexpr std::int64_t kPendingLifetime = 24 * 3600;
constexpr std::size_t kTreePage = 1000;
constexpr std::size_t kCommitsPage = 50;
// Bounds on one LFS batch answer: the clients send at most 256 objects a call.
constexpr std::size_t kMaxBatchObjects = 1000;
constexpr std::uint64_t kMaxParts = 1000;
constexpr std::uint64_t kMaxBatchParts = 20000;

std::string dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Reply json_reply(unsigned status, const Json& json) {
  Reply reply;
  reply.status = status;
  reply.body = dump(json);
  return reply;
}

Reply repo_not_found() {
  return error_reply(404, "Repository not found", "RepoNotFound");
}

Reply revision_not_found(const std::string& rev) {
  return error_reply(404, "Invalid rev id: " + rev, "RevisionNotFound");
}

std::int64_t seconds(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
}

std::string iso_time(std::int64_t when) {
  const std::time_t t = static_cast<std::time_t>(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
  return text;
}

std::string repo_url(const std::string& base, const RepoId& repo) {
  return base + "/" + std::string(repo.url_prefix()) + repo.name;
}

// "refs/pr/3" -> 3
std::optional<unsigned> pr_number(std::string_view rev) {
  constexpr std::string_view kPrefix = "refs/pr/";
  if (!rev.starts_with(kPrefix)) return std::nullopt;
  rev.remove_prefix(kPrefix.size());
  unsigned number = 0;
  if (rev.empty() || std::from_chars(rev.data(), rev.data() + rev.size(), number).ptr != rev.data() + rev.size())
    return std::nullopt;
  return number;
}

// A branch name the node keeps: what git allows, kept simple (no control characters, no "..", no leading
// or trailing '/').
bool is_branch_name(std::string_view name) {
  const bool looks_like_commit = name.size() == 40 && std::all_of(name.begin(), name.end(), [](char c) {
                                   return std::isxdigit(static_cast<unsigned char>(c));
                                 });
  if (looks_like_commit || name.empty() || name.size() > 200 || name.starts_with('/') || name.ends_with('/') ||
      name.find("..") != std::string_view::npos || name.starts_with("refs/"))
    return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return c > 0x20 && c != 0x7f && c != '~' && c != '^' && c != ':' && c != '?' && c != '*' && c != '[' && c != '\\';
  });
}

std::string etag_of(const SnapshotFile& file) {
  return file.lfs ? file.lfs->hex() : file.blob.hex();
}

std::uint64_t pointer_size(const SnapshotFile& file) {
  return file.lfs ? lfs_pointer(*file.lfs, file.size).size() : 0;
}

// A JSON body's object, or nullopt.
std::optional<Json> parse_object(const std::string& body) {
  auto json = Json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  return json;
}

std::string string_field(const Json& json, const char* name) {
  auto it = json.find(name);
  return it != json.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Whether a body asks for a private repo: `visibility` (public, private, protected), or the older
// `private`; nullopt when it says neither.
std::variant<std::optional<bool>, Reply> requested_privacy(const Json& json) {
  if (auto visibility = json.find("visibility"); visibility != json.end() && visibility->is_string()) {
    const std::string text = visibility->get<std::string>();
    if (text != "public" && text != "private" && text != "protected")
      return error_reply(400, "visibility must be public, private or protected");
    return std::optional<bool>(text != "public");
  }
  if (auto flag = json.find("private"); flag != json.end() && flag->is_boolean())
    return std::optional<bool>(flag->get<bool>());
  return std::optional<bool>();
}

// The repo a create or delete body names: "name" (maybe "ns/name"), "organization", "type".
std::variant<RepoId, Reply> repo_of_body(const Json& body, const std::string& user) {
  std::string name = string_field(body, "name");
  std::string ns = string_field(body, "organization");
  if (const auto slash = name.find('/'); slash != std::string::npos) {
    ns = name.substr(0, slash);
    name = name.substr(slash + 1);
  }
  if (ns.empty()) ns = user;
  RepoId repo;
  if (const std::string type = string_field(body, "type"); !type.empty()) {
    auto parsed = parse_repo_type(type);
    if (!parsed) return error_reply(400, "type must be model, dataset or space");
    repo.type = *parsed;
  }
  if (ns.empty()) return error_reply(401, "sign in with a node key to create or delete repos");
  if (!is_valid_repo_segment(ns) || !is_valid_repo_segment(name) || name.ends_with(".git"))
    return error_reply(400, "invalid repository name: use letters, digits, '-', '_' and '.'");
  repo.name = ns + "/" + name;
  return repo;
}

// Each file row of the snapshots under `prefix` ("snap|" for all): its etag and size.
void for_each_snapshot_file(RecordStore& records, const std::string& prefix,
                            const std::function<void(std::string_view etag, std::uint64_t size)>& visit) {
  records.scan(RecordTable::hosting, prefix, [&](std::string_view, std::string_view value) {
    // {blob}|{size}|{lfs oid or ""}: see repo_content.cpp
    const auto first = value.find('|');
    const auto second = value.find('|', first + 1);
    const std::string_view lfs = value.substr(second + 1);
    const std::string_view digits = value.substr(first + 1, second - first - 1);
    std::uint64_t size = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), size);
    visit(lfs.empty() ? value.substr(0, first) : lfs, size);
    return true;
  });
}

// Each pending upload: its etag, the repo it was uploaded for, and when it was stored (seconds).
void for_each_pending(
    RecordStore& records,
    const std::function<void(std::string_view etag, std::string_view repo_key, std::int64_t stored)>& visit) {
  records.scan(RecordTable::hosting, kPending, [&](std::string_view key, std::string_view value) {
    const std::string_view rest = key.substr(kPending.size());
    const auto nul = rest.find('\0');
    std::int64_t stored = 0;
    std::from_chars(value.data(), value.data() + value.size(), stored);
    visit(rest.substr(0, nul), nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1), stored);
    return true;
  });
}

// One repo of a renamed namespace: content first, its record last (the record is what serves it), so a move
// cut short is finished by doing it again.
void move_repo(RecordStore& records, Index& index, Namespaces& namespaces, RepoContent& content, const RepoId& from,
               const RepoId& to) {
  // The etags whose scopes name the repo: from both names, in case an earlier try moved the snapshots.
  std::set<std::string> etags;
  for (const RepoId* repo : {&from, &to}) {
    for_each_snapshot_file(records, "snap|" + repo->key() + '\0',
                           [&](std::string_view etag, std::uint64_t) { etags.emplace(etag); });
  }
  std::vector<RecordStore::Write> pending;
  for_each_pending(records, [&](std::string_view etag, std::string_view repo_key, std::int64_t stored) {
    if (repo_key == to.key()) etags.emplace(etag);
    if (repo_key != from.key()) return;
    etags.emplace(etag);
    pending.push_back({std::string(kPending) + std::string(etag) + '\0' + to.key(), std::to_string(stored)});
    pending.push_back({std::string(kPending) + std::string(etag) + '\0' + from.key(), std::nullopt});
  });
  if (auto last_pr = records.get(RecordTable::hosting, std::string(kPrCount) + from.key())) {
    pending.push_back({std::string(kPrCount) + to.key(), *last_pr});
    pending.push_back({std::string(kPrCount) + from.key(), std::nullopt});
  }
  if (!pending.empty()) records.write(RecordTable::hosting, pending, /*sync=*/true);
  move_prefix(records, RecordTable::hosting, std::string(kDiscussion) + from.key() + '\0',
              std::string(kDiscussion) + to.key() + '\0');
  content.move(from, to);
  // The bytes a private repo holds answer for its new name, and no longer for the old one, which may be a
  // Hub repo's some day.
  index.move_blob_scopes({etags.begin(), etags.end()}, from, to);
  namespaces.move_repo(from, to);
}

}  // namespace

bool is_true(std::string_view value) {
  return value == "1" || value == "true" || value == "True";
}

struct Hosting::Impl {
  Impl(Deps deps, HostingSettings settings)
      : deps(std::move(deps)), settings(settings), content(this->deps.records), signer(this->deps.records) {}

  Deps deps;
  HostingSettings settings;
  RepoContent content;
  TicketSigner signer;
  std::mutex numbers_mutex;  // pull request numbers
  // Commits, deletions and garbage collection one at a time: a file is never released while a commit that
  // found it stored makes a snapshot of it.
  std::mutex changes;
  std::function<bool(const RepoId&)> owns;

  bool withheld(std::string_view ns) const { return deps.namespace_withheld && deps.namespace_withheld(ns); }

  std::optional<Role> role(Namespaces& namespaces, const Requester& who, const RepoId& repo) {
    if (who.admin) return Role::admin;
    if (who.user.empty()) return std::nullopt;
    return namespaces.role_in(who.user, namespace_of(repo));
  }

  CommitAuthor author(const Requester& who) {
    const std::string name = who.user.empty() ? "inferllama" : who.user;
    std::string email = deps.email_of ? deps.email_of(name) : std::string();
    if (email.empty()) email = name + "@users.noreply.inferllama";
    const Signature signature{name, email, seconds(deps.clock)};
    return {signature, signature};
  }

  // The size of an LFS object this repo holds, as a commit needs it: uploaded for it (pending), in one of its
  // snapshots already (`held`), or public bytes anyone may fetch. A scope left by a Hub repo of the same name
  // (a namespace taken over with --force) is not enough: knowing a hash is not holding the file.
  std::optional<std::uint64_t> stored_size(const RepoId& repo, const Sha256& oid, const std::set<std::string>& held) {
    const std::string etag = oid.hex();
    auto blob = deps.index.get_blob(etag);
    if (!blob) return std::nullopt;
    const bool holds = held.contains(etag) || deps.records.get(RecordTable::hosting, pending_key(etag, repo)) ||
                       deps.index.blob_scope(etag).shared;
    if (!holds) return std::nullopt;
    return blob->size;
  }

  // stored_size, reading the repo's snapshots only when the object is neither pending nor public.
  std::optional<std::uint64_t> held_size(const RepoId& repo, const Sha256& oid) {
    if (auto size = stored_size(repo, oid, {})) return size;
    return stored_size(repo, oid, etags_of_repo(repo));
  }

  static std::string pending_key(const std::string& etag, const RepoId& repo) {
    return std::string(kPending) + etag + '\0' + repo.key();
  }

  std::optional<Sha1> commit_id(const RepoId& repo, const std::string& rev) {
    if (auto head = content.head(repo, rev)) return head;
    if (rev.size() == 40) {
      auto id = Sha1::from_hex(rev);
      if (id && !content.snapshot(repo, *id).empty()) return id;
      // A commit of an empty snapshot (every file deleted) is still a commit of this repo.
      if (id) {
        for (const auto& [name, head] : content.branches(repo)) {
          for (std::optional<Sha1> at = head; at;) {
            if (*at == *id) return id;
            auto object = content.object(*at);
            auto fields = object ? parse_commit(object->content) : std::nullopt;
            at = fields && !fields->parents.empty() ? std::optional<Sha1>(fields->parents.front()) : std::nullopt;
          }
        }
      }
    }
    return std::nullopt;
  }

  std::optional<CommitFields> commit_fields(const Sha1& id) {
    auto object = content.object(id);
    if (!object || object->type != "commit") return std::nullopt;
    return parse_commit(object->content);
  }

  void for_each_snapshot_file(const std::string& prefix,
                              const std::function<void(std::string_view etag, std::uint64_t size)>& visit) {
    hosting::for_each_snapshot_file(deps.records, prefix, visit);
  }

  void for_each_pending(
      const std::function<void(std::string_view etag, std::string_view repo_key, std::int64_t stored)>& visit) {
    hosting::for_each_pending(deps.records, visit);
  }

  // What a namespace holds: the distinct files of every commit its repos' branches reach, and the uploads
  // no commit took up yet.
  std::uint64_t namespace_bytes(Namespaces& namespaces, std::string_view ns) {
    std::set<std::string, std::less<>> seen;
    std::uint64_t bytes = 0;
    for (const HostedRepo& hosted : namespaces.repos_in(ns)) {
      for_each_snapshot_file("snap|" + hosted.repo.key() + '\0', [&](std::string_view etag, std::uint64_t size) {
        if (seen.emplace(etag).second) bytes += size;
      });
    }
    for_each_pending([&](std::string_view etag, std::string_view repo_key, std::int64_t) {
      const auto repo = parse_repo_key(repo_key);
      if (!repo || namespace_of(*repo) != ns || !seen.emplace(etag).second) return;
      if (auto blob = deps.index.get_blob(std::string(etag))) bytes += blob->size;
    });
    return bytes;
  }

  std::optional<Reply> over_quota(Namespaces& namespaces, std::string_view ns, std::uint64_t more) {
    if (settings.quota == 0 || more == 0) return std::nullopt;
    const std::uint64_t used = namespace_bytes(namespaces, ns);
    if (used + more <= settings.quota) return std::nullopt;
    return error_reply(413, "hosted_quota exceeded: " + std::string(ns) + " holds " + std::to_string(used) +
                                " bytes of " + std::to_string(settings.quota) + ", and this needs " +
                                std::to_string(more) + " more; delete files or repos, or ask the operator");
  }

  // Every etag hosted snapshots hold, and the pending uploads'; the bytes of the former.
  std::uint64_t referenced(std::unordered_set<std::string>& etags) {
    // Pending first: a commit writes its snapshot before it drops the pending records, so a file moving
    // from one to the other during the scan is seen in one of them.
    for_each_pending([&](std::string_view etag, std::string_view, std::int64_t) { etags.emplace(etag); });
    std::uint64_t bytes = 0;
    std::unordered_set<std::string> counted;
    for_each_snapshot_file("snap|", [&](std::string_view etag, std::uint64_t size) {
      etags.emplace(etag);
      if (counted.emplace(etag).second) bytes += size;
    });
    return bytes;
  }

  // After a deletion: the hosted files nothing holds any more leave the store.
  void release_unreferenced(const std::set<std::string>& candidates) {
    if (candidates.empty()) return;
    std::unordered_set<std::string> held;
    referenced(held);
    std::vector<std::string> gone;
    for (const auto& etag : candidates) {
      if (held.contains(etag)) continue;
      // Bytes that also answer for a Hub repo (the same file cached) stay: eviction decides about them.
      const BlobScope scope = deps.index.blob_scope(etag);
      if (scope.shared || !std::all_of(scope.repos.begin(), scope.repos.end(), owns)) continue;
      gone.push_back(etag);
    }
    if (!gone.empty() && deps.release) deps.release(gone);
  }

  std::set<std::string> etags_of_repo(const RepoId& repo) {
    std::set<std::string> etags;
    for_each_snapshot_file("snap|" + repo.key() + '\0',
                           [&](std::string_view etag, std::uint64_t) { etags.emplace(etag); });
    return etags;
  }

  // A blob stored for `repo`: its scope says so, and the store may lease it again if it was forgotten.
  void stored(cache::BlobWriter& writer, const RepoId& repo, const std::string& etag, bool lfs) {
    BlobScope scope;
    scope.repos.push_back(repo);
    writer.store(deps.index, etag, lfs, {}, scope);
    if (deps.stored) deps.stored(etag);
  }

  // A commit's inline files are stored before the commit that names them becomes visible.
  void store_inline(const RepoId& repo, const CommitPayload& payload) {
    for (const auto& op : payload.operations) {
      const auto* add = std::get_if<AddFile>(&op);
      if (!add) continue;
      const std::string etag = make_git_object("blob", add->content).id.hex();
      if (deps.index.get_blob(etag) && deps.index.blob_serves(etag, repo)) continue;
      mark_pending(repo, etag);  // collected after a day if the commit never comes
      BlobScope scope;
      scope.repos.push_back(repo);
      cache::store_bytes(deps.store, deps.index, settings.chunk_size, add->content, etag, false, {}, scope);
      if (deps.stored) deps.stored(etag);
    }
  }

  // The files a commit now holds are no longer pending uploads.
  void taken_up(const RepoId& repo, const CommitPayload& payload) {
    std::vector<RecordStore::Write> taken;
    for (const auto& op : payload.operations) {
      if (const auto* lfs = std::get_if<AddLfsFile>(&op))
        taken.push_back({pending_key(lfs->oid.hex(), repo), std::nullopt});
      if (const auto* add = std::get_if<AddFile>(&op))
        taken.push_back({pending_key(make_git_object("blob", add->content).id.hex(), repo), std::nullopt});
    }
    if (!taken.empty()) deps.records.write(RecordTable::hosting, taken, /*sync=*/false);
  }

  // A small stored file's bytes (a .gitattributes), or nullopt when it is not stored or larger than `limit`.
  std::optional<std::string> read_small(const std::string& etag, std::uint64_t limit) {
    auto blob = deps.index.get_blob(etag);
    if (!blob || blob->size > limit) return std::nullopt;
    std::string bytes;
    bytes.reserve(blob->size);
    for (const ChunkRef& chunk : blob->chunks) {
      const int fd = deps.store.open_chunk(chunk.id);
      if (fd < 0) return std::nullopt;
      std::string part(chunk.size, '\0');
      const ssize_t n = ::pread(fd, part.data(), part.size(), 0);
      ::close(fd);
      if (n != static_cast<ssize_t>(part.size())) return std::nullopt;
      bytes += part;
    }
    return bytes;
  }

  void mark_pending(const RepoId& repo, const std::string& etag) {
    deps.records.write(RecordTable::hosting, {{pending_key(etag, repo), std::to_string(seconds(deps.clock))}},
                       /*sync=*/true);
  }

  Json tree_entry(const std::string& path, const SnapshotFile& file) {
    Json entry{{"type", "file"}, {"oid", file.blob.hex()}, {"size", file.size}, {"path", path}};
    if (file.lfs) entry["lfs"] = {{"oid", file.lfs->hex()}, {"size", file.size}, {"pointerSize", pointer_size(file)}};
    return entry;
  }

  // A folder's git tree id, from the files under it.
  static std::string folder_id(const Snapshot& files, const std::string& folder) {
    std::vector<TreeFile> under;
    const std::string prefix = folder + "/";
    for (auto it = files.lower_bound(prefix); it != files.end() && it->first.starts_with(prefix); ++it)
      under.push_back({it->first.substr(prefix.size()), it->second.blob});
    auto trees = build_trees(std::move(under));
    return trees && !trees->empty() ? trees->back().id.hex() : std::string();
  }

  unsigned next_pr(const RepoId& repo) {
    std::lock_guard lock(numbers_mutex);
    const std::string key = std::string(kPrCount) + repo.key();
    unsigned last = 0;
    if (auto value = deps.records.get(RecordTable::hosting, key))
      std::from_chars(value->data(), value->data() + value->size(), last);
    deps.records.write(RecordTable::hosting, {{key, std::to_string(last + 1)}}, /*sync=*/true);
    return last + 1;
  }

  // A repo's pull request counter and records, and whatever a deletion cut short left of its content.
  void forget_repo(const RepoId& repo) {
    content.forget(repo);
    std::vector<RecordStore::Write> pending;
    const std::string key = repo.key();
    for_each_pending([&](std::string_view etag, std::string_view repo_key, std::int64_t) {
      if (repo_key == key) pending.push_back({pending_key(std::string(etag), repo), std::nullopt});
    });
    if (!pending.empty()) deps.records.write(RecordTable::hosting, pending, /*sync=*/true);
    deps.records.write(RecordTable::hosting, {{std::string(kPrCount) + repo.key(), std::nullopt}}, /*sync=*/true);
    const std::string prefix = std::string(kDiscussion) + repo.key() + '\0';
    std::string end = prefix;
    end.back() = '\1';
    deps.records.erase_range(RecordTable::hosting, prefix, end);
  }
};

Hosting::Hosting(Deps deps, HostingSettings settings)
    : impl_(std::make_unique<Impl>(std::move(deps), settings)), namespaces_(impl_->deps.records, impl_->deps.clock) {
  impl_->owns = [this](const RepoId& repo) { return owns(repo); };
}

Hosting::~Hosting() = default;

bool Hosting::owns_namespace(std::string_view ns) const {
  return namespaces_.is_org(ns) || (impl_->deps.user_exists && impl_->deps.user_exists(ns));
}

bool Hosting::owns(const RepoId& repo) const {
  return owns_namespace(namespace_of(repo));
}

std::optional<HostedRepo> Hosting::served_repo(const RepoId& repo) {
  if (impl_->withheld(namespace_of(repo))) return std::nullopt;
  return namespaces_.repo(repo);
}

std::optional<RepoVisibility> Hosting::visibility(const RepoId& repo) {
  auto hosted = served_repo(repo);
  if (!hosted) return std::nullopt;
  return hosted->is_private ? RepoVisibility::restricted : RepoVisibility::open;
}

std::optional<std::string> Hosting::commit_of(const RepoId& repo, const std::string& rev) {
  if (!served_repo(repo)) return std::nullopt;
  auto id = impl_->commit_id(repo, rev);
  if (!id) return std::nullopt;
  return id->hex();
}

std::optional<std::vector<HostedRepos::File>> Hosting::files(const RepoId& repo, const std::string& commit) {
  auto id = Sha1::from_hex(commit);
  if (!id || !served_repo(repo)) return std::nullopt;
  std::vector<File> out;
  for (const auto& [path, file] : impl_->content.snapshot(repo, *id))
    out.push_back({path, FileEntry{etag_of(file), file.lfs.has_value(), file.size}});
  if (out.empty() && !impl_->commit_id(repo, commit)) return std::nullopt;
  return out;
}

std::optional<FileEntry> Hosting::file(const RepoId& repo, const std::string& commit, const std::string& path) {
  auto id = Sha1::from_hex(commit);
  if (!id || impl_->withheld(namespace_of(repo))) return std::nullopt;
  auto found = impl_->content.file(repo, *id, path);
  if (!found) return std::nullopt;
  return FileEntry{etag_of(*found), found->lfs.has_value(), found->size};
}

std::optional<Reply> Hosting::read_refusal(const Requester& who, const RepoId& repo) {
  auto hosted = served_repo(repo);
  if (!hosted) return repo_not_found();
  if (hosted->is_private && !impl_->role(namespaces_, who, repo)) return repo_not_found();
  return std::nullopt;
}

namespace {
// Write access: read access first (a private repo stays unseen), then a write role.
std::optional<Reply> write_refusal(std::optional<Reply> read, std::optional<Role> role, const Requester& who,
                                   Role needed) {
  if (read) return read;
  if (who.user.empty() && !who.admin)
    return error_reply(401, "sign in with a node key (Authorization: Bearer il_...) to change this repo");
  if (!role || *role < needed) return error_reply(403, "You don't have the rights to change this repo");
  return std::nullopt;
}
}  // namespace

std::optional<std::variant<RepoId, Reply>> Hosting::repo_of_request(const Requester& who, const Json& json) const {
  // No namespace named and no node user to own it: the Hub's request, with the caller's Hub token.
  if (who.user.empty() && string_field(json, "organization").empty() &&
      string_field(json, "name").find('/') == std::string::npos)
    return std::nullopt;
  auto parsed = repo_of_body(json, who.user);
  if (std::holds_alternative<Reply>(parsed)) {
    // A namespace that is not the node's goes upstream as it came, whatever the node makes of it.
    const std::string ns = string_field(json, "organization");
    if (!ns.empty() && !owns_namespace(ns)) return std::nullopt;
    return parsed;
  }
  if (!owns(std::get<RepoId>(parsed))) return std::nullopt;
  return parsed;
}

std::optional<Reply> Hosting::create_repo(const Requester& who, const std::string& body, const std::string& base) {
  auto json = parse_object(body);
  if (!json) return error_reply(400, "the body must be a JSON object");
  auto named = repo_of_request(who, *json);
  if (!named) return std::nullopt;
  if (auto* refused = std::get_if<Reply>(&*named)) return std::move(*refused);
  const RepoId repo = std::get<RepoId>(*named);
  if (impl_->withheld(namespace_of(repo))) return repo_not_found();
  const auto role = impl_->role(namespaces_, who, repo);
  if (who.user.empty() && !who.admin) return error_reply(401, "sign in with a node key to create repos");
  if (!role || *role < Role::write)
    return error_reply(403, "You don't have the rights to create a repo in " + std::string(namespace_of(repo)));
  const auto privacy = requested_privacy(*json);
  if (auto* refused = std::get_if<Reply>(&privacy)) return std::move(*refused);
  const bool is_private = std::get<std::optional<bool>>(privacy).value_or(false);
  // As on the Hub, a new repo has one commit: its .gitattributes, and the files JS sends along.
  CommitPayload initial;
  initial.header.summary = "initial commit";
  initial.operations.push_back(AddFile{".gitattributes", std::string(kDefaultGitAttributes)});
  std::uint64_t inline_bytes = 0;
  if (auto files = json->find("files"); files != json->end() && files->is_array()) {
    for (const auto& f : *files) {
      if (!f.is_object()) continue;
      const std::string path = string_field(f, "path");
      auto decoded = decode_base64(string_field(f, "content"));
      if (path.empty() || !url::is_safe_relative_path(path) || !decoded)
        return error_reply(400, "each of files needs a safe path and base64 content");
      inline_bytes += decoded->size();
      initial.operations.push_back(AddFile{path, std::move(*decoded)});
    }
  }
  const std::string url = repo_url(base, repo);
  std::lock_guard changing(impl_->changes);
  if (namespaces_.repo(repo)) {
    Reply exists = json_reply(
        409, {{"error", "You already created this " + std::string(repo.type_name()) + " repo"}, {"url", url}});
    exists.headers.emplace_back("X-Error-Message", "You already created this repo");
    return exists;
  }
  if (auto refused = impl_->over_quota(namespaces_, namespace_of(repo), inline_bytes)) return *refused;
  // Whatever a deletion cut short by a crash left under this name is not the new repo's.
  impl_->forget_repo(repo);
  auto created = namespaces_.create_repo(repo, is_private);
  impl_->store_inline(repo, initial);
  auto done = impl_->content.commit(repo, "main", initial, impl_->author(who),
                                    [](const Sha256&) { return std::optional<std::uint64_t>(); });
  if (auto* refused = std::get_if<CommitRefusal>(&done)) {
    namespaces_.delete_repo(repo);
    return error_reply(refused->status, refused->message, refused->code);
  }
  impl_->taken_up(repo, initial);
  spdlog::info("hosted repo {} created by {}", repo.key(), who.admin ? "the admin" : who.user);
  return json_reply(200, {{"url", url}, {"id", created.repo.id}, {"name", repo.name}});
}

std::optional<Reply> Hosting::delete_repo(const Requester& who, const std::string& body) {
  auto json = parse_object(body);
  if (!json) return error_reply(400, "the body must be a JSON object");
  auto named = repo_of_request(who, *json);
  if (!named) return std::nullopt;
  if (auto* refused = std::get_if<Reply>(&*named)) return std::move(*refused);
  const RepoId repo = std::get<RepoId>(*named);
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::admin))
    return refused;
  remove_repo(repo);
  spdlog::info("hosted repo {} deleted by {}", repo.key(), who.admin ? "the admin" : who.user);
  return json_reply(200, Json::object());
}

std::size_t move_namespace(RecordStore& records, Index& index, Namespaces& namespaces, RepoContent& content,
                           std::string_view from, std::string_view to) {
  const auto repos = namespaces.repos_in(from);
  for (const HostedRepo& hosted : repos) {
    const RepoId renamed{hosted.repo.type, std::string(to) + hosted.repo.name.substr(from.size())};
    move_repo(records, index, namespaces, content, hosted.repo, renamed);
  }
  return repos.size();
}

std::size_t Hosting::move_namespace(std::string_view from, std::string_view to) {
  std::lock_guard changing(impl_->changes);
  return hosting::move_namespace(impl_->deps.records, impl_->deps.index, namespaces_, impl_->content, from, to);
}

void Hosting::remove_repo(const RepoId& repo) {
  std::lock_guard changing(impl_->changes);
  const auto etags = impl_->etags_of_repo(repo);
  // Content first: a crash midway leaves a repo without branches, which takes a first commit again, or
  // is deleted again.
  impl_->forget_repo(repo);
  namespaces_.delete_repo(repo);
  impl_->content.collect_objects();
  impl_->release_unreferenced(etags);
}

Reply Hosting::settings(const Requester& who, const RepoId& repo, const std::string& body) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::admin))
    return *refused;
  auto json = parse_object(body);
  if (!json) return error_reply(400, "the body must be a JSON object");
  const auto privacy = requested_privacy(*json);
  if (auto* refused = std::get_if<Reply>(&privacy)) return *refused;
  const std::optional<bool> is_private = std::get<std::optional<bool>>(privacy);
  if (auto gated = json->find("gated"); gated != json->end() && !(gated->is_boolean() && !gated->get<bool>()))
    return error_reply(400, "hosted repos are public or private; gating is not offered");
  if (is_private) namespaces_.set_private(repo, *is_private);
  const auto hosted = namespaces_.repo(repo);
  return json_reply(200, {{"private", hosted && hosted->is_private}});
}

Reply Hosting::preupload(const Requester& who, const RepoId& repo, const std::string& rev, const std::string& body) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  auto json = parse_object(body);
  if (!json || !json->contains("files") || !(*json)["files"].is_array())
    return error_reply(400, "the body must be {\"files\": [{\"path\", \"size\", \"sample\"}]}");
  const auto head = impl_->commit_id(repo, rev);
  const Snapshot snapshot = head ? impl_->content.snapshot(repo, *head) : Snapshot{};
  // The repo's own .gitattributes decides, then the one the client sends along.
  std::string attributes(kDefaultGitAttributes);
  if (auto it = snapshot.find(".gitattributes"); it != snapshot.end() && !it->second.lfs) {
    if (auto stored = impl_->read_small(it->second.blob.hex(), 1 << 20)) attributes = std::move(*stored);
  }
  LfsRules rules(attributes);
  if (const std::string more = string_field(*json, "gitAttributes"); !more.empty()) rules.add(more);
  Json files = Json::array();
  for (const auto& f : (*json)["files"]) {
    if (!f.is_object()) return error_reply(400, "each file is an object");
    const std::string path = string_field(f, "path");
    if (path.empty() || !url::is_safe_relative_path(path)) return error_reply(400, "invalid path: " + path);
    const std::uint64_t size = f.value("size", std::uint64_t{0});
    const auto sample = decode_base64(string_field(f, "sample"));
    const UploadMode mode = upload_mode(rules, path, size, sample ? *sample : std::string());
    Json answer{{"path", path}, {"uploadMode", mode == UploadMode::lfs ? "lfs" : "regular"}, {"shouldIgnore", false}};
    if (auto it = snapshot.find(path); it != snapshot.end()) {
      answer["oid"] = it->second.lfs ? it->second.lfs->hex() : it->second.blob.hex();
    } else {
      answer["oid"] = nullptr;
    }
    files.push_back(std::move(answer));
  }
  return json_reply(200, {{"files", std::move(files)}, {"commitOid", head ? Json(head->hex()) : Json(nullptr)}});
}

Reply Hosting::lfs_batch(const Requester& who, const RepoId& repo, const std::string& body, const std::string& base) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  auto json = parse_object(body);
  if (!json) return error_reply(400, "the body must be a Git LFS batch request");
  if (string_field(*json, "operation") != "upload")
    return error_reply(422, "this node's LFS endpoint takes uploads; download files with /resolve/");
  if (const std::string algo = string_field(*json, "hash_algo"); !algo.empty() && algo != "sha256" && algo != "sha_256")
    return error_reply(422, "hash_algo must be sha256");
  bool multipart_ok = false;
  if (auto transfers = json->find("transfers"); transfers != json->end() && transfers->is_array()) {
    for (const auto& t : *transfers) multipart_ok |= t.is_string() && t.get<std::string>() == "multipart";
  }
  auto objects = json->find("objects");
  if (objects == json->end() || !objects->is_array()) return error_reply(400, "objects must be a list");
  if (objects->size() > kMaxBatchObjects)
    return error_reply(413, "at most " + std::to_string(kMaxBatchObjects) + " objects per batch");
  const std::set<std::string> held = impl_->etags_of_repo(repo);
  // Quota and disk before anything is built: what the batch asks to send, each object once.
  std::uint64_t multipart_total = 0;
  {
    std::set<std::string> asked;
    std::uint64_t total = 0;
    for (const auto& object : *objects) {
      if (!object.is_object() || !object.contains("size") || !object["size"].is_number_unsigned()) continue;
      const std::uint64_t size = object["size"].get<std::uint64_t>();
      const auto oid = Sha256::from_hex(string_field(object, "oid"));
      if (!oid || size > impl_->settings.max_object_size || !asked.insert(oid->hex()).second) continue;
      if (impl_->stored_size(repo, *oid, held) == size) continue;  // what the repo holds is not sent again
      total += size;
      if (multipart_ok && size >= impl_->settings.multipart_threshold) multipart_total += size;
    }
    if (auto refused = impl_->over_quota(namespaces_, namespace_of(repo), total)) return *refused;
    std::error_code ec;
    const auto space = std::filesystem::space(impl_->deps.store.root(), ec);
    if (!ec && total > space.available)
      return error_reply(507, "the node has " + std::to_string(space.available) +
                                  " bytes of disk left; this batch needs " + std::to_string(total));
  }
  const std::int64_t expires =
      seconds(impl_->deps.clock) +
      std::chrono::duration_cast<std::chrono::seconds>(impl_->settings.upload_url_lifetime).count();
  Json answers = Json::array();
  bool any_multipart = false;
  for (const auto& object : *objects) {
    const std::string oid_text = object.is_object() ? string_field(object, "oid") : std::string();
    const auto oid = Sha256::from_hex(oid_text);
    const auto size = object.is_object() && object.contains("size") && object["size"].is_number_unsigned()
                          ? std::optional<std::uint64_t>(object["size"].get<std::uint64_t>())
                          : std::nullopt;
    if (!oid || !size || oid_text != oid->hex()) {
      answers.push_back(
          {{"oid", oid_text},
           {"size", size.value_or(0)},
           {"error", {{"code", 422}, {"message", "oid must be 64 lowercase hex digits, size a number"}}}});
      continue;
    }
    if (*size > impl_->settings.max_object_size) {
      answers.push_back({{"oid", oid_text},
                         {"size", *size},
                         {"error", {{"code", 413}, {"message", "the object is larger than this node accepts"}}}});
      continue;
    }
    Json answer{{"oid", oid_text}, {"size", *size}, {"authenticated", true}};
    // Stored for this repo already: nothing to send. Bytes stored for another repo must be sent again (who
    // knows a hash has not shown they hold the file).
    if (impl_->stored_size(repo, *oid, held) == size) {
      answers.push_back(std::move(answer));
      continue;
    }
    UploadTicket ticket{repo, *oid, *size, who.user, expires, 0};
    const bool multipart = multipart_ok && *size >= impl_->settings.multipart_threshold;
    if (multipart) {
      // Parts of whole chunks, 16 MiB or more: larger when the object, or the batch, would need more than
      // kMaxParts, or kMaxBatchParts, URLs (the clients take the part size they are given).
      const std::uint64_t chunk = impl_->settings.chunk_size;
      const std::uint64_t wanted = std::max({std::uint64_t{16} << 20, (*size + kMaxParts - 1) / kMaxParts,
                                             (multipart_total + kMaxBatchParts - 1) / kMaxBatchParts});
      ticket.part_size = (wanted + chunk - 1) / chunk * chunk;
    }
    const std::string token = impl_->signer.sign(ticket);
    const std::string href = base + "/api/inferllama/lfs/" + token;
    Json upload{{"href", href}, {"expires_in", impl_->settings.upload_url_lifetime.count()}};
    if (multipart) {
      any_multipart = true;
      Json header{{"chunk_size", std::to_string(ticket.part_size)}};
      const std::uint64_t parts = (*size + ticket.part_size - 1) / ticket.part_size;
      for (std::uint64_t n = 1; n <= parts; ++n) {
        char name[8];
        std::snprintf(name, sizeof name, "%05llu", static_cast<unsigned long long>(n));
        header[name] = href + "/" + std::to_string(n);
      }
      upload["href"] = href + "/complete";
      upload["header"] = std::move(header);
    }
    answer["actions"] = {{"upload", std::move(upload)}, {"verify", {{"href", href + "/verify"}, {"expires_in", 3600}}}};
    answers.push_back(std::move(answer));
  }
  Reply reply = json_reply(
      200,
      {{"transfer", any_multipart ? "multipart" : "basic"}, {"objects", std::move(answers)}, {"hash_algo", "sha256"}});
  reply.content_type = "application/vnd.git-lfs+json";
  return reply;
}

std::variant<UploadTicket, Reply> Hosting::check_ticket(std::string_view token) const {
  auto ticket = impl_->signer.open(token);
  if (!ticket) return error_reply(403, "this upload URL is not one this node signed");
  if (ticket->expires < seconds(impl_->deps.clock))
    return error_reply(403, "this upload URL expired; ask the LFS batch endpoint for a new one");
  return *ticket;
}

namespace {

// One PUT of a whole object: hashed as it arrives, stored when its hash is the ticket's.
class ObjectUpload : public Hosting::Upload {
 public:
  ObjectUpload(Hosting::Impl& impl, UploadTicket ticket, std::string key)
      : impl_(impl),
        ticket_(std::move(ticket)),
        writer_(impl.deps.store, impl.settings.chunk_size, key, ticket_.size) {}
  void write(std::span<const std::uint8_t> bytes) override {
    if (bytes.size() > ticket_.size - writer_.written()) throw std::length_error("more bytes than the object has");
    writer_.write_chunks(bytes);
  }
  void hash(std::span<const std::uint8_t> bytes) override { writer_.hash_file(bytes); }
  Reply finish() override {
    if (writer_.written() != ticket_.size)
      return error_reply(400, "the upload has " + std::to_string(writer_.written()) + " bytes; the object has " +
                                  std::to_string(ticket_.size));
    const auto& digests = writer_.finish();
    if (digests.sha256 != ticket_.oid)
      return error_reply(400, "the uploaded bytes hash to " + digests.sha256.hex() + ", not to the object's oid " +
                                  ticket_.oid.hex() + "; nothing was stored");
    // Pending before it is stored: garbage collection never sees it unheld.
    impl_.mark_pending(ticket_.repo, ticket_.oid.hex());
    impl_.stored(writer_, ticket_.repo, ticket_.oid.hex(), true);
    return Reply{200, {{"ETag", "\"" + ticket_.oid.hex() + "\""}}, "application/json", "{}"};
  }

 private:
  Hosting::Impl& impl_;
  UploadTicket ticket_;
  cache::BlobWriter writer_;
};

// One part of a multipart upload, kept until the completion call assembles them.
class PartUpload : public Hosting::Upload {
 public:
  PartUpload(cache::MultipartStaging staging, unsigned part, std::uint64_t size)
      : staging_(std::move(staging)), part_(part), size_(size), writer_(staging_.begin_part(part)) {}
  void write(std::span<const std::uint8_t> bytes) override {
    if (written_ + bytes.size() > size_) throw std::length_error("more bytes than the part has");
    writer_.write(bytes);
    written_ += bytes.size();
  }
  void hash(std::span<const std::uint8_t>) override {}  // the parts are hashed whole at the completion
  Reply finish() override {
    if (written_ != size_)
      return error_reply(400, "part " + std::to_string(part_) + " has " + std::to_string(written_) +
                                  " bytes; it should have " + std::to_string(size_));
    writer_.commit();
    return Reply{200,
                 {{"ETag", "\"part-" + std::to_string(part_) + "-" + std::to_string(size_) + "\""}},
                 "application/json",
                 "{}"};
  }

 private:
  cache::MultipartStaging staging_;
  unsigned part_;
  std::uint64_t size_;
  std::uint64_t written_ = 0;
  cache::MultipartStaging::PartWriter writer_;
};

std::string upload_key(const UploadTicket& ticket) {
  // The same object for the same repo shares its parts across retries and restarts.
  return ticket.oid.hex() + "-" + cache::sha256(ticket.repo.key()).hex().substr(0, 16);
}

std::string random_suffix() {
  std::array<unsigned char, 8> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) throw std::runtime_error("no random bytes");
  return hex(bytes);
}

}  // namespace

std::variant<std::unique_ptr<Hosting::Upload>, Reply> Hosting::begin_upload(
    const UploadTicket& ticket, unsigned part, std::optional<std::uint64_t> content_length) {
  if (!served_repo(ticket.repo)) return repo_not_found();
  // Batches asked separately must not add up past the quota: the bytes are charged when they come.
  if (part <= 1 && impl_->stored_size(ticket.repo, ticket.oid, {}) != ticket.size) {
    if (auto refused = impl_->over_quota(namespaces_, namespace_of(ticket.repo), ticket.size)) return *refused;
  }
  if (part == 0) {
    if (ticket.part_size != 0) return error_reply(400, "this object is uploaded in parts: PUT each part's URL");
    if (content_length && *content_length != ticket.size)
      return error_reply(400, "Content-Length is " + std::to_string(*content_length) + "; the object has " +
                                  std::to_string(ticket.size) + " bytes");
    // Concurrent uploads of one object each stage apart; the first to finish stores it.
    return std::make_unique<ObjectUpload>(*impl_, ticket, upload_key(ticket) + "-" + random_suffix());
  }
  if (ticket.part_size == 0) return error_reply(400, "this object is uploaded whole: PUT the upload URL");
  const std::uint64_t parts = (ticket.size + ticket.part_size - 1) / ticket.part_size;
  if (part > parts) return error_reply(400, "the object has " + std::to_string(parts) + " parts");
  const std::uint64_t size = std::min(ticket.part_size, ticket.size - (part - 1) * ticket.part_size);
  if (content_length && *content_length != size)
    return error_reply(400, "Content-Length is " + std::to_string(*content_length) + "; part " + std::to_string(part) +
                                " has " + std::to_string(size) + " bytes");
  return std::make_unique<PartUpload>(cache::MultipartStaging(impl_->deps.store, upload_key(ticket)), part, size);
}

Reply Hosting::complete_multipart(const UploadTicket& ticket, const std::string& body) {
  if (!served_repo(ticket.repo)) return repo_not_found();
  if (ticket.part_size == 0) return error_reply(400, "this object was not uploaded in parts");
  if (auto json = parse_object(body); !json || string_field(*json, "oid") != ticket.oid.hex())
    return error_reply(400, "the completion names another object");
  if (impl_->held_size(ticket.repo, ticket.oid) == ticket.size) return json_reply(200, Json::object());
  cache::MultipartStaging staging(impl_->deps.store, upload_key(ticket));
  const std::uint64_t parts = (ticket.size + ticket.part_size - 1) / ticket.part_size;
  for (std::uint64_t n = 1; n <= parts; ++n) {
    const std::uint64_t size = std::min(ticket.part_size, ticket.size - (n - 1) * ticket.part_size);
    if (!staging.has_part(n) || staging.part_size(n) != size)
      return error_reply(400, "part " + std::to_string(n) + " of " + std::to_string(parts) + " was not uploaded");
  }
  // A completion of its own: a retry running beside it assembles apart, and the first to finish stores it.
  cache::BlobWriter writer(impl_->deps.store, impl_->settings.chunk_size,
                           upload_key(ticket) + "-whole-" + random_suffix(), ticket.size);
  staging.assemble(parts, writer);
  const auto& digests = writer.finish();
  if (digests.sha256 != ticket.oid) {
    staging.remove();
    return error_reply(400, "the parts hash to " + digests.sha256.hex() + ", not to the object's oid; upload again");
  }
  impl_->mark_pending(ticket.repo, ticket.oid.hex());
  impl_->stored(writer, ticket.repo, ticket.oid.hex(), true);
  staging.remove();
  return json_reply(200, Json::object());
}

Reply Hosting::verify(const UploadTicket& ticket, const std::string& body) {
  auto json = parse_object(body);
  if (!json || string_field(*json, "oid") != ticket.oid.hex()) return error_reply(400, "verify names another object");
  if (impl_->held_size(ticket.repo, ticket.oid) != ticket.size)
    return error_reply(404, "the object " + ticket.oid.hex() + " is not stored; upload it again");
  return json_reply(200, Json::object());
}

Reply Hosting::commit(const Requester& who, const RepoId& repo, const std::string& rev, bool create_pr,
                      const std::string& body, const std::string& base) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  auto parsed = parse_commit_payload(body);
  if (auto* why = std::get_if<std::string>(&parsed)) return error_reply(400, *why);
  auto& payload = std::get<CommitPayload>(parsed);
  // The branch it goes to: `rev`, or a new pull request's refs/pr/N starting from it.
  std::string branch = rev;
  std::optional<std::string> start;
  std::optional<unsigned> pr;
  if (create_pr) {
    if (!impl_->content.head(repo, rev)) return revision_not_found(rev);
    pr = impl_->next_pr(repo);
    branch = "refs/pr/" + std::to_string(*pr);
    start = rev;
  } else if (!impl_->content.head(repo, rev)) {
    // As on the Hub, a branch is created first (create_branch); a repo without any (a creation a crash cut
    // short) takes a first commit on a branch of a proper name.
    if (!impl_->content.branches(repo).empty() || pr_number(rev)) return revision_not_found(rev);
    if (!is_branch_name(rev)) return error_reply(400, "invalid branch name: " + rev);
  }
  std::lock_guard changing(impl_->changes);
  const std::set<std::string> held = impl_->etags_of_repo(repo);
  // What the commit adds to the namespace: inline bytes, and stored objects it neither uploaded nor held.
  std::uint64_t more = 0;
  for (const auto& op : payload.operations) {
    if (const auto* add = std::get_if<AddFile>(&op)) more += add->content.size();
    if (const auto* lfs = std::get_if<AddLfsFile>(&op)) {
      const std::string etag = lfs->oid.hex();
      if (held.contains(etag) || impl_->deps.records.get(RecordTable::hosting, Impl::pending_key(etag, repo))) continue;
      if (auto size = impl_->stored_size(repo, lfs->oid, held)) more += *size;
    }
  }
  if (auto refused = impl_->over_quota(namespaces_, namespace_of(repo), more)) return *refused;
  impl_->store_inline(repo, payload);
  auto done = impl_->content.commit(
      repo, branch, payload, impl_->author(who), [&](const Sha256& oid) { return impl_->stored_size(repo, oid, held); },
      start);
  if (auto* refused = std::get_if<CommitRefusal>(&done)) {
    if (pr) impl_->content.set_branch(repo, branch, std::nullopt);
    return error_reply(refused->status, refused->message, refused->code);
  }
  const Sha1 commit = std::get<Sha1>(done);
  impl_->taken_up(repo, payload);
  const std::string url = repo_url(base, repo);
  Json answer{{"commitOid", commit.hex()},
              {"commitUrl", url + "/commit/" + commit.hex()},
              {"hookOutput", ""},
              {"success", true}};
  if (pr) {
    const Json discussion{{"num", *pr},
                          {"title", payload.header.summary},
                          {"description", payload.header.description},
                          {"author", who.user},
                          {"createdAt", iso_time(seconds(impl_->deps.clock))},
                          {"isPullRequest", true},
                          {"status", "open"}};
    impl_->deps.records.write(RecordTable::hosting,
                              {{std::string(kDiscussion) + repo.key() + '\0' + std::to_string(*pr), dump(discussion)}},
                              /*sync=*/true);
    answer["pullRequestUrl"] = url + "/discussions/" + std::to_string(*pr);
  } else {
    answer["pullRequestUrl"] = nullptr;
  }
  spdlog::info("hosted repo {}: {} committed {} to {}", repo.key(), who.admin ? "the admin" : who.user, commit.hex(),
               branch);
  return json_reply(200, answer);
}

Reply Hosting::create_discussion(const Requester& who, const RepoId& repo, const std::string& body,
                                 const std::string& base) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  auto json = parse_object(body);
  if (!json) return error_reply(400, "the body must be a JSON object");
  if (!json->value("pullRequest", false))
    return error_reply(400, "this node keeps pull requests only; discussions are not offered");
  std::lock_guard changing(impl_->changes);  // the start commit is not collected meanwhile
  const auto main = impl_->content.head(repo, "main");
  if (!main) return revision_not_found("main");
  const unsigned number = impl_->next_pr(repo);
  impl_->content.set_branch(repo, "refs/pr/" + std::to_string(number), main);
  const Json discussion{{"num", number},
                        {"title", string_field(*json, "title")},
                        {"description", string_field(*json, "description")},
                        {"author", who.user},
                        {"createdAt", iso_time(seconds(impl_->deps.clock))},
                        {"isPullRequest", true},
                        {"status", "draft"}};
  impl_->deps.records.write(RecordTable::hosting,
                            {{std::string(kDiscussion) + repo.key() + '\0' + std::to_string(number), dump(discussion)}},
                            /*sync=*/true);
  return this->discussion(who, repo, number, base);
}

Reply Hosting::discussion(const Requester& who, const RepoId& repo, unsigned number, const std::string& base) {
  if (auto refused = read_refusal(who, repo)) return *refused;
  auto stored = impl_->deps.records.get(RecordTable::hosting,
                                        std::string(kDiscussion) + repo.key() + '\0' + std::to_string(number));
  if (!stored) return error_reply(404, "Discussion not found");
  Json d = Json::parse(*stored, nullptr, false);
  if (!d.is_object()) return error_reply(500, "a pull request record is damaged");
  const std::string ref = "refs/pr/" + std::to_string(number);
  const auto head = impl_->content.head(repo, ref);
  const std::string author = d.value("author", "");
  Json out{{"num", number},
           {"title", d.value("title", "")},
           {"status", head ? d.value("status", "open") : "closed"},
           {"createdAt", d.value("createdAt", "")},
           {"author", {{"name", author}, {"type", "user"}, {"isPro", false}, {"isHf", false}, {"isOwner", false}}},
           {"isPullRequest", true},
           {"repo", {{"name", repo.name}, {"type", repo.type_name()}}},
           {"pinned", false},
           {"locked", false},
           {"numComments", 0},
           {"topReactions", Json::array()},
           {"url", repo_url(base, repo) + "/discussions/" + std::to_string(number)},
           {"conflictingFiles", Json::array()},
           {"changes", {{"base", "refs/heads/main"}}},
           {"events", Json::array()}};
  if (head) out["changes"]["mergeCommitId"] = nullptr;
  return json_reply(200, out);
}

Reply Hosting::create_branch(const Requester& who, const RepoId& repo, const std::string& branch,
                             const std::string& body) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  if (!is_branch_name(branch)) return error_reply(400, "invalid branch name: " + branch);
  std::lock_guard changing(impl_->changes);  // the start commit is not collected meanwhile
  if (impl_->content.head(repo, branch)) return error_reply(409, "Reference already exists: " + branch);
  std::string from = "main";
  if (auto json = parse_object(body)) {
    if (const std::string start = string_field(*json, "startingPoint"); !start.empty()) from = start;
  }
  const auto start = impl_->commit_id(repo, from);
  if (!start) return revision_not_found(from);
  impl_->content.set_branch(repo, branch, start);
  return json_reply(200, Json::object());
}

Reply Hosting::delete_branch(const Requester& who, const RepoId& repo, const std::string& branch) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::write))
    return *refused;
  if (branch == "main") return error_reply(403, "the main branch cannot be deleted");
  if (!impl_->content.head(repo, branch)) return revision_not_found(branch);
  std::lock_guard changing(impl_->changes);
  const auto etags = impl_->etags_of_repo(repo);
  impl_->content.set_branch(repo, branch, std::nullopt);
  impl_->content.prune(repo);
  impl_->content.collect_objects();
  impl_->release_unreferenced(etags);
  return json_reply(200, Json::object());
}

Reply Hosting::super_squash(const Requester& who, const RepoId& repo, const std::string& branch,
                            const std::string& body) {
  if (auto refused = write_refusal(read_refusal(who, repo), impl_->role(namespaces_, who, repo), who, Role::admin))
    return *refused;
  std::string message = "Super-squash branch '" + branch + "' using huggingface_hub";
  if (auto json = parse_object(body)) {
    if (const std::string given = string_field(*json, "message"); !given.empty()) message = given;
  }
  std::lock_guard changing(impl_->changes);
  const auto etags = impl_->etags_of_repo(repo);
  auto done = impl_->content.squash(repo, branch, message, impl_->author(who));
  if (auto* refused = std::get_if<CommitRefusal>(&done))
    return error_reply(refused->status, refused->message, refused->code);
  impl_->content.prune(repo);
  impl_->content.collect_objects();
  impl_->release_unreferenced(etags);
  return json_reply(200, {{"commitId", std::get<Sha1>(done).hex()}});
}

Reply Hosting::info(const Requester& who, const RepoId& repo, const std::optional<std::string>& rev,
                    std::string_view query) {
  const auto hosted = served_repo(repo);
  if (!hosted) return repo_not_found();
  if (auto refused = read_refusal(who, repo)) return *refused;
  const std::string revision = rev.value_or("main");
  const auto commit = impl_->commit_id(repo, revision);
  if (!commit) return revision_not_found(revision);
  bool blobs = false;
  std::vector<std::string> expand;
  for (const auto& [name, value] : url::parse_query(query)) {
    if (name == "blobs") blobs = is_true(value);
    if (name == "expand" || name == "expand[]") expand.push_back(value);
  }
  const Snapshot files = impl_->content.snapshot(repo, *commit);
  const auto fields = impl_->commit_fields(*commit);
  Json siblings = Json::array();
  std::uint64_t used = 0;
  for (const auto& [path, file] : files) {
    Json sibling{{"rfilename", path}};
    if (blobs) {
      sibling["size"] = file.size;
      sibling["blobId"] = file.blob.hex();
      if (file.lfs)
        sibling["lfs"] = {{"sha256", file.lfs->hex()}, {"size", file.size}, {"pointerSize", pointer_size(file)}};
    }
    used += file.size;
    siblings.push_back(std::move(sibling));
  }
  Json info{{"_id", hosted->id}, {"id", repo.name}};
  if (repo.type == RepoType::model) info["modelId"] = repo.name;
  info.update(Json{{"author", std::string(namespace_of(repo))},
                   {"sha", commit->hex()},
                   {"lastModified", iso_time(fields ? fields->committer.time : hosted->created)},
                   {"createdAt", iso_time(hosted->created)},
                   {"private", hosted->is_private},
                   {"gated", false},
                   {"disabled", false},
                   {"downloads", 0},
                   {"likes", 0},
                   {"tags", Json::array()},
                   {"usedStorage", used},
                   {"xetEnabled", false},
                   {"siblings", std::move(siblings)}});
  if (repo.type == RepoType::space) info["sdk"] = "static";
  if (!expand.empty()) {
    Json only{{"_id", info["_id"]}, {"id", info["id"]}};
    for (const auto& key : expand)
      if (info.contains(key)) only[key] = info[key];
    info = std::move(only);
  }
  return json_reply(200, info);
}

Reply Hosting::tree(const Requester& who, const RepoId& repo, const std::string& rev, const std::string& path,
                    std::string_view query, const std::string& base) {
  if (auto refused = read_refusal(who, repo)) return *refused;
  const auto commit = impl_->commit_id(repo, rev);
  if (!commit) return revision_not_found(rev);
  bool recursive = false, expand = false;
  std::string cursor;
  std::size_t limit = kTreePage;
  for (const auto& [name, value] : url::parse_query(query)) {
    if (name == "recursive") recursive = is_true(value);
    if (name == "expand") expand = is_true(value);
    if (name == "cursor") cursor = value;
    if (name == "limit") {
      std::size_t n = 0;
      if (std::from_chars(value.data(), value.data() + value.size(), n).ec == std::errc{} && n > 0)
        limit = std::min(n, kTreePage);
    }
  }
  const Snapshot files = impl_->content.snapshot(repo, *commit);
  const std::string folder = path.empty() ? "" : path + "/";
  // Entries under `folder`, folders before their contents, in path order.
  std::map<std::string, std::optional<SnapshotFile>> entries;
  bool found = path.empty();
  for (const auto& [file_path, file] : files) {
    if (!file_path.starts_with(folder)) continue;
    found = true;
    const std::string rest = file_path.substr(folder.size());
    std::size_t from = 0;
    for (auto slash = rest.find('/'); slash != std::string::npos; slash = rest.find('/', from)) {
      entries.emplace(folder + rest.substr(0, slash), std::nullopt);
      if (!recursive) break;
      from = slash + 1;
    }
    if (recursive || rest.find('/') == std::string::npos) entries[file_path] = file;
  }
  if (!found) return error_reply(404, path + " does not exist on \"" + rev + "\"", "EntryNotFound");
  auto it = cursor.empty() ? entries.begin() : entries.upper_bound(cursor);
  Json out = Json::array();
  const auto fields = expand ? impl_->commit_fields(*commit) : std::nullopt;
  for (; it != entries.end() && out.size() < limit; ++it) {
    Json entry =
        it->second
            ? impl_->tree_entry(it->first, *it->second)
            : Json{{"type", "directory"}, {"oid", Impl::folder_id(files, it->first)}, {"size", 0}, {"path", it->first}};
    if (expand && fields) {
      const auto newline = fields->message.find('\n');
      entry["lastCommit"] = {{"id", commit->hex()},
                             {"title", fields->message.substr(0, newline)},
                             {"date", iso_time(fields->committer.time)}};
    }
    out.push_back(std::move(entry));
  }
  Reply reply = json_reply(200, out);
  if (it != entries.end()) {
    std::string next = base + "/api/" + std::string(repo.api_segment()) + "/" + repo.name + "/tree/" + url::encode(rev);
    if (!path.empty()) next += "/" + url::encode(path, /*keep_slash=*/true);
    next += "?recursive=" + std::string(recursive ? "true" : "false") + "&expand=" + (expand ? "true" : "false") +
            "&limit=" + std::to_string(limit) + "&cursor=" + url::encode(std::prev(it)->first);
    reply.headers.emplace_back("Link", "<" + next + ">; rel=\"next\"");
  }
  return reply;
}

Reply Hosting::paths_info(const Requester& who, const RepoId& repo, const std::string& rev,
                          const std::string& content_type, const std::string& body) {
  if (auto refused = read_refusal(who, repo)) return *refused;
  const auto commit = impl_->commit_id(repo, rev);
  if (!commit) return revision_not_found(rev);
  std::vector<std::string> paths;
  if (content_type.find("json") != std::string::npos) {
    auto json = parse_object(body);
    if (!json) return error_reply(400, "Invalid paths-info body");
    if (auto p = json->find("paths"); p != json->end()) {
      if (p->is_string()) paths.push_back(p->get<std::string>());
      if (p->is_array())
        for (const auto& item : *p)
          if (item.is_string()) paths.push_back(item.get<std::string>());
    }
  } else {
    for (const auto& [name, value] : url::parse_query(body))
      if (name == "paths" || name == "paths[]") paths.push_back(value);
  }
  const Snapshot files = impl_->content.snapshot(repo, *commit);
  Json out = Json::array();
  for (std::string path : paths) {
    while (path.ends_with('/')) path.pop_back();
    while (path.starts_with('/')) path.erase(0, 1);
    if (auto it = files.find(path); it != files.end()) {
      out.push_back(impl_->tree_entry(path, it->second));
    } else if (!path.empty()) {
      if (auto under = files.lower_bound(path + "/"); under != files.end() && under->first.starts_with(path + "/"))
        out.push_back({{"type", "directory"}, {"oid", Impl::folder_id(files, path)}, {"size", 0}, {"path", path}});
    }
  }
  return json_reply(200, out);
}

Reply Hosting::refs(const Requester& who, const RepoId& repo, std::string_view query) {
  if (auto refused = read_refusal(who, repo)) return *refused;
  bool prs = false;
  for (const auto& [name, value] : url::parse_query(query))
    if (name == "include_prs") prs = is_true(value);
  Json branches = Json::array(), pulls = Json::array();
  for (const auto& [name, id] : impl_->content.branches(repo)) {
    if (pr_number(name)) {
      pulls.push_back({{"name", name}, {"ref", name}, {"targetCommit", id.hex()}});
    } else {
      branches.push_back({{"name", name}, {"ref", "refs/heads/" + name}, {"targetCommit", id.hex()}});
    }
  }
  Json out{{"branches", std::move(branches)}, {"tags", Json::array()}, {"converts", Json::array()}};
  if (prs) out["pullRequests"] = std::move(pulls);
  return json_reply(200, out);
}

Reply Hosting::commits(const Requester& who, const RepoId& repo, const std::string& rev, std::string_view query,
                       const std::string& base) {
  if (auto refused = read_refusal(who, repo)) return *refused;
  const auto head = impl_->commit_id(repo, rev);
  if (!head) return revision_not_found(rev);
  std::size_t page = 0, limit = kCommitsPage;
  for (const auto& [name, value] : url::parse_query(query)) {
    std::size_t n = 0;
    const bool number = std::from_chars(value.data(), value.data() + value.size(), n).ec == std::errc{};
    if (name == "p" && number) page = n;
    if (name == "limit" && number && n > 0) limit = std::min<std::size_t>(n, 1000);
  }
  Json out = Json::array();
  std::size_t index = 0;
  bool more = false;
  for (std::optional<Sha1> at = head; at;) {
    const auto fields = impl_->commit_fields(*at);
    if (!fields) break;
    if (index >= (page + 1) * limit) {
      more = true;
      break;
    }
    if (index >= page * limit) {
      const auto newline = fields->message.find('\n');
      std::string title = fields->message.substr(0, newline);
      std::string message = newline == std::string::npos ? "" : fields->message.substr(newline + 1);
      while (message.starts_with('\n')) message.erase(0, 1);
      while (message.ends_with('\n')) message.pop_back();
      out.push_back({{"id", at->hex()},
                     {"title", title},
                     {"message", message},
                     {"date", iso_time(fields->author.time)},
                     {"authors", Json::array({Json{{"user", fields->author.name}, {"avatar", nullptr}}})},
                     {"parents", Json::array()}});
      for (const auto& parent : fields->parents) out.back()["parents"].push_back(parent.hex());
    }
    ++index;
    at = fields->parents.empty() ? std::nullopt : std::optional<Sha1>(fields->parents.front());
  }
  Reply reply = json_reply(200, out);
  if (more) {
    const std::string next = base + "/api/" + std::string(repo.api_segment()) + "/" + repo.name + "/commits/" +
                             url::encode(rev) + "?p=" + std::to_string(page + 1) + "&limit=" + std::to_string(limit);
    reply.headers.emplace_back("Link", "<" + next + ">; rel=\"next\"");
  }
  return reply;
}

Reply Hosting::whoami(const Requester& who) {
  if (who.user.empty()) return error_reply(401, "Invalid credentials in Authorization header");
  Json orgs = Json::array();
  for (const auto& [org, role] : namespaces_.orgs_of(who.user))
    orgs.push_back({{"type", "org"}, {"name", org}, {"fullname", org}, {"roleInOrg", std::string(role_name(role))}});
  const std::string email = impl_->deps.email_of ? impl_->deps.email_of(who.user) : std::string();
  return json_reply(
      200, {{"type", "user"},
            {"id", cache::sha256(who.user).hex().substr(0, 24)},
            {"name", who.user},
            {"fullname", who.user},
            {"email", email.empty() ? Json(nullptr) : Json(email)},
            {"emailVerified", !email.empty()},
            {"isPro", false},
            {"canPay", false},
            {"orgs", std::move(orgs)},
            {"auth",
             {{"type", "access_token"},
              {"accessToken", {{"displayName", "node key"}, {"role", "write"}, {"createdAt", iso_time(0)}}}}}});
}

Reply Hosting::list_repos(const Requester& who, RepoType type, std::string_view author) {
  Json out = Json::array();
  if (impl_->withheld(author)) return json_reply(200, out);
  for (const HostedRepo& hosted : namespaces_.repos_in(author)) {
    if (hosted.repo.type != type) continue;
    if (hosted.is_private && !impl_->role(namespaces_, who, hosted.repo)) continue;
    const auto head = impl_->content.head(hosted.repo, "main");
    Json item{{"_id", hosted.id},
              {"id", hosted.repo.name},
              {"private", hosted.is_private},
              {"gated", false},
              {"createdAt", iso_time(hosted.created)},
              {"downloads", 0},
              {"likes", 0},
              {"tags", Json::array()}};
    if (head) item["sha"] = head->hex();
    if (type == RepoType::model) item["modelId"] = hosted.repo.name;
    out.push_back(std::move(item));
  }
  return json_reply(200, out);
}

std::uint64_t Hosting::keep(std::unordered_set<std::string>& kept) {
  return impl_->referenced(kept);
}

void Hosting::collect_garbage() {
  std::lock_guard changing(impl_->changes);
  const std::int64_t now = seconds(impl_->deps.clock);
  std::vector<RecordStore::Write> expired;
  std::set<std::string> candidates;
  impl_->for_each_pending([&](std::string_view etag, std::string_view repo_key, std::int64_t stored) {
    if (now - stored <= kPendingLifetime) return;
    if (auto repo = parse_repo_key(repo_key))
      expired.push_back({Impl::pending_key(std::string(etag), *repo), std::nullopt});
    candidates.emplace(etag);
  });
  if (!expired.empty()) impl_->deps.records.write(RecordTable::hosting, expired, /*sync=*/true);
  impl_->release_unreferenced(candidates);
  // Staging folders of uploads cut off and never retried.
  const auto cutoff = std::filesystem::file_time_type::clock::now() - std::chrono::seconds(kPendingLifetime);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(impl_->deps.store.root() / "staging", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("upload-") && !name.starts_with("multipart-") && !name.starts_with("inline-")) continue;
    std::error_code ignored;
    if (entry.last_write_time(ignored) < cutoff) std::filesystem::remove_all(entry.path(), ignored);
  }
}

}  // namespace inferllama::hosting
