#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace inferllama::hub {

// Removes every Xet marker ("xetHash", "xetEnabled", any key starting with "xet") from a Hub JSON
// body, so clients keep downloading plain bytes through the node. Non-JSON text is returned unchanged.
std::string strip_xet(std::string_view json);

// The `rel="next"` target of a Hub Link header, as a path and query on the node ("/api/...?cursor=..").
std::optional<std::string> next_link_path(std::string_view link_header);

// "W/\"abc\"" or "\"abc\"" -> "abc", lower-cased.
std::string unquote_etag(std::string_view etag);

}  // namespace inferllama::hub
