#include "hosting/repo_content.hpp"

#include <charconv>
#include <set>
#include <stdexcept>

namespace inferllama::hosting {
namespace {

// Keys of RecordTable::hosting, beside namespaces.cpp's (org|, member|, member-of|, repo|).
std::string ref_key(const RepoId& repo, const std::string& branch) {
  return "ref|" + repo.key() + '\0' + branch;
}
std::string snapshot_prefix(const RepoId& repo, const Sha1& commit) {
  return "snap|" + repo.key() + '\0' + commit.hex() + '\0';
}
std::string object_key(const Sha1& id) {
  return "obj|" + id.hex();
}

// blob hex, size, LFS oid hex or "": '|'-separated.
std::string encode(const SnapshotFile& file) {
  return file.blob.hex() + '|' + std::to_string(file.size) + '|' + (file.lfs ? file.lfs->hex() : std::string());
}

std::optional<SnapshotFile> decode(std::string_view value) {
  const auto first = value.find('|');
  const auto second = value.find('|', first + 1);
  if (first == std::string_view::npos || second == std::string_view::npos) return std::nullopt;
  SnapshotFile file;
  auto blob = Sha1::from_hex(value.substr(0, first));
  const std::string_view size = value.substr(first + 1, second - first - 1);
  if (!blob || std::from_chars(size.data(), size.data() + size.size(), file.size).ec != std::errc{})
    return std::nullopt;
  file.blob = *blob;
  if (const std::string_view lfs = value.substr(second + 1); !lfs.empty()) {
    file.lfs = Sha256::from_hex(lfs);
    if (!file.lfs) return std::nullopt;
  }
  return file;
}

}  // namespace

RepoContent::RepoContent(RecordStore& records) : records_(records) {}

std::optional<Sha1> RepoContent::head(const RepoId& repo, const std::string& branch) {
  auto value = records_.get(RecordTable::hosting, ref_key(repo, branch));
  if (!value) return std::nullopt;
  return Sha1::from_hex(*value);
}

Snapshot RepoContent::snapshot(const RepoId& repo, const Sha1& commit) {
  Snapshot files;
  const std::string prefix = snapshot_prefix(repo, commit);
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view value) {
    auto file = decode(value);
    if (!file) throw std::runtime_error("a hosted snapshot record of " + repo.key() + " is damaged");
    files.emplace(std::string(key.substr(prefix.size())), *file);
    return true;
  });
  return files;
}

std::optional<SnapshotFile> RepoContent::file(const RepoId& repo, const Sha1& commit, const std::string& path) {
  auto value = records_.get(RecordTable::hosting, snapshot_prefix(repo, commit) + path);
  if (!value) return std::nullopt;
  auto file = decode(*value);
  if (!file) throw std::runtime_error("a hosted snapshot record of " + repo.key() + " is damaged");
  return file;
}

std::optional<GitObject> RepoContent::object(const Sha1& id) {
  auto value = records_.get(RecordTable::hosting, object_key(id));
  if (!value) return std::nullopt;
  const auto nul = value->find('\0');
  if (nul == std::string::npos) return std::nullopt;
  return GitObject{value->substr(0, nul), value->substr(nul + 1), id};
}

std::vector<std::pair<std::string, Sha1>> RepoContent::branches(const RepoId& repo) {
  std::vector<std::pair<std::string, Sha1>> out;
  const std::string prefix = "ref|" + repo.key() + '\0';
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view value) {
    if (auto id = Sha1::from_hex(value)) out.emplace_back(std::string(key.substr(prefix.size())), *id);
    return true;
  });
  return out;
}

void RepoContent::set_branch(const RepoId& repo, const std::string& branch, const std::optional<Sha1>& commit) {
  std::lock_guard lock(commit_mutex_);
  std::optional<std::string> value;
  if (commit) value = commit->hex();
  records_.write(RecordTable::hosting, {{ref_key(repo, branch), value}}, /*sync=*/true);
}

void RepoContent::prune(const RepoId& repo) {
  std::lock_guard lock(commit_mutex_);
  std::set<std::string> reachable;
  std::vector<Sha1> todo;
  for (const auto& [name, id] : branches(repo)) todo.push_back(id);
  while (!todo.empty()) {
    const Sha1 id = todo.back();
    todo.pop_back();
    if (!reachable.insert(id.hex()).second) continue;
    if (auto object = this->object(id)) {
      if (auto fields = parse_commit(object->content))
        todo.insert(todo.end(), fields->parents.begin(), fields->parents.end());
    }
  }
  const std::string prefix = "snap|" + repo.key() + '\0';
  std::set<std::string> unreachable;
  records_.scan(RecordTable::hosting, prefix, [&](std::string_view key, std::string_view) {
    const std::string_view rest = key.substr(prefix.size());
    const std::string commit(rest.substr(0, rest.find('\0')));
    if (!reachable.contains(commit)) unreachable.insert(commit);
    return true;
  });
  for (const std::string& commit : unreachable) {
    std::string begin = prefix + commit + '\0';
    std::string end = begin;
    end.back() = '\1';
    records_.erase_range(RecordTable::hosting, begin, end);
  }
}

