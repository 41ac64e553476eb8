// libFuzzer target: the reply builder (src/http/response.hpp) and the one sanitiser header values pass,
// for Beast responses (clean_fields) and for heads written field by field (HeadWriter). Whatever a request
// target, a header value or an upstream answer holds, the response the node serialises carries no control
// character in a header value, no header it did not set, and parses back.
//
// The input is NUL-separated parts: a request target, an error message, then header name/value pairs
// (as an upstream answer or a handler could make them), then a body.
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "fuzz_check.hpp"
#include "http/response.hpp"
#include "http/router.hpp"
#include "hub/reply.hpp"

namespace {

using namespace inferllama;
namespace bhttp = boost::beast::http;

std::vector<std::string> parts_of(std::string_view input) {
  std::vector<std::string> parts;
  while (true) {
    const auto nul = input.find('\0');
    parts.emplace_back(input.substr(0, nul));
    if (nul == std::string_view::npos) break;
    input.remove_prefix(nul + 1);
  }
  return parts;
}

// A serialised head: every line after the status line is NAME: VALUE with a token name and a clean value;
// the number of lines.
std::size_t check_head_lines(std::string_view wire) {
  const auto end = wire.find("\r\n\r\n");
  FUZZ_CHECK(end != std::string::npos, "no end of header");
  const std::string_view head(wire.data(), end);
  std::size_t lines = 0;
  std::size_t at = head.find("\r\n");  // past the status line
  while (at != std::string_view::npos) {
    const std::size_t next = head.find("\r\n", at + 2);
    const std::string_view line = head.substr(at + 2, next == std::string_view::npos ? next : next - at - 2);
    const auto colon = line.find(':');
    FUZZ_CHECK(colon != std::string_view::npos, "header line without a colon");
    FUZZ_CHECK(http::is_header_name(line.substr(0, colon)), "header name is not a token");
    for (unsigned char c : line.substr(colon + 1)) {
      FUZZ_CHECK((c >= 0x20 && c != 0x7f) || c == '\t', "control character 0x%02x in a header value", c);
    }
    ++lines;
    at = next;
  }
  return lines;
}

void check_wire(const http::StringResponse& res) {
  std::ostringstream os;
  os << res;
  const std::string wire = os.str();
  const std::size_t lines = check_head_lines(wire);
  const auto fields = static_cast<std::size_t>(std::distance(res.begin(), res.end()));
  FUZZ_CHECK(lines == fields, "%zu header lines for %zu fields", lines, fields);

  // And it reads back as the same response.
  bhttp::response_parser<bhttp::string_body> parser;
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(wire), ec);
  FUZZ_CHECK(!ec && parser.is_done(), "the response does not parse back: %s", ec.message().c_str());
  FUZZ_CHECK(parser.get().body() == res.body(), "the body changed on the way");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = parts_of(std::string_view(reinterpret_cast<const char*>(data), size));
  // A request target becomes either a route (its decoded revision may reach a message) or a refusal.
  const http::Route route = http::route_target(parts[0]);
  std::string message = parts.size() > 1 ? parts[1] : "";
  if (const auto* bad = std::get_if<http::BadRequest>(&route)) message += bad->message;
  if (const auto* resolve = std::get_if<http::ResolveRoute>(&route)) {
    message += "revision " + resolve->rev + " of " + resolve->repo.name + ": " + resolve->path;
  }
  const unsigned status = 200 + static_cast<unsigned>(size % 400);
  hub::Reply reply = hub::error_reply(status, message, parts.size() > 2 ? parts[2] : "");
  std::size_t i = 3;
  for (; i + 1 < parts.size() && i < 3 + 2 * 12; i += 2) {
    if (parts[i].empty()) continue;
    reply.headers.emplace_back(parts[i], parts[i + 1]);
  }
  if (i < parts.size()) reply.body = parts[i];
  http::StringResponse res = http::reply_response(reply, 11, size % 2 == 0);
  res.set("X-Repo-Commit", parts.back());  // a value set directly, not from a Reply
  http::clean_fields(res);
  res.prepare_payload();
  check_wire(res);

  // The same fields written field by field, as file and tracker heads are.
  std::string head;
  const unsigned version = size % 3 == 0 ? 10 : 11;
  const bool keep_alive = size % 2 == 0;
  http::HeadWriter writer(head, status, version);
  std::size_t written = 0;
  for (const auto& [name, value] : reply.headers) {
    writer.field(name, value);
    written += http::is_header_name(name) ? 1 : 0;
  }
  writer.field("X-Repo-Commit", parts.back());
  writer.finish(version, keep_alive);
  const std::size_t connection_line = !keep_alive || version == 10 ? 1 : 0;
  FUZZ_CHECK(check_head_lines(head) == written + 1 + connection_line, "a field was split or lost");
  return 0;
}
