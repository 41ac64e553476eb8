#include "hub/metadata_query.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "util/url.hpp"

namespace inferllama::hub {
namespace {

using Json = nlohmann::json;

// The union of huggingface_hub's ExpandModelProperty_T, ExpandDatasetProperty_T and
// ExpandSpaceProperty_T (hf_api.py, 1.x); @huggingface/hub's MODEL/DATASET/SPACE_EXPAND_KEYS and the API
// keys of its additional fields are among them.
constexpr std::string_view kExpandFields[] = {
    "author",       "baseModels",       "cardData",         "childrenModelCount", "citation",
    "config",       "createdAt",        "datasets",         "description",        "disabled",
    "downloads",    "downloadsAllTime", "evalResults",      "gated",              "gguf",
    "inference",    "inferenceProviderMapping", "lastModified", "library_name",   "likes",
    "mask_token",   "model-index",      "models",           "paperswithcode_id",  "pipeline_tag",
    "private",      "resourceGroup",    "runtime",          "safetensors",        "sdk",
    "sha",          "siblings",         "spaces",           "subdomain",          "tags",
    "transformersInfo", "trendingScore", "usedStorage",     "widgetData",         "xetEnabled"};

bool is_expand_field(std::string_view field) {
  return std::find(std::begin(kExpandFields), std::end(kExpandFields), field) != std::end(kExpandFields);
}

constexpr std::size_t kMaxCursor = 1024;
constexpr unsigned long kMaxLimit = 10000;
constexpr std::size_t kMaxPaths = 1000;

// "true"/"True"/"1" and "false"/"False"/"0": requests sends Python's True, httpx and JS send true.
std::optional<bool> parse_bool(std::string_view value) {
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "true" || lower == "1") return true;
  if (lower == "false" || lower == "0") return false;
  return std::nullopt;
}

// One boolean parameter given once, or several times with the same value.
bool merge_bool(std::optional<bool>& into, std::string_view value) {
  auto parsed = parse_bool(value);
  if (!parsed || (into && *into != *parsed)) return false;
  into = parsed;
  return true;
}

void append(std::string& query, std::string_view name, std::string_view value) {
  if (!query.empty()) query += '&';
  query += name;
  query += '=';
  query += url::encode(value);
}

bool is_cursor(std::string_view value) {
  return !value.empty() && value.size() <= kMaxCursor && std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=' || c == '-' || c == '_' ||
           c == '.';
  });
}

}  // namespace

std::optional<std::string> canonical_info_query(std::string_view query) {
  auto pairs = url::parse_query_strict(query);
  if (!pairs) return std::nullopt;
  std::set<std::string> expand;
  std::optional<bool> blobs, security;
  for (const auto& [name, value] : *pairs) {
    if (name == "expand" || name == "expand[]") {
      if (!is_expand_field(value)) return std::nullopt;
      expand.insert(value);
    } else if (name == "blobs") {
      if (!merge_bool(blobs, value)) return std::nullopt;
    } else if (name == "securityStatus") {
      if (!merge_bool(security, value)) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  std::string canonical;
  if (blobs.value_or(false)) append(canonical, "blobs", "true");
  for (const auto& field : expand) append(canonical, "expand", field);
  if (security.value_or(false)) append(canonical, "securityStatus", "true");
  return canonical;
}

std::optional<TreeQuery> canonical_tree_query(std::string_view query) {
  auto pairs = url::parse_query_strict(query);
  if (!pairs) return std::nullopt;
  std::optional<bool> recursive, expand;
  std::optional<std::string> cursor, limit;
  for (const auto& [name, value] : *pairs) {
    if (name == "recursive") {
      if (!merge_bool(recursive, value)) return std::nullopt;
    } else if (name == "expand") {
      if (!merge_bool(expand, value)) return std::nullopt;
    } else if (name == "cursor") {
      if (!is_cursor(value) || (cursor && *cursor != value)) return std::nullopt;
      cursor = value;
    } else if (name == "limit") {
      const bool digits =
          !value.empty() && value.size() <= 5 && std::all_of(value.begin(), value.end(), [](char c) {
            return c >= '0' && c <= '9';
          });
      if (!digits) return std::nullopt;
      const unsigned long n = std::stoul(value);
      if (n == 0 || n > kMaxLimit || (limit && std::stoul(*limit) != n)) return std::nullopt;
      limit = std::to_string(n);
    } else {
      return std::nullopt;
    }
  }
  TreeQuery out;
  if (cursor) append(out.canonical, "cursor", *cursor);
  if (expand.value_or(false)) append(out.canonical, "expand", "true");
  if (limit) append(out.canonical, "limit", *limit);
  if (recursive.value_or(false)) append(out.canonical, "recursive", "true");
  out.has_cursor = cursor.has_value();
  return out;
}

std::optional<PathsQuery> canonical_paths_query(std::string_view content_type, std::string_view body) {
  std::set<std::string> paths;
  std::optional<bool> expand;
  const std::string_view media = content_type.substr(0, content_type.find(';'));
  if (media == "application/json") {
    auto parsed = Json::parse(body, nullptr, false);
    if (!parsed.is_object()) return std::nullopt;
    for (const auto& [name, value] : parsed.items()) {
      if (name == "paths") {
        if (value.is_string()) {
          paths.insert(value.get<std::string>());
        } else if (value.is_array()) {
          for (const auto& path : value) {
            if (!path.is_string()) return std::nullopt;
            paths.insert(path.get<std::string>());
          }
        } else {
          return std::nullopt;
        }
      } else if (name == "expand") {
        if (value.is_boolean()) {
          expand = value.get<bool>();
        } else if (!value.is_null()) {
          return std::nullopt;
        }
      } else {
        return std::nullopt;
      }
    }
  } else if (media.empty() || media == "application/x-www-form-urlencoded") {
    auto pairs = url::parse_query_strict(body);
    if (!pairs) return std::nullopt;
    for (const auto& [name, value] : *pairs) {
      if (name == "paths" || name == "paths[]") {
        paths.insert(value);
      } else if (name == "expand") {
        if (!merge_bool(expand, value)) return std::nullopt;
      } else {
        return std::nullopt;
      }
    }
  } else {
    return std::nullopt;
  }
  if (paths.empty() || paths.size() > kMaxPaths) return std::nullopt;
  PathsQuery out;
  for (const auto& path : paths) {
    if (!url::is_safe_relative_path(path)) return std::nullopt;
    append(out.body, "paths", path);
    out.paths.push_back(path);
  }
  if (expand.value_or(false)) append(out.body, "expand", "true");
  return out;
}

bool describes_every_path(std::string_view answer, const std::vector<std::string>& paths) {
  auto entries = Json::parse(answer, nullptr, false);
  if (!entries.is_array()) return false;
  std::set<std::string> described;
  for (const auto& entry : entries) {
    if (entry.is_object() && entry.contains("path") && entry["path"].is_string()) {
      described.insert(entry["path"].get<std::string>());
    }
  }
  return std::all_of(paths.begin(), paths.end(), [&](const std::string& p) { return described.contains(p); });
}

}  // namespace inferllama::hub