void RepoContent::collect_objects() {
  std::lock_guard lock(commit_mutex_);
  std::set<std::string> reachable;
  std::vector<Sha1> todo;
  records_.scan(RecordTable::hosting, "ref|", [&](std::string_view, std::string_view value) {
    if (auto id = Sha1::from_hex(value)) todo.push_back(*id);
    return true;
  });
  while (!todo.empty()) {
    const Sha1 id = todo.back();
    todo.pop_back();
    if (!reachable.insert(id.hex()).second) continue;
    auto found = object(id);
    if (!found) continue;
    if (found->type == "commit") {
      if (auto fields = parse_commit(found->content)) {
        todo.push_back(fields->tree);
        todo.insert(todo.end(), fields->parents.begin(), fields->parents.end());
      }
    } else if (found->type == "tree") {
      // Entries: "{mode} {name}\0" and 20 bytes of id; folders (mode 40000) are trees to follow.
      std::string_view rest = found->content;
      while (!rest.empty()) {
        const auto nul = rest.find('\0');
        if (nul == std::string_view::npos || rest.size() < nul + 21) break;
        const bool folder = rest.starts_with("40000 ");
        if (folder) {
          if (auto child = Sha1::from_raw(rest.substr(nul + 1, 20))) todo.push_back(*child);
        }
        rest.remove_prefix(nul + 21);
      }
    }
  }
  std::vector<RecordStore::Write> unreachable;
  records_.scan(RecordTable::hosting, "obj|", [&](std::string_view key, std::string_view) {
    if (!reachable.contains(std::string(key.substr(4)))) unreachable.push_back({std::string(key), std::nullopt});
    return true;
  });
  if (!unreachable.empty()) records_.write(RecordTable::hosting, unreachable, /*sync=*/true);
}

std::variant<Sha1, CommitRefusal> RepoContent::squash(const RepoId& repo, const std::string& branch,
                                                      const std::string& message, const CommitAuthor& who) {
  std::lock_guard lock(commit_mutex_);
  const auto current = head(repo, branch);
  if (!current) return CommitRefusal{404, "RevisionNotFound", "Invalid rev id: " + branch};
  const Snapshot files = snapshot(repo, *current);
  std::vector<TreeFile> tree_files;
  for (const auto& [path, file] : files) tree_files.push_back({path, file.blob});
  auto trees = build_trees(std::move(tree_files));
  if (!trees || trees->empty()) return CommitRefusal{500, "", "the snapshot of " + branch + " is damaged"};
  const GitObject commit = make_commit({trees->back().id, {}, who.author, who.committer, message});
  std::vector<RecordStore::Write> writes;
  for (const GitObject& object : *trees) writes.push_back({object_key(object.id), object.type + '\0' + object.content});
  writes.push_back({object_key(commit.id), commit.type + '\0' + commit.content});
  const std::string prefix = snapshot_prefix(repo, commit.id);
  for (const auto& [path, file] : files) writes.push_back({prefix + path, encode(file)});
  writes.push_back({ref_key(repo, branch), commit.id.hex()});
  records_.write(RecordTable::hosting, writes, /*sync=*/true);
  return commit.id;
}

std::variant<Sha1, CommitRefusal> RepoContent::commit(
    const RepoId& repo, const std::string& branch, const CommitPayload& payload, const CommitAuthor& who,
    const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored_size,
    const std::optional<std::string>& base) {
  std::lock_guard lock(commit_mutex_);
  auto parent = head(repo, branch);
  if (!parent && base) {
    parent = head(repo, *base);
    if (!parent) return CommitRefusal{404, "RevisionNotFound", "Invalid rev id: " + *base};
  }
  if (payload.header.parent_commit && (!parent || parent->hex() != *payload.header.parent_commit)) {
    return CommitRefusal{412, "", "The branch was updated since you opened this page. Please refresh and try again."};
  }
  auto applied = apply_commit(parent ? snapshot(repo, *parent) : Snapshot{}, parent, payload, who, stored_size);
  if (auto* refusal = std::get_if<CommitRefusal>(&applied)) return std::move(*refusal);
  const auto& done = std::get<AppliedCommit>(applied);
  std::vector<RecordStore::Write> writes;
  writes.reserve(done.objects.size() + done.files.size() + 1);
  // Trees and commits: a file's bytes are the chunk store's, under its blob id or LFS oid, never kept twice.
  for (const GitObject& object : done.objects) {
    if (object.type != "blob") writes.push_back({object_key(object.id), object.type + '\0' + object.content});
  }
  const std::string prefix = snapshot_prefix(repo, done.commit);
  for (const auto& [path, file] : done.files) writes.push_back({prefix + path, encode(file)});
  writes.push_back({ref_key(repo, branch), done.commit.hex()});
  records_.write(RecordTable::hosting, writes, /*sync=*/true);
  return done.commit;
}

void RepoContent::forget(const RepoId& repo) {
  std::lock_guard lock(commit_mutex_);
  for (const std::string& prefix : {"ref|" + repo.key() + '\0', "snap|" + repo.key() + '\0'}) {
    std::string end = prefix;
    end.back() = '\1';  // the keys after every one that starts with the prefix
    records_.erase_range(RecordTable::hosting, prefix, end);
  }
}

void RepoContent::move(const RepoId& from, const RepoId& to) {
  std::lock_guard lock(commit_mutex_);
  for (const std::string_view kind : {"ref|", "snap|"}) {
    move_prefix(records_, RecordTable::hosting, std::string(kind) + from.key() + '\0',
                std::string(kind) + to.key() + '\0');
  }
}

}  // namespace inferllama::hosting
