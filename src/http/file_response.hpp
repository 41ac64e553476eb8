// The head of a file answer: which bytes a request gets (Range, If-None-Match) and the fields that
// describe them. No I/O: the session writes the head, the file streamer the bytes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "http/connection.hpp"
#include "http/response.hpp"
#include "hub/hub_service.hpp"

namespace inferllama::http {

// On the answer for a file the node is still fetching: the bytes it holds so far.
inline constexpr const char* kFetchedHeader = "X-InferLlama-Fetched";

struct FilePlan {
  unsigned status = 200;     // 200, 206, 304 or 416
  std::uint64_t first = 0;   // the body: bytes [first, first + length) of the file
  std::uint64_t length = 0;  // also what Content-Length says for HEAD
  bool send_body = false;    // a GET with bytes to send
};

// Where the answer's bytes come from: a stored blob (hit), a download this request started (miss; also a
// HEAD of a file not stored, which only asked the Hub), one it joined (stream), or the upstream straight
// through (pass).
CacheStatus cache_status(const hub::FileAnswer& answer);

// Decides the answer to `req` for `answer` (whose size is the stored blob's or the download's) and writes
// its head into `c.head`, with the connection's own fields (security, RateLimit) and `keep_alive`; notes
// `cache_status` in `c.cache`. `range` ("bytes=A-B"), when not empty, is the range the node chose in place
// of the request's Range.
FilePlan write_file_head(Connection& c, const Request& req, const hub::FileAnswer& answer, std::string_view range,
                         bool keep_alive);

// The head of `size` zeros (a BEP 47 pad file), Range-aware like a file's.
FilePlan write_pad_head(Connection& c, const Request& req, std::uint64_t size, bool keep_alive);

// The fields every response of this connection carries: security headers, HSTS on TLS, RateLimit.
void write_connection_fields(const Connection& c, HeadWriter& head);

}  // namespace inferllama::http
