#include "inferllama/prefetch_spec.hpp"

#include <set>

#include "inferllama/config.hpp"

namespace inferllama {
namespace {

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool has_control(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

void check_prefetch_spec(const PrefetchSpec& spec) {
  const std::string name = spec.repo.name + "@" + spec.rev;
  if (!is_valid_repo_name(spec.repo.name)) throw ConfigError("not a repository: " + spec.repo.name);
  if (spec.rev.empty() || spec.rev.size() > kMaxPrefetchRevisionLength || has_control(spec.rev) ||
      spec.rev.find_first_of(" ,:;") != std::string::npos) {
    throw ConfigError("the revision of " + spec.repo.name + " must be 1.." +
                      std::to_string(kMaxPrefetchRevisionLength) +
                      " bytes without spaces, control characters, ',', ':' or ';'");
  }
  if (spec.patterns.size() > kMaxPrefetchPatterns) {
    throw ConfigError(name + " has " + std::to_string(spec.patterns.size()) + " patterns; at most " +
                      std::to_string(kMaxPrefetchPatterns));
  }
  for (const auto& pattern : spec.patterns) {
    if (pattern.empty() || pattern.size() > kMaxPrefetchPatternLength) {
      throw ConfigError("a pattern of " + name + " must be 1.." + std::to_string(kMaxPrefetchPatternLength) +
                        " bytes long");
    }
    if (has_control(pattern) || pattern.find_first_of(",;") != std::string::npos) {
      throw ConfigError("a pattern of " + name + " must not hold control characters, ',' or ';'");
    }
  }
}

PrefetchSpec parse_prefetch_spec(std::string_view text) {
  text = trimmed(text);
  // Repo names and revisions hold no ':' (git refuses it in ref names): the first one starts the patterns.
  const auto colon = text.find(':');
  const std::string_view snapshot = text.substr(0, colon);
  auto ref = parse_repo_ref(snapshot);
  if (!ref) {
    throw ConfigError("invalid prefetch entry \"" + std::string(text) +
                      "\": expected [datasets/|spaces/]REPO[@REV][:PATTERN[;PATTERN...]]");
  }
  PrefetchSpec spec{ref->repo, ref->rev, {}};
  if (colon != std::string_view::npos) {
    std::string_view rest = text.substr(colon + 1);
    while (true) {
      const auto semicolon = rest.find(';');
      const std::string_view pattern = trimmed(rest.substr(0, semicolon));
      if (!pattern.empty()) spec.patterns.emplace_back(pattern);
      if (semicolon == std::string_view::npos) break;
      rest = rest.substr(semicolon + 1);
    }
    if (spec.patterns.empty()) {
      throw ConfigError("invalid prefetch entry \"" + std::string(text) + "\": no pattern after ':'");
    }
  }
  try {
    check_prefetch_spec(spec);
  } catch (const ConfigError& e) {
    throw ConfigError("invalid prefetch entry \"" + std::string(text) + "\": " + e.what());
  }
  return spec;
}

std::vector<PrefetchSpec> parse_prefetch_list(std::string_view text) {
  std::vector<PrefetchSpec> specs;
  std::set<std::string> keys;
  for (const auto& item : split_config_list(text)) {
    PrefetchSpec spec = parse_prefetch_spec(item);
    if (!keys.insert(spec.key()).second) {
      throw ConfigError(spec.key() + " is listed twice (give one entry its patterns, separated by ';')");
    }
    specs.push_back(std::move(spec));
  }
  if (specs.size() > kMaxPrefetchEntries) {
    throw ConfigError("at most " + std::to_string(kMaxPrefetchEntries) + " prefetch entries");
  }
  return specs;
}

std::string format_prefetch_spec(const PrefetchSpec& spec) {
  std::string text = std::string(spec.repo.url_prefix()) + spec.repo.name + "@" + spec.rev;
  for (std::size_t i = 0; i < spec.patterns.size(); ++i) text += (i == 0 ? ":" : ";") + spec.patterns[i];
  return text;
}

}  // namespace inferllama
