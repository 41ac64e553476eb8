// The handlers: one per route family, each in its own file. A handler reads the request and answers
// with an Answer, a value; the session (session.cpp) writes it on whatever stream the client is on.
// `dispatch` picks the handler with std::visit, so a route without a handler does not compile.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "http/response.hpp"
#include "http/router.hpp"
#include "hub/hub_service.hpp"
#include "inferllama/asio.hpp"

namespace inferllama::http {

class ServerContext;
struct Connection;

// A stored or in-flight file: the session writes its head (Range, If-None-Match) and streams its bytes.
struct FileBody {
  hub::FileAnswer file;
  std::string range;  // "bytes=A-B" the node chose (a piece for a child node), else the request's Range
};
// A BEP 47 pad file: `size` zeros.
struct PadBody {
  std::uint64_t size = 0;
};
// A tracker's bencoded answer, in the connection's reused buffer (Connection::tracker_reply).
struct TrackerBody {};

// What a request is answered with: a whole message in the Hub's terms (metadata, errors, the node's
// own JSON), or a body the session streams.
using Answer = std::variant<hub::Reply, FileBody, PadBody, TrackerBody>;

// The body of a request the session streams instead of reading whole (an upload's bytes).
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // Up to `into.size()` bytes of the body; 0 at its end. Throws when the connection fails.
  virtual Task<std::size_t> read(std::span<std::uint8_t> into) = 0;
};

struct Exchange {
  ServerContext& server;
  Connection& connection;
  const Request& request;
  std::string_view query;
  hub::Caller caller;          // the credentials the Hub sees for this request
  BodyStream* body = nullptr;  // set for a streamed body (the request's own is empty then)
};

Task<Answer> dispatch(Exchange& x, const Route& route);

// One per route (hub_handlers.cpp, torrent_handlers.cpp, tracker_handler.cpp, admin_handler.cpp,
// usage_handler.cpp, node_handlers.cpp, hosting_handlers.cpp, console_handler.cpp).
Task<Answer> handle(Exchange& x, const ResolveRoute& route);
Task<Answer> handle(Exchange& x, const ApiRoute& route);
Task<Answer> handle(Exchange& x, const UpstreamRoute& route);
Task<Answer> handle(Exchange& x, const TrackerRoute& route);
Task<Answer> handle(Exchange& x, const AdminRoute& route);
Task<Answer> handle(Exchange& x, const UsageRoute& route);
Task<Answer> handle(Exchange& x, const HealthRoute& route);
Task<Answer> handle(Exchange& x, const MetricsRoute& route);
Task<Answer> handle(Exchange& x, const BadRequest& route);
Task<Answer> handle(Exchange& x, const NotFound& route);
Task<Answer> handle(Exchange& x, const UploadRoute& route);
Task<Answer> handle(Exchange& x, const ConsoleRoute& route);

// Whether the node hosts the repo's namespace (memory only: asked on every file request).
bool hosts(const Exchange& x, const RepoId& repo);
// Hosted repos (hosting_handlers.cpp): the answer when the node hosts the repo, else nullopt.
Task<std::optional<Answer>> hosted(Exchange& x, const ResolveRoute& route);
Task<std::optional<Answer>> hosted(Exchange& x, const ApiRoute& route);
Task<std::optional<Answer>> hosted(Exchange& x, const UpstreamRoute& route);
// Whether a request's body is streamed to its handler rather than read whole first (an upload PUT).
bool streams_body(const Route& route, const boost::beast::http::request_header<>& head);

// The torrent and magnet routes (torrent_handlers.cpp), reached through the API route.
Task<Answer> handle_torrent(Exchange& x, const ApiRoute& route);

// Why a new user may not take `name` (an organisation's, or a Hub namespace the cache holds, unless
// `force`), for the admin API and the console's sign-up and invitations; nullopt for a node without hosting.
std::function<std::optional<std::string>(std::string_view name, bool force)> user_name_refusal(
    const ServerContext& server);
// The admin API's operator actions the console shares (console_handler.cpp): users/{name}/reset-link,
// invite, and overview. nullopt for another path.
Task<std::optional<Answer>> answer_operator(Exchange& x, const std::string& action);

// Ends every console session of `user` and its session keys (console_handler.cpp); nothing on a node that
// keeps no console. On the blocking pool.
void end_console_sessions(ServerContext& server, const std::string& user);

// Method checks shared by the handlers.
bool is_read(const Request& req);
hub::Reply method_not_allowed(const char* allowed);

}  // namespace inferllama::http
