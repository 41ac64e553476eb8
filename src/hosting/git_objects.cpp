#include "hosting/git_objects.hpp"

#include <charconv>

#include <algorithm>
#include <map>
#include <tuple>

#include "cache/hashing.hpp"

namespace inferllama::hosting {
namespace {

// A folder of a snapshot while its trees are built.
struct Folder {
  std::map<std::string, Folder> folders;
  std::map<std::string, Sha1> files;
};

bool insert(Folder& root, std::string_view path, const Sha1& blob) {
  Folder* folder = &root;
  for (auto slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/')) {
    const std::string name(path.substr(0, slash));
    if (folder->files.contains(name)) return false;
    folder = &folder->folders[name];
    path.remove_prefix(slash + 1);
  }
  const std::string name(path);
  if (folder->folders.contains(name)) return false;
  return folder->files.emplace(name, blob).second;
}

// Git orders a tree's entries by name, a folder's name compared as if it ended in '/'.
Sha1 emit(const Folder& folder, std::vector<GitObject>& out) {
  std::vector<std::tuple<std::string, std::string_view, const std::string*, Sha1>> entries;  // key, mode, name, id
  for (const auto& [name, sub] : folder.folders) entries.emplace_back(name + '/', "40000", &name, emit(sub, out));
  for (const auto& [name, blob] : folder.files) entries.emplace_back(name, "100644", &name, blob);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::string content;
  for (const auto& [key, mode, name, id] : entries) {
    content.append(mode).append(" ").append(*name).push_back('\0');
    content.append(id.raw());
  }
  out.push_back(make_git_object("tree", std::move(content)));
  return out.back().id;
}

// A name or an email as a commit header holds it: git's own delimiters and line breaks left out.
std::string header_text(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c != '<' && c != '>' && c != '\n' && c != '\r' && c != '\0') out += c;
  }
  return out;
}

std::string signature_line(std::string_view role, const Signature& who) {
  return std::string(role) + ' ' + header_text(who.name) + " <" + header_text(who.email) + "> " +
         std::to_string(who.time) + " +0000\n";
}

}  // namespace

GitObject make_git_object(std::string type, std::string content) {
  cache::Sha1Stream stream;
  stream.update(type + ' ' + std::to_string(content.size()) + '\0');
  stream.update(content);
  return GitObject{std::move(type), std::move(content), stream.finish()};
}

std::string lfs_pointer(const Sha256& oid, std::uint64_t size) {
  return "version https://git-lfs.github.com/spec/v1\noid sha256:" + oid.hex() + "\nsize " + std::to_string(size) +
         "\n";
}

std::optional<std::vector<GitObject>> build_trees(std::vector<TreeFile> files) {
  Folder root;
  for (const TreeFile& file : files) {
    if (!insert(root, file.path, file.blob)) return std::nullopt;
  }
  std::vector<GitObject> trees;
  emit(root, trees);
  return trees;
}

GitObject make_commit(const CommitFields& fields) {
  std::string content = "tree " + fields.tree.hex() + "\n";
  for (const Sha1& parent : fields.parents) content += "parent " + parent.hex() + "\n";
  content += signature_line("author", fields.author);
  content += signature_line("committer", fields.committer);
  content += '\n';
  content += fields.message;
  if (!content.ends_with('\n')) content += '\n';
  return make_git_object("commit", std::move(content));
}

namespace {

// "Name <email> 1700000000 +0000"
std::optional<Signature> parse_signature(std::string_view text) {
  const auto open = text.rfind('<');
  const auto close = text.rfind('>');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return std::nullopt;
  Signature who;
  who.name = std::string(text.substr(0, open > 0 ? open - 1 : 0));
  who.email = std::string(text.substr(open + 1, close - open - 1));
  std::string_view time = text.substr(close + 1);
  while (time.starts_with(' ')) time.remove_prefix(1);
  time = time.substr(0, time.find(' '));
  if (std::from_chars(time.data(), time.data() + time.size(), who.time).ec != std::errc{}) return std::nullopt;
  return who;
}

}  // namespace

std::optional<CommitFields> parse_commit(std::string_view content) {
  CommitFields fields;
  bool has_tree = false;
  while (!content.empty()) {
    const auto end = content.find('\n');
    if (end == std::string_view::npos) return std::nullopt;
    const std::string_view line = content.substr(0, end);
    content.remove_prefix(end + 1);
    if (line.empty()) break;
    const auto space = line.find(' ');
    const std::string_view field = line.substr(0, space);
    const std::string_view value = space == std::string_view::npos ? "" : line.substr(space + 1);
    if (field == "tree") {
      auto id = Sha1::from_hex(value);
      if (!id) return std::nullopt;
      fields.tree = *id;
      has_tree = true;
    } else if (field == "parent") {
      auto id = Sha1::from_hex(value);
      if (!id) return std::nullopt;
      fields.parents.push_back(*id);
    } else if (field == "author" || field == "committer") {
      auto who = parse_signature(value);
      if (!who) return std::nullopt;
      (field == "author" ? fields.author : fields.committer) = std::move(*who);
    }
  }
  if (!has_tree) return std::nullopt;
  fields.message = std::string(content);
  return fields;
}

}  // namespace inferllama::hosting
