#include "hub/hub_protocol.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace inferllama::hub {
namespace {

void strip(nlohmann::json& value) {
  if (value.is_object()) {
    for (auto it = value.begin(); it != value.end();) {
      if (it.key().starts_with("xet")) {
        it = value.erase(it);
      } else {
        strip(*it);
        ++it;
      }
    }
  } else if (value.is_array()) {
    for (auto& item : value) strip(item);
  }
}

}  // namespace

std::string strip_xet(std::string_view json) {
  if (json.find("\"xet") == std::string_view::npos) return std::string(json);
  auto parsed = nlohmann::json::parse(json, nullptr, false);
  if (parsed.is_discarded()) return std::string(json);
  strip(parsed);
  return parsed.dump();
}

std::optional<std::string> next_link_path(std::string_view link) {
  // Link: <https://hub/api/models/x/tree/sha?cursor=..>; rel="next", <...>; rel="xet-auth"
  while (!link.empty()) {
    auto open = link.find('<');
    auto close = link.find('>', open);
    if (open == std::string_view::npos || close == std::string_view::npos) return std::nullopt;
    std::string_view target = link.substr(open + 1, close - open - 1);
    auto comma = link.find(',', close);
    std::string_view params = link.substr(close + 1, comma == std::string_view::npos ? link.npos : comma - close - 1);
    link = comma == std::string_view::npos ? std::string_view{} : link.substr(comma + 1);
    if (params.find("rel=\"next\"") == std::string_view::npos && params.find("rel=next") == std::string_view::npos) {
      continue;
    }
    auto api = target.find("/api/");
    if (api == std::string_view::npos) return std::nullopt;
    return std::string(target.substr(api));
  }
  return std::nullopt;
}

std::string unquote_etag(std::string_view etag) {
  if (etag.starts_with("W/")) etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  std::string out(etag);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace inferllama::hub
