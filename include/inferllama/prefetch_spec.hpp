// What the node keeps warm: snapshots it fetches from the Hub on its own, listed by the `prefetch` setting
// and the admin API (src/prefetch/).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/repo.hpp"

namespace inferllama {

// Bounds of what a prefetch entry may hold (the admin API takes entries from a client).
inline constexpr std::size_t kMaxPrefetchEntries = 1000;        // configured, and added at run time, each
inline constexpr std::size_t kMaxPrefetchPatterns = 32;         // per entry
inline constexpr std::size_t kMaxPrefetchPatternLength = 256;   // bytes
inline constexpr std::size_t kMaxPrefetchRevisionLength = 256;  // bytes

// A snapshot the node keeps current: `rev` of `repo` as the Hub names it now, only the files whose path
// matches one of `patterns` (globs as huggingface_hub's allow_patterns: fnmatch, `*` crosses `/`, a
// pattern ending in `/` is a folder); no patterns: every file.
struct PrefetchSpec {
  RepoId repo;
  std::string rev = "main";
  std::vector<std::string> patterns;

  // "model/acme/x@main": one entry per repo and revision.
  std::string key() const { return repo.key() + '@' + rev; }
  bool operator==(const PrefetchSpec&) const = default;
};

// One entry as the `prefetch` setting writes it: [datasets/|spaces/]REPO[@REV][:PATTERN[;PATTERN...]],
// e.g. "acme/model@main:*.safetensors;config.json". Throws ConfigError.
PrefetchSpec parse_prefetch_spec(std::string_view text);
// The setting's comma-separated entries; the same repo and revision twice is an error. Throws ConfigError.
std::vector<PrefetchSpec> parse_prefetch_list(std::string_view text);
// A revision and patterns as an entry may hold them: at most kMaxPrefetchPatterns patterns of at most
// kMaxPrefetchPatternLength bytes, none empty, none with a control character, `,` or `;` (which separate
// entries and patterns in the setting). Throws ConfigError.
void check_prefetch_spec(const PrefetchSpec& spec);
// The entry as the setting writes it (parse_prefetch_spec reads it back).
std::string format_prefetch_spec(const PrefetchSpec& spec);

}  // namespace inferllama
