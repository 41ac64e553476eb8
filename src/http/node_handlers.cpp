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

Task<Answer> dispatch(Exchange& x, const Route& route) {
  // Named before it is awaited: GCC 12 destroys temporaries of a co_await expression twice.
  Task<Answer> answer = std::visit([&](const auto& r) { return handle(x, r); }, route);
  co_return co_await std::move(answer);
}

}  // namespace inferllama::http
