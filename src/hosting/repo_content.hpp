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
  std::optional<GitObject> object(const Sha1& id);

  // Applies `payload` to the head of `branch` (created by the first commit) and moves the branch. A
  // `parentCommit` that is not the head is refused with 412, as the Hub does.
  std::variant<Sha1, CommitRefusal> commit(
      const RepoId& repo, const std::string& branch, const CommitPayload& payload, const CommitAuthor& who,
      const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored_size);

  // Forgets the repo's branches and snapshots (its objects may be shared with other repos' commits).
  void forget(const RepoId& repo);

 private:
  RecordStore& records_;
  std::mutex commit_mutex_;  // one commit at a time: the head read and the batch that moves it
};

}  // namespace inferllama::hosting
