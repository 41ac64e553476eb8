// The node as a hub of its own for the namespaces it owns: the Hub's repo, upload and read routes for
// hosted repos, in the Hub's words (hub::Reply), so that the unchanged Python and JS clients work against
// it. Bytes go into the same chunk store as cached files and are served, seeded and counted like them; the
// repos' branches, snapshots and git objects live in the `hosting` record table (repo_content.hpp).
// Blocking throughout (RocksDB, disk): run on the blocking pool.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hosting/namespaces.hpp"
#include "hosting/repo_content.hpp"
#include "hosting/upload_ticket.hpp"
#include "hub/reply.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/clock.hpp"
#include "inferllama/hosted.hpp"
#include "inferllama/index.hpp"

namespace inferllama::hosting {

// Who asks: the node user a key or passkey named ("" for anyone), and whether it is the node's admin.
struct Requester {
  std::string user;
  bool admin = false;
};

// A query flag as the clients spell it: "true", "True" (Python 0.x), "1".
bool is_true(std::string_view value);

struct HostingSettings {
  std::uint32_t chunk_size = 4u << 20;
  std::uint64_t quota = 0;                          // bytes per namespace, 0 for none
  std::uint64_t multipart_threshold = 64ull << 20;  // LFS objects this large upload in parts
  std::uint64_t max_object_size = 1ull << 40;       // what the batch accepts at all
  // As long as an uncommitted upload is kept: a large file's last part may go up hours after the batch.
  std::chrono::seconds upload_url_lifetime{24 * 3600};
};

class Hosting : public HostedRepos {
 public:
  struct Deps {
    RecordStore& records;
    Index& index;
    ChunkStore& store;
    const Clock& clock;
    // Whether a node user of this name exists (their namespace is the node's).
    std::function<bool(std::string_view)> user_exists;
    // The user's e-mail for commit signatures ("" when unknown).
    std::function<std::string(std::string_view)> email_of;
    // Hosted files no snapshot holds any more: their blobs, chunks and torrents go.
    std::function<void(const std::vector<std::string>& etags)> release;
    // A file was just stored (again): the store may lease it.
    std::function<void(const std::string& etag)> stored;
    // Whether `ns` is the namespace of an account deleted and not yet purged: its repos are answered as
    // missing to everyone, on every route, until it is restored (unset: none is).
    std::function<bool(std::string_view ns)> namespace_withheld = {};
  };
  Hosting(Deps deps, HostingSettings settings);
  ~Hosting() override;

  Namespaces& namespaces() { return namespaces_; }

  // HostedRepos: what the hub view, the torrents and the resolve route ask.
  bool owns(const RepoId& repo) const override;
  bool owns_namespace(std::string_view ns) const;
  std::optional<RepoVisibility> visibility(const RepoId& repo) override;
  std::optional<std::string> commit_of(const RepoId& repo, const std::string& rev) override;
  std::optional<std::vector<File>> files(const RepoId& repo, const std::string& commit) override;
  std::optional<FileEntry> file(const RepoId& repo, const std::string& commit, const std::string& path) override;

  // May `who` read the repo? A private repo is answered 404 RepoNotFound to anyone who may not, as the Hub
  // does, so its existence does not leak. nullopt: yes.
  std::optional<hub::Reply> read_refusal(const Requester& who, const RepoId& repo);

  // POST /api/repos/create: nullopt when the namespace is not the node's (the caller passes it upstream).
  std::optional<hub::Reply> create_repo(const Requester& who, const std::string& body, const std::string& base);
  std::optional<hub::Reply> delete_repo(const Requester& who, const std::string& body);
  // What delete_repo does once it has checked the caller: the repo's content and record go, and its files
  // leave the store when nothing else holds them. For the node itself (an account's purge).
  void remove_repo(const RepoId& repo);
  // A user renamed: move_namespace below, one change at a time with commits and deletions.
  std::size_t move_namespace(std::string_view from, std::string_view to);
  hub::Reply settings(const Requester& who, const RepoId& repo, const std::string& body);
  hub::Reply preupload(const Requester& who, const RepoId& repo, const std::string& rev, const std::string& body);
  hub::Reply lfs_batch(const Requester& who, const RepoId& repo, const std::string& body, const std::string& base);
  hub::Reply commit(const Requester& who, const RepoId& repo, const std::string& rev, bool create_pr,
                    const std::string& body, const std::string& base);
  hub::Reply create_discussion(const Requester& who, const RepoId& repo, const std::string& body,
                               const std::string& base);
  hub::Reply discussion(const Requester& who, const RepoId& repo, unsigned number, const std::string& base);
  hub::Reply delete_branch(const Requester& who, const RepoId& repo, const std::string& branch);
  hub::Reply create_branch(const Requester& who, const RepoId& repo, const std::string& branch,
                           const std::string& body);
  hub::Reply super_squash(const Requester& who, const RepoId& repo, const std::string& branch, const std::string& body);

