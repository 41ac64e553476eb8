// How the node's answers become HTTP responses, and the one place every header value it writes passes.
#pragma once
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>

#include "hub/reply.hpp"

namespace inferllama::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using StringResponse = boost::beast::http::response<boost::beast::http::string_body>;

namespace detail {
// Per byte: whether it may stand in a header value (visible characters, spaces and tabs; CR, LF, NUL and
// every other control character would end the header early or confuse whoever reads it), and whether it
// may stand in a field name (an RFC 9110 token character). A table: every response head passes here.
struct HeaderBytes {
  bool value[256] = {};
  bool token[256] = {};
  constexpr HeaderBytes() {
    for (int c = 0; c < 256; ++c) value[c] = (c >= 0x20 && c != 0x7f) || c == '\t';
    for (int c = '0'; c <= '9'; ++c) token[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) token[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) token[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) token[static_cast<unsigned char>(c)] = true;
  }
};
inline constexpr HeaderBytes kHeaderBytes;

// The first byte of `text` that may not stand in a header value, or its size.
inline std::size_t first_unclean(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && kHeaderBytes.value[static_cast<unsigned char>(text[i])]) ++i;
  return i;
}
}  // namespace detail

inline bool is_clean_header_value(std::string_view value) {
  return detail::first_unclean(value) == value.size();
}

// Appends the value without its control characters (tabs kept): clean runs go in whole.
inline void append_clean_header_value(std::string& out, std::string_view value) {
  while (!value.empty()) {
    const std::size_t clean = detail::first_unclean(value);
    out.append(value.data(), clean);
    value.remove_prefix(std::min(clean + 1, value.size()));
  }
}

// The value without its control characters (tabs kept).
inline std::string clean_header_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  append_clean_header_value(out, value);
  return out;
}

// An RFC 9110 token: what a field name may be.
inline bool is_header_name(std::string_view name) {
  return !name.empty() &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) { return detail::kHeaderBytes.token[c]; });
}

// Makes every field of a response safe to write: control characters leave the values, and a field whose
// name is not a token is dropped. The server calls this on every response header it serialises, so no
// request, upstream answer or message can split a response, whatever built the fields.
template <class Fields>
void clean_fields(Fields& fields) {
  std::vector<std::pair<std::string, std::string>> dirty;
  for (const auto& field : fields) {
    const std::string_view name(field.name_string().data(), field.name_string().size());
    const std::string_view value(field.value().data(), field.value().size());
    if (!is_header_name(name) || !is_clean_header_value(value)) dirty.emplace_back(name, value);
  }
  for (const auto& [name, value] : dirty) {
    fields.erase(name);
    if (is_header_name(name)) fields.set(name, clean_header_value(value));
  }
}

// On every response a browser might render: no sniffing, no framing, no referrer, nothing to load.
inline constexpr std::pair<std::string_view, std::string_view> kSecurityHeaders[] = {
    {"Server", "inferllama"},
    {"X-Content-Type-Options", "nosniff"},
    {"X-Frame-Options", "DENY"},
    {"Referrer-Policy", "no-referrer"},
    {"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"}};
inline constexpr std::pair<std::string_view, std::string_view> kTlsHeader = {"Strict-Transport-Security",
                                                                             "max-age=31536000"};

// A response head written straight into a buffer, for the answers that are many and small (stored files,
// tracker announces): no header map, no serializer. Every value passes the same sanitiser as
// clean_fields, and a name that is not a token is dropped.
class HeadWriter {
 public:
  HeadWriter(std::string& out, unsigned status, unsigned version) : out_(out) {
    out_.clear();
    out_ += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    char digits[10];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), status).ptr;
    out_.append(digits, static_cast<std::size_t>(end - digits));
    out_ += ' ';
    const auto reason = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
    out_.append(reason.data(), reason.size());
    out_ += "\r\n";
  }
  void field(std::string_view name, std::string_view value) { put(name, value, ""); }
  // The value in double quotes (an entity tag).
  void quoted_field(std::string_view name, std::string_view value) { put(name, value, "\""); }
  void field(std::string_view name, std::uint64_t value) {
    char digits[20];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), value).ptr;
    field(name, std::string_view(digits, static_cast<std::size_t>(end - digits)));
  }
  // The connection's fate as HTTP/1.0 and 1.1 say it, then the blank line that ends the head.
  void finish(unsigned version, bool keep_alive) {
    if (!keep_alive) {
      out_ += "Connection: close\r\n";
    } else if (version == 10) {
      out_ += "Connection: keep-alive\r\n";
    }
    out_ += "\r\n";
  }

 private:
  void put(std::string_view name, std::string_view value, std::string_view quote) {
    if (!is_header_name(name)) return;
    out_ += name;
    out_ += ": ";
    out_ += quote;
    append_clean_header_value(out_, value);
    out_ += quote;
    out_ += "\r\n";
  }

  std::string& out_;
};

// The response of a Reply (its status, headers, content type and body) to a request of this HTTP version.
inline StringResponse reply_response(const hub::Reply& reply, unsigned version, bool keep_alive) {
  StringResponse res{static_cast<boost::beast::http::status>(reply.status), version};
  res.keep_alive(keep_alive);
  res.set(boost::beast::http::field::content_type, reply.content_type);
  for (const auto& [name, value] : reply.headers) {
    // Set-Cookie is the one field a response repeats rather than joins (RFC 6265 §3).
    if (boost::beast::iequals(name, "Set-Cookie")) {
      res.insert(name, value);
    } else {
      res.set(name, value);
    }
  }
  // 1xx, 204 and 304 have no body (RFC 9110), whatever an upstream sent with them.
  const bool bodiless = reply.status < 200 || reply.status == 204 || reply.status == 304;
  if (!bodiless) res.body() = reply.body;
  return res;
}

}  // namespace inferllama::http
