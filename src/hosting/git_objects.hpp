// The git objects of a hosted repo's commits: a commit's id is what git computes for the same content,
// so the clients' commit ids, `parentCommit` checks and `oid` comparisons hold as they do on the Hub.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/digest.hpp"

namespace inferllama::hosting {

// A git object as git stores it: the SHA-1 of "<type> <size>\0<content>" names it.
struct GitObject {
  std::string type;  // "blob", "tree" or "commit"
  std::string content;
  Sha1 id;
};

GitObject make_git_object(std::string type, std::string content);

// The blob git-lfs commits in place of a file it keeps apart (the spec's canonical pointer: version,
// oid, size, each line ending in a newline).
std::string lfs_pointer(const Sha256& oid, std::uint64_t size);

// One file of a snapshot: its path ("a/b/c.txt", already checked to be a safe relative path) and the blob
// that holds it (for an LFS file, its pointer's blob).
struct TreeFile {
  std::string path;
  Sha1 blob;
};

// Every tree object of a snapshot, each folder's before its parent's, the root's last; nullopt when a path
// is a file and a folder at once ("a" and "a/b"), or appears twice.
std::optional<std::vector<GitObject>> build_trees(std::vector<TreeFile> files);

// Who made a commit and when (seconds since the epoch, UTC).
struct Signature {
  std::string name;
  std::string email;
  std::int64_t time = 0;
};

struct CommitFields {
  Sha1 tree;
  std::vector<Sha1> parents;
  Signature author;
  Signature committer;
  std::string message;  // git's form: ends with a newline (added when missing)
};

GitObject make_commit(const CommitFields& fields);
// A commit object's fields back; nullopt when `content` is not one.
std::optional<CommitFields> parse_commit(std::string_view content);

}  // namespace inferllama::hosting
