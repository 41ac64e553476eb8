#include "hosting/snapshot.hpp"

namespace inferllama::hosting {

std::variant<AppliedCommit, CommitRefusal> apply_commit(
    const Snapshot& parent, const std::optional<Sha1>& parent_commit, const CommitPayload& payload,
    const CommitAuthor& who, const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored_size) {
  AppliedCommit out;
  out.files = parent;
  auto add_blob = [&](std::string content) {
    out.objects.push_back(make_git_object("blob", std::move(content)));
    return out.objects.back().id;
  };
  for (const CommitOperation& operation : payload.operations) {
    if (const auto* file = std::get_if<AddFile>(&operation)) {
      const std::uint64_t size = file->content.size();
      out.files[file->path] = SnapshotFile{add_blob(file->content), size, std::nullopt};
    } else if (const auto* lfs = std::get_if<AddLfsFile>(&operation)) {
      const auto size = stored_size(lfs->oid);
      if (!size) {
        return CommitRefusal{400, "",
                             "Your push was rejected because an LFS pointer pointed to a file that does not "
                             "exist: upload " +
                                 lfs->oid.hex() + " first (" + lfs->path + ")"};
      }
      if (lfs->size && *lfs->size != *size) {
        return CommitRefusal{400, "",
                             "the LFS object " + lfs->oid.hex() + " of " + lfs->path + " has " + std::to_string(*size) +
                                 " bytes, not " + std::to_string(*lfs->size)};
      }
      out.files[lfs->path] = SnapshotFile{add_blob(lfs_pointer(lfs->oid, *size)), *size, lfs->oid};
    } else if (const auto* deleted = std::get_if<DeleteFile>(&operation)) {
      if (out.files.erase(deleted->path) == 0) {
        return CommitRefusal{404, "EntryNotFound", "A file with this name doesn't exist: " + deleted->path};
      }
    } else if (const auto* folder = std::get_if<DeleteFolder>(&operation)) {
      const std::string prefix = folder->path + '/';
      auto first = out.files.lower_bound(prefix);
      auto last = first;
      while (last != out.files.end() && last->first.starts_with(prefix)) ++last;
      if (first == last) {
        return CommitRefusal{404, "EntryNotFound", "A folder with this name doesn't exist: " + folder->path};
      }
      out.files.erase(first, last);
    }
  }
  std::vector<TreeFile> tree;
  tree.reserve(out.files.size());
  for (const auto& [path, file] : out.files) tree.push_back({path, file.blob});
  auto trees = build_trees(std::move(tree));
  if (!trees) return CommitRefusal{400, "", "a path of this commit is a file and a folder at once"};
  const Sha1 root = trees->back().id;
  for (GitObject& object : *trees) out.objects.push_back(std::move(object));

  CommitFields fields;
  fields.tree = root;
  if (parent_commit) fields.parents.push_back(*parent_commit);
  fields.author = who.author;
  fields.committer = who.committer;
  fields.message = payload.header.summary;
  if (!payload.header.description.empty()) fields.message += "\n\n" + payload.header.description;
  out.objects.push_back(make_commit(fields));
  out.commit = out.objects.back().id;
  return out;
}

}  // namespace inferllama::hosting
