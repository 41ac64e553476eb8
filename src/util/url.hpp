#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferllama::url {

// Percent-encodes everything but RFC 3986 unreserved characters; keeps '/' when `keep_slash`.
std::string encode(std::string_view text, bool keep_slash = false);
// Decodes %XX escapes (and '+' as space when `plus_is_space`); nullopt on a malformed escape.
std::optional<std::string> decode(std::string_view text, bool plus_is_space = false);
// The same into `out`, without allocating: the decoded length, or nullopt on a malformed escape or when
// `out` is too small.
std::optional<std::size_t> decode_to(std::string_view text, std::span<std::uint8_t> out, bool plus_is_space = false);

using QueryList = std::vector<std::pair<std::string, std::string>>;
// The '/'-separated segments of a path, each percent-decoded; nullopt on a malformed escape.
std::optional<std::vector<std::string>> decoded_segments(std::string_view path);
QueryList parse_query(std::string_view query);  // form-encoded pairs, decoded; malformed pairs skipped
// The same pairs, or nullopt when any pair has a malformed escape (so that nothing is silently dropped).
std::optional<QueryList> parse_query_strict(std::string_view query);

// The host of "scheme://host[:port]/...", without the port; an IPv6 host keeps its brackets ("[::1]").
std::string_view host_of(std::string_view url);

// The origin of an absolute http(s) URL, "scheme://host:port" in lower case with the scheme's default
// port filled in; nullopt for any other scheme, a relative URL, or one with user info ("user@host").
// Credentials are attached per origin: two URLs share them only when their origins are equal.
std::optional<std::string> http_origin(std::string_view url);

// The one form in which a URL reaches a log or an error message: scheme, host and path, without its
// query, fragment or user info (a signed CDN URL carries its credential in the query: X-Amz-Signature,
// Signature, Policy, Key-Pair-Id, Expires, token...), control characters replaced by '?'. Every log line
// that names an upstream URL goes through it.
std::string redact(std::string_view url);

// Splits a request target into its path and query (without the '?').
std::pair<std::string_view, std::string_view> split_target(std::string_view target);

// A repository-relative file path that is safe to use: no empty, "." or ".." segments, no NUL or
// control characters, no leading '/' or backslash.
bool is_safe_relative_path(std::string_view path);

}  // namespace inferllama::url
