// What a hosted repo holds: its branches, the snapshot of each commit and the git objects that name them,
// in the `hosting` column family. A commit is checked against the branch's head and written in one atomic
// batch: readers see the branch before it or after it, never half of it.
#pragma once
#include <mutex>
#include <optional>
#include <string>
#include <variant>

#include "hosting/snapshot.hpp"
#include "inferllama/records.hpp"
#include "inferllama/repo.hpp"

namespace inferllama::hosting {

class RepoContent {
 public:
  explicit RepoContent(RecordStore& records);

  std::optional<Sha1> head(const RepoId& repo, const std::string& branch);
  // Every file of `repo` at `commit` (empty for a commit it does not hold).
  Snapshot snapshot(const RepoId& repo, const Sha1& commit);
  std::optional<SnapshotFile> file(const RepoId& repo, const Sha1& commit, const std::string& path);
  // A tree or commit (a file's bytes are in the chunk store, under its blob id).
  std::optional<GitObject> object(const Sha1& id);

  // Every branch (and refs/pr/N) with its head.
  std::vector<std::pair<std::string, Sha1>> branches(const RepoId& repo);

  // Applies `payload` to the head of `branch` and moves the branch. A branch that does not exist yet starts
  // at the head of `base` (a pull request's), or empty (a repo's first commit). A `parentCommit` that is
  // not the head it starts from is refused with 412, as the Hub does.
  std::variant<Sha1, CommitRefusal> commit(
      const RepoId& repo, const std::string& branch, const CommitPayload& payload, const CommitAuthor& who,
      const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored_size,
      const std::optional<std::string>& base = std::nullopt);
  // Points `branch` at `commit` (nullopt deletes it).
  void set_branch(const RepoId& repo, const std::string& branch, const std::optional<Sha1>& commit);
  // Makes `commit` the only commit of `branch`: its snapshot under a new commit without parents.
  std::variant<Sha1, CommitRefusal> squash(const RepoId& repo, const std::string& branch, const std::string& message,
                                           const CommitAuthor& who);
  // The commits of the repo no branch reaches any more lose their snapshots.
  void prune(const RepoId& repo);
  // Drops the trees and commits no branch of any repo reaches (a deleted repo's, a squashed history's).
  void collect_objects();

  // Forgets the repo's branches and snapshots (its objects may be shared with other repos' commits).
  void forget(const RepoId& repo);
  // The repo's branches and snapshots are `to`'s (a namespace renamed; the git objects are shared by id).
  void move(const RepoId& from, const RepoId& to);

 private:
  RecordStore& records_;
  std::mutex commit_mutex_;  // one commit at a time: the head read and the batch that moves it
};

}  // namespace inferllama::hosting
