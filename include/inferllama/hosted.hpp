// The node's own repos as the hub view sees them: a repo of a namespace the node owns (a user's, an
// organisation's) is answered by the node and never asked of the upstream. Implemented by src/hosting/.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/index.hpp"
#include "inferllama/repo.hpp"

namespace inferllama {

class HostedRepos {
 public:
  virtual ~HostedRepos() = default;

  // The repo's namespace is the node's: nothing of it goes upstream, whether the repo exists or not.
  // Cheap (memory only): the request path asks it of every repo.
  virtual bool owns(const RepoId& repo) const = 0;
  // Public or private; nullopt when the node hosts no such repo.
  virtual std::optional<RepoVisibility> visibility(const RepoId& repo) = 0;
  // The commit a branch, refs/pr/N or commit id names; nullopt when it names none.
  virtual std::optional<std::string> commit_of(const RepoId& repo, const std::string& rev) = 0;
  struct File {
    std::string path;
    FileEntry file;  // etag: the LFS object's SHA-256, else the git blob id
  };
  // Every file of the repo at `commit`; nullopt when the repo holds no such commit.
  virtual std::optional<std::vector<File>> files(const RepoId& repo, const std::string& commit) = 0;
  // One file of the repo at `commit` (a lookup, not a listing); nullopt when it has none at that path.
  virtual std::optional<FileEntry> file(const RepoId& repo, const std::string& commit, const std::string& path) = 0;
};

}  // namespace inferllama
