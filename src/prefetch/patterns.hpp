// Which files of a snapshot a prefetch entry wants: huggingface_hub's allow_patterns, matched as it does.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace inferllama::prefetch {

// Whether `path` matches the glob `pattern` as Python's fnmatch.fnmatch does on Linux, which
// huggingface_hub applies to allow_patterns: `*` any run of characters (`/` too), `?` one character,
// `[seq]` and `[!seq]` a set with ranges (`[a-z]`), a `[` without its `]` itself, any other character
// itself, case-sensitive; the whole path must match. Characters are UTF-8 code points.
bool glob_match(std::string_view pattern, std::string_view path);

// Whether `patterns` want `path`: none are given (every file), or one matches; a pattern ending in `/`
// means every file under that folder (as huggingface_hub reads it).
bool wanted(std::string_view path, const std::vector<std::string>& patterns);

}  // namespace inferllama::prefetch
