// The Hub's own routes: files (resolve, and a torrent's web seed), the metadata API, and every other route
// of the Hub's, passed upstream.
#include <algorithm>

#include "cache/download.hpp"
#include "http/connection.hpp"
#include "http/handlers.hpp"
#include "http/piece_dispatch.hpp"
#include "http/scan_gate.hpp"
#include "http/server_context.hpp"
#include "inferllama/cluster.hpp"
#include "util/offload.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

// A child node that shares a stored file with its peers asks for any piece it wants (PieceDispatch):
// the piece no child was sent lately, or 204 when each wanted piece is on its way to another child. A
// file not whole and verified yet (stored, or its download just done), or a header that does not fit it,
// is answered as the Range asks.
Answer with_piece_for_child(Exchange& x, hub::FileAnswer answer) {
  const auto header = x.request[cluster::kWantPiecesHeader];
  // The file's torrent has a piece per stored chunk: the chunk size it was stored with, which the node's
  // setting may have changed since.
  const std::uint64_t piece_length = answer.blob ? answer.blob->chunk_size : x.server.config.chunk_size;
  const bool whole = answer.blob || (answer.download && answer.download->verified());
  const std::uint64_t size = answer.file.size;
  if (header.empty() || !whole || x.request.method() != bhttp::verb::get || size == 0 || piece_length == 0)
    return FileBody{std::move(answer), ""};
  const auto want = PieceDispatch::parse(header, static_cast<std::size_t>((size + piece_length - 1) / piece_length));
  if (!want) return FileBody{std::move(answer), ""};
  const auto piece = x.server.pieces.pick(answer.file.etag, *want, PieceDispatch::Clock::now());
  if (!piece) return hub::Reply{204, {{"Retry-After", "1"}}, "", ""};
  const std::uint64_t first = *piece * piece_length;
  const std::uint64_t last = std::min(first + piece_length, size) - 1;
  return FileBody{std::move(answer), "bytes=" + std::to_string(first) + "-" + std::to_string(last)};
}

Task<Answer> answer_file(Exchange& x, const ResolveRoute& route) {
  auto& hub = x.server.deps.hub;
  // A hit of a public repo is answered without leaving the I/O thread (its verdict, too, once in memory).
  std::optional<hub::FileAnswer> file = hub.resolve_fast(route.repo, route.rev, route.path);
  if (!file) {
    const bool want_body = x.request.method() == bhttp::verb::get;
    auto outcome = co_await offload(
        x.server.deps.blocking, [&] { return hub.resolve(route.repo, route.rev, route.path, x.caller, want_body); });
    if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return std::move(*reply);
    file = std::move(std::get<hub::FileAnswer>(outcome));
  }
  ScanCheck scan = check_scan_policy(x, route.repo, route.path, *file);
  if (!scan.settled) scan.refusal = co_await apply_scan_policy(x, route.repo, route.path, *file);
  if (scan.refusal) co_return std::move(*scan.refusal);
  co_return with_piece_for_child(x, std::move(*file));
}

// BEP 47 padding between files: clients that fetch pieces over HTTP ask for these zeros too.
Answer answer_pad(Exchange& x, std::string_view digits) {
  const bool valid = !digits.empty() && digits.size() <= 9 &&
                     std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  const std::uint64_t size = valid ? std::stoull(std::string(digits)) : 0;
  if (!valid || size >= x.server.config.chunk_size) {  // padding always ends within one piece (one chunk)
    return hub::error_reply(404, "no such pad file", "EntryNotFound");
  }
  return PadBody{size};
}

}  // namespace

bool is_read(const Request& req) {
  return req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
}

hub::Reply method_not_allowed(const char* allowed) {
  return hub::error_reply(405, allowed);
}

namespace {

// A file of a repo the node hosts, or a request that is not a read.
Task<Answer> handle_unusual(Exchange& x, const ResolveRoute& route) {
  if (hosts(x, route.repo)) {
    auto answer = co_await hosted(x, route);
    if (auto* body = answer ? std::get_if<FileBody>(&*answer) : nullptr) {
      if (auto refused = co_await apply_scan_policy(x, route.repo, route.path, body->file))
        co_return std::move(*refused);
    }
    if (answer) co_return std::move(*answer);
  }
  if (!is_read(x.request)) co_return method_not_allowed("use GET or HEAD");
  co_return co_await answer_file(x, route);
}

}  // namespace

