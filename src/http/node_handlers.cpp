// The node's own small routes (/healthz, /metrics), the refusals admission already gave, and the
// dispatch of every route to its handler.
#include "http/connection.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"

namespace inferllama::http {

Task<Answer> handle(Exchange&, const HealthRoute&) {
  co_return hub::Reply{200, {}, "text/plain", "ok\n"};
}

Task<Answer> handle(Exchange& x, const MetricsRoute&) {
  co_return hub::Reply{200, {}, "text/plain; version=0.0.4; charset=utf-8", x.server.render_metrics()};
}

// Admission answers these before dispatch; the handlers keep every route answered here too.
Task<Answer> handle(Exchange&, const BadRequest& route) {
  co_return hub::error_reply(400, route.message);
}
Task<Answer> handle(Exchange&, const NotFound&) {
  co_return hub::error_reply(404, "no such route");
}

// Not a coroutine: the handler's own coroutine is the only frame a request's answer costs here.
Task<Answer> dispatch(Exchange& x, const Route& route) {
  return std::visit([&](const auto& r) { return handle(x, r); }, route);
}

}  // namespace inferllama::http
