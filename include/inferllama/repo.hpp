#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace inferllama {

enum class RepoType { model, dataset, space };

// A Hub repository: "acme/tiny-model" of type model, "acme/data" of type dataset, ...
struct RepoId {
  RepoType type = RepoType::model;
  std::string name;

  // "models" / "datasets" / "spaces", as in /api/{segment}/...
  std::string_view api_segment() const {
    switch (type) {
      case RepoType::dataset:
        return "datasets";
      case RepoType::space:
        return "spaces";
      default:
        return "models";
    }
  }
  // "" / "datasets/" / "spaces/", as in /{prefix}{name}/resolve/...
  std::string_view url_prefix() const {
    switch (type) {
      case RepoType::dataset:
        return "datasets/";
      case RepoType::space:
        return "spaces/";
      default:
        return "";
    }
  }
  std::string_view type_name() const {
    switch (type) {
      case RepoType::dataset:
        return "dataset";
      case RepoType::space:
        return "space";
      default:
        return "model";
    }
  }
  // Stable key used in the index: "model/acme/tiny-model".
  std::string key() const { return std::string(type_name()) + "/" + name; }
  bool operator==(const RepoId&) const = default;
};

inline std::optional<RepoType> parse_repo_type(std::string_view text) {
  if (text == "model" || text == "models") return RepoType::model;
  if (text == "dataset" || text == "datasets") return RepoType::dataset;
  if (text == "space" || text == "spaces") return RepoType::space;
  return std::nullopt;
}

// The repo a key() names ("model/acme/x"); nullopt for another string.
inline std::optional<RepoId> parse_repo_key(std::string_view key) {
  const auto slash = key.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto type = parse_repo_type(key.substr(0, slash));
  if (!type) return std::nullopt;
  return RepoId{*type, std::string(key.substr(slash + 1))};
}

// Whether anyone may read a repo (the Hub says it is neither private nor gated), or only those the Hub
// lets in (gated, private, or not known to be open).
enum class RepoVisibility { open, restricted };

// The visibility as the index stores it ("public", "restricted"); data directories keep these words.
inline std::string_view stored_text(RepoVisibility visibility) {
  return visibility == RepoVisibility::open ? "public" : "restricted";
}
// Any stored word but "public" reads as restricted, as it always did.
inline RepoVisibility parse_stored_visibility(std::string_view stored) {
  return stored == "public" ? RepoVisibility::open : RepoVisibility::restricted;
}

// One segment of a repo id ("acme", "tiny-model"): 1..96 letters, digits, '-', '_' or '.', not "." or "..".
inline bool is_valid_repo_segment(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.size() > 96) return false;
  for (char c : s) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// A repo id: one segment ("gpt2") or two ("acme/tiny-model").
inline bool is_valid_repo_name(std::string_view name) {
  const auto slash = name.find('/');
  if (slash == std::string_view::npos) return is_valid_repo_segment(name);
  return is_valid_repo_segment(name.substr(0, slash)) && is_valid_repo_segment(name.substr(slash + 1));
}

// A snapshot as people write it: "acme/model", "datasets/acme/data@v2" (a "models/" prefix is accepted).
struct RepoRef {
  RepoId repo;
  std::string rev = "main";
  bool typed = false;  // the type came from a prefix
};
inline std::optional<RepoRef> parse_repo_ref(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  RepoRef ref;
  if (auto at = text.rfind('@'); at != std::string_view::npos) {
    ref.rev = std::string(text.substr(at + 1));
    text = text.substr(0, at);
    if (ref.rev.empty()) return std::nullopt;
  }
  for (auto [prefix, type] : {std::pair{std::string_view("models/"), RepoType::model},
                              std::pair{std::string_view("datasets/"), RepoType::dataset},
                              std::pair{std::string_view("spaces/"), RepoType::space}}) {
    if (text.starts_with(prefix) && is_valid_repo_name(text.substr(prefix.size()))) {
      ref.repo.type = type;
      ref.typed = true;
      text.remove_prefix(prefix.size());
      break;
    }
  }
  if (!is_valid_repo_name(text)) return std::nullopt;
  ref.repo.name = std::string(text);
  return ref;
}

// A full commit sha: 40 lowercase hex digits. Only these are immutable; everything else is a ref.
inline bool is_commit_sha(std::string_view rev) {
  if (rev.size() != 40) return false;
  for (char c : rev) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace inferllama
