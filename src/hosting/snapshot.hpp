// A hosted repo's snapshot (every file of a commit) and a commit applied to it: the new snapshot and the
// git objects that name it, so that the commit id is the one git gives the same content.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "hosting/commit_payload.hpp"
#include "hosting/git_objects.hpp"

namespace inferllama::hosting {

struct SnapshotFile {
  Sha1 blob;                  // the git blob: the file itself, or for an LFS file its pointer
  std::uint64_t size = 0;     // the file's own size
  std::optional<Sha256> lfs;  // the LFS object, for an LFS file
};
using Snapshot = std::map<std::string, SnapshotFile>;

struct AppliedCommit {
  Snapshot files;
  std::vector<GitObject> objects;  // new blobs (inline files, LFS pointers), every tree, the commit (last)
  Sha1 commit;
};

// Why a commit is refused, as the Hub answers it.
struct CommitRefusal {
  unsigned status = 400;
  std::string code;  // X-Error-Code, or ""
  std::string message;
};

struct CommitAuthor {
  Signature author;
  Signature committer;
};

// `parent` is the branch's snapshot at `parent_commit` (none for a repo's first commit); `stored_size`
// gives the size of a stored LFS object (nullopt: the client never uploaded it).
std::variant<AppliedCommit, CommitRefusal> apply_commit(
    const Snapshot& parent, const std::optional<Sha1>& parent_commit, const CommitPayload& payload,
    const CommitAuthor& who, const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored_size);

}  // namespace inferllama::hosting
