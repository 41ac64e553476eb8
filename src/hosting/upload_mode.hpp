// Which files of a hosted repo are stored apart as LFS objects and which go into the commit itself, as the
// Hub's preupload answers: by size, by the repo's .gitattributes (`filter=lfs`), and by whether the first
// bytes look binary; empty files are always regular.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama::hosting {

// The .gitattributes the Hub commits into a new repo: the usual binary and archive formats go to LFS.
extern const std::string_view kDefaultGitAttributes;

// Files from this size on are LFS whatever their name (the Hub refuses larger regular files).
inline constexpr std::uint64_t kRegularFileLimit = 10'000'000;

// The `filter=lfs` rules of a .gitattributes file, in order; the last rule matching a path decides.
class LfsRules {
 public:
  explicit LfsRules(std::string_view gitattributes);
  // Rules of `more` after these (a client's own .gitattributes sent with the preupload call).
  void add(std::string_view more);
  bool is_lfs(std::string_view path) const;

 private:
  struct Rule {
    std::string pattern;
    bool anchored = false;  // the pattern holds a '/': it matches from the repo's root, else any basename
    bool lfs = false;
  };
  std::vector<Rule> rules_;
};

// gitattributes' (and gitignore's) glob: `*` and `?` within a path segment, `[...]` classes, `**` across
// segments.
bool glob_match(std::string_view pattern, std::string_view text);

// The first bytes of a file say it is binary: a NUL byte among them.
bool looks_binary(std::string_view sample);

enum class UploadMode { regular, lfs };
UploadMode upload_mode(const LfsRules& rules, std::string_view path, std::uint64_t size, std::string_view sample);

}  // namespace inferllama::hosting