  hub::Reply info(const Requester& who, const RepoId& repo, const std::optional<std::string>& rev,
                  std::string_view query);
  hub::Reply tree(const Requester& who, const RepoId& repo, const std::string& rev, const std::string& path,
                  std::string_view query, const std::string& base);
  hub::Reply paths_info(const Requester& who, const RepoId& repo, const std::string& rev,
                        const std::string& content_type, const std::string& body);
  hub::Reply refs(const Requester& who, const RepoId& repo, std::string_view query);
  hub::Reply commits(const Requester& who, const RepoId& repo, const std::string& rev, std::string_view query,
                     const std::string& base);
  hub::Reply whoami(const Requester& who);
  // Repos of the node's namespaces, for GET /api/models?author=... and the like.
  hub::Reply list_repos(const Requester& who, RepoType type, std::string_view author);

  // The signed upload URLs (no Authorization: the URL is the credential).
  std::variant<UploadTicket, hub::Reply> check_ticket(std::string_view token) const;
  // Where the bytes of one upload PUT go as they arrive (a whole object, or one part of a multipart one).
  class Upload {
   public:
    virtual ~Upload() = default;
    // Throws std::length_error past the size the ticket announced, std::system_error on a disk error.
    virtual void write(std::span<const std::uint8_t> bytes) = 0;
    // The same bytes, for the whole object's digest: may run at the same time as their write(), on another
    // thread, each slice after the one before.
    virtual void hash(std::span<const std::uint8_t> bytes) = 0;
    // After the last byte: checks it against the ticket and makes it stored, or says why not.
    virtual hub::Reply finish() = 0;
  };
  // `content_length`: nullopt when the body is chunked.
  std::variant<std::unique_ptr<Upload>, hub::Reply> begin_upload(const UploadTicket& ticket, unsigned part,
                                                                 std::optional<std::uint64_t> content_length);
  hub::Reply complete_multipart(const UploadTicket& ticket, const std::string& body);
  hub::Reply verify(const UploadTicket& ticket, const std::string& body);

  // Etags every hosted snapshot holds, and uploads not committed yet: never evicted. Returns their bytes.
  std::uint64_t keep(std::unordered_set<std::string>& kept);
  // Drops uploads left uncommitted longer than a day and the staging folders of abandoned uploads.
  void collect_garbage();

  struct Impl;  // public so that the upload sinks in hosting.cpp can reach it

 private:
  // The repo a create or delete body names, or why the body is refused; nullopt when its namespace is not
  // the node's (the caller passes the request upstream).
  std::optional<std::variant<RepoId, hub::Reply>> repo_of_request(const Requester& who,
                                                                  const nlohmann::json& json) const;
  // The repo's record, unless it does not exist or its namespace is withheld.
  std::optional<HostedRepo> served_repo(const RepoId& repo);

  std::unique_ptr<Impl> impl_;
  Namespaces namespaces_;
};

// A user renamed: every repo of namespace `from` moves to `to`, keeping its id, visibility and history (its
// branches, snapshots, pull requests, uploads not committed yet, and the scopes of its stored bytes); the old
// names answer as missing repos. A move cut short is finished by doing it again. How many repos moved. For a
// data directory no node runs on; a node moves through Hosting::move_namespace.
std::size_t move_namespace(RecordStore& records, Index& index, Namespaces& namespaces, RepoContent& content,
                           std::string_view from, std::string_view to);

}  // namespace inferllama::hosting