// Not a coroutine itself: a read of a Hub file costs one coroutine frame here, answer_file's.
Task<Answer> handle(Exchange& x, const ResolveRoute& route) {
  if (hosts(x, route.repo) || !is_read(x.request)) return handle_unusual(x, route);
  return answer_file(x, route);
}

Task<Answer> handle(Exchange& x, const ApiRoute& api) {
  auto& hub = x.server.deps.hub;
  auto& blocking = x.server.deps.blocking;
  const Request& req = x.request;
  const std::string query(x.query);
  if (hosts(x, api.repo)) {
    auto answer = co_await hosted(x, api);
    if (answer) co_return std::move(*answer);
  }
  switch (api.kind) {
    case ApiRoute::Kind::webseed: {
      if (!is_read(req)) co_return method_not_allowed("use GET or HEAD");
      if (api.path.starts_with(".pad/")) co_return answer_pad(x, std::string_view(api.path).substr(5));
      const ResolveRoute file{api.repo, api.rev, api.path};
      co_return co_await answer_file(x, file);
    }
    case ApiRoute::Kind::torrent:
    case ApiRoute::Kind::magnet:
      co_return co_await handle_torrent(x, api);
    case ApiRoute::Kind::info:
    case ApiRoute::Kind::revision: {
      if (!is_read(req)) co_return method_not_allowed("use GET");
      std::optional<std::string> rev;
      if (api.kind == ApiRoute::Kind::revision) rev = api.rev;
      co_return co_await offload(blocking, [&] { return hub.info(api.repo, rev, query, x.caller); });
    }
    case ApiRoute::Kind::tree: {
      if (!is_read(req)) co_return method_not_allowed("use GET");
      const std::string base = x.server.public_base(x.connection, req);
      co_return co_await offload(blocking,
                                 [&] { return hub.tree(api.repo, api.rev, api.path, query, x.caller, base); });
    }
    case ApiRoute::Kind::paths_info: {
      if (req.method() != bhttp::verb::post) co_return method_not_allowed("use POST");
      const std::string content_type(req[bhttp::field::content_type]);
      co_return co_await offload(blocking,
                                 [&] { return hub.paths_info(api.repo, api.rev, content_type, req.body(), x.caller); });
    }
    case ApiRoute::Kind::refs:
      if (!is_read(req)) co_return method_not_allowed("use GET");
      co_return co_await offload(blocking, [&] { return hub.refs(api.repo, query, x.caller); });
  }
  co_return hub::error_reply(404, "no such route");
}

Task<Answer> handle(Exchange& x, const UpstreamRoute& route) {
  const Request& req = x.request;
  switch (req.method()) {
    case bhttp::verb::get:
    case bhttp::verb::head:
    case bhttp::verb::post:
    case bhttp::verb::put:
    case bhttp::verb::patch:
    case bhttp::verb::delete_:
      break;
    default:
      co_return method_not_allowed("use GET, HEAD, POST, PUT, PATCH or DELETE");
  }
  if (x.server.deps.hosting) {
    auto answer = co_await hosted(x, route);
    if (answer) co_return std::move(*answer);
  }
  // What the Hub reads of a request besides its credentials (which the caller carries, node keys already
  // exchanged for the user's Hub token or taken away).
  HeaderList headers;
  for (const auto field : {bhttp::field::accept, bhttp::field::content_type, bhttp::field::if_none_match,
                           bhttp::field::if_modified_since, bhttp::field::range}) {
    if (auto value = req.find(field); value != req.end()) {
      headers.emplace_back(std::string(bhttp::to_string(field)), std::string(value->value()));
    }
  }
  const std::string method(req.method_string());
  const std::string target(req.target());
  const std::string base = x.server.public_base(x.connection, req);
  hub::Reply reply = co_await offload(x.server.deps.blocking, [&] {
    return x.server.deps.hub.forward(method, target, headers, req.body(), x.caller, route.repo, route.reads_content,
                                     base);
  });
  // A file's bytes count against the token limit as they do through resolve; API answers do not.
  if (route.action == "raw" && route.reads_content && req.method() == bhttp::verb::get && reply.status < 300) {
    x.server.flowed(x.connection, reply.body.size(), false);
  }
  co_return reply;
}

}  // namespace inferllama::http
