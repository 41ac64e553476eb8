#include "http/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <list>
#include <mutex>

#include "http/server_context.hpp"
#include "http/session.hpp"
#include "http/tls_context.hpp"
#include "inferllama/network.hpp"
#include "torrent/mirror.hpp"

namespace inferllama::http {
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;

namespace {

// A short 503 instead of a connection that would starve the others.
constexpr std::string_view kTooManyConnections =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    "Retry-After: 1\r\nX-Error-Message: too many connections\r\nContent-Length: 33\r\n\r\n"
    "{\"error\":\"too many connections\"}";

// The peer of an admin socket connection runs as the node's own user, or as root. The socket's mode
// (0600) already keeps other users out; this holds should the mode or its directory be loosened.
bool peer_is_node_user(int fd) {
  ucred peer{};
  socklen_t size = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return false;
  return peer.uid == ::geteuid() || peer.uid == 0;
}

}  // namespace

struct Server::Impl {
  Impl(asio::io_context& io, ServerDeps deps) : io(io), context(std::move(deps)) {}
  ~Impl() {
    if (!admin_socket.empty()) ::unlink(admin_socket.c_str());
  }

  std::uint16_t listen_on(tcp::acceptor& acceptor, const std::string& host_port, Listener kind);
  Task<void> accept_loop(tcp::acceptor& acceptor, Listener kind);
  Task<void> accept_admin_loop();
  // Starts serving a connection on its context, known to the reaper and the drain.
  template <class Stream>
  void spawn(std::shared_ptr<Session<Stream>> session);
  // Once a second: closes the connections past their deadline (idle keep-alive, slowloris, a client that
  // stopped reading) and forgets the ones that ended. One timer for all, none per connection.
  Task<void> reap();
  void start_reaper();
  // A connection's handlers never run at once: its context is run by one thread. The accept loops all
  // run on `io`, so the turn needs no lock.
  asio::any_io_executor connection_executor() {
    const auto& contexts = context.deps.connection_contexts;
    if (contexts.empty()) return io.get_executor();
    return contexts[next_context++ % contexts.size()]->get_executor();
  }

  asio::io_context& io;
  ServerContext context;
  tcp::acceptor acceptor{io};
  tcp::acceptor tls_acceptor{io};
  tcp::acceptor metrics_acceptor{io};
  local::acceptor admin_acceptor{io};
  std::filesystem::path admin_socket;  // bound by this node, removed when it stops
  std::unique_ptr<asio::ssl::context> tls_context;
  std::mutex connections_mutex;
  std::list<std::weak_ptr<Connection>> connections;  // for the drain and the reaper
  asio::steady_timer reaper{io};
  bool reaping = false;
  std::size_t next_context = 0;
};

Server::Server(asio::io_context& io, ServerDeps deps) : impl_(std::make_unique<Impl>(io, std::move(deps))) {}
Server::~Server() = default;

template <class Stream>
void Server::Impl::spawn(std::shared_ptr<Session<Stream>> session) {
  {
    std::lock_guard lock(connections_mutex);
    connections.emplace_back(std::shared_ptr<Connection>(session, &session->connection));
  }
  auto executor = session->connection.socket.get_executor();
  asio::co_spawn(executor, serve(context, std::move(session)), asio::detached);
}

void Server::Impl::start_reaper() {
  if (reaping) return;
  reaping = true;
  asio::co_spawn(io, reap(), asio::detached);
}

Task<void> Server::Impl::reap() {
  for (;;) {
    reaper.expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await reaper.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // the server is going away
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(connections_mutex);
    for (auto it = connections.begin(); it != connections.end();) {
      auto c = it->lock();
      if (!c) {
        it = connections.erase(it);
        continue;
      }
      if (c->expired(now)) {
        asio::post(c->socket.get_executor(), [c, now] {
          boost::system::error_code ignored;
          if (c->expired(now)) c->socket.close(ignored);
        });
      }
      ++it;
    }
  }
}

std::uint16_t Server::Impl::listen_on(tcp::acceptor& on, const std::string& host_port, Listener kind) {
  const auto address = HostPort::parse(host_port);  // load_config validated it
  if (!address) throw std::runtime_error("not HOST:PORT: " + host_port);
  tcp::endpoint endpoint(asio::ip::make_address(address->host), address->port);
  on.open(endpoint.protocol());
  on.set_option(asio::socket_base::reuse_address(true));
  on.bind(endpoint);
  on.listen(asio::socket_base::max_listen_connections);
  start_reaper();
  asio::co_spawn(io, accept_loop(on, kind), asio::detached);
  return on.local_endpoint().port();
}

Task<void> Server::Impl::accept_loop(tcp::acceptor& from, Listener kind) {
  const Config& config = context.config;
  while (from.is_open()) {
    boost::system::error_code ec;
    tcp::socket socket(connection_executor());
    tcp::endpoint peer;  // filled by accept itself: no getpeername
    co_await from.async_accept(socket, peer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !from.is_open()) break;
      spdlog::warn("accept failed: {}", ec.message());
      continue;
    }
    if (context.draining) break;
    if (context.stats.open_connections.load() >= config.max_connections) {
      socket.non_blocking(true, ec);
      socket.write_some(asio::buffer(kTooManyConnections), ec);
      socket.close(ec);
      context.stats.refused_connections.add();
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (kind == Listener::tls) {
      auto session = std::make_shared<TlsSession>(asio::ssl::stream<tcp::socket>(std::move(socket), *tls_context), kind,
                                                  config.idle_timeout);
      session->connection.peer = peer;
      spawn(std::move(session));
    } else {
      auto session = std::make_shared<PlainSession>(std::move(socket), kind, config.idle_timeout);
      session->connection.peer = peer;
      spawn(std::move(session));
    }
  }
}

Task<void> Server::Impl::accept_admin_loop() {
  while (admin_acceptor.is_open()) {
    boost::system::error_code ec;
    local::socket peer(connection_executor());
    co_await admin_acceptor.async_accept(peer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !admin_acceptor.is_open()) break;
      spdlog::warn("admin socket: accept failed: {}", ec.message());
      continue;
    }
    if (context.draining) break;
    if (!peer_is_node_user(peer.native_handle())) {
      spdlog::warn("admin socket: refused a peer that runs as another user");
      continue;  // `peer` closes
    }
    // Served by the plain session: reading, writing and timeouts do not depend on the socket's family, so
    // the descriptor moves into a TCP socket object (no TCP option is ever set on it).
    tcp::socket socket(peer.get_executor());
    socket.assign(tcp::v6(), peer.release(), ec);
    if (ec) continue;
    spawn(std::make_shared<PlainSession>(std::move(socket), Listener::admin_socket, context.config.idle_timeout));
  }
}

std::uint16_t Server::start() {
  return impl_->listen_on(impl_->acceptor, impl_->context.config.listen, Listener::plain);
}

std::uint16_t Server::start_metrics() {
  return impl_->listen_on(impl_->metrics_acceptor, impl_->context.config.metrics_listen, Listener::metrics);
}

void Server::start_admin_socket(const std::filesystem::path& path) {
  Impl& impl = *impl_;
  if (path.native().size() >= sizeof(sockaddr_un::sun_path)) {
    throw std::runtime_error("admin_socket " + path.string() + " is longer than a Unix socket path may be (" +
                             std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes): set a shorter one");
  }
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      throw std::runtime_error("admin_socket " + path.string() + " exists and is not a socket: move it away");
    }
    // A socket left by a node that stopped refuses connections and is replaced; one that answers
    // belongs to a live node, and one we may not connect to is not ours to remove.
    local::socket probe(impl.io);
    boost::system::error_code ec;
    probe.connect(local::endpoint(path.string()), ec);
    if (!ec) throw std::runtime_error("another node serves the admin socket " + path.string());
    if (ec != asio::error::connection_refused) {
      throw std::runtime_error("admin_socket " + path.string() + " is in the way: " + ec.message());
    }
    ::unlink(path.c_str());
  }
  impl.admin_acceptor.open();
  // Created 0600 from the start (no moment in which another user could connect), then bound.
  boost::system::error_code ec;
  const mode_t saved_umask = ::umask(0177);
  impl.admin_acceptor.bind(local::endpoint(path.string()), ec);
  ::umask(saved_umask);
  if (ec) throw std::runtime_error("cannot bind the admin socket " + path.string() + ": " + ec.message());
  impl.admin_socket = path;
  ::chmod(path.c_str(), 0600);
  impl.admin_acceptor.listen(asio::socket_base::max_listen_connections);
  impl.start_reaper();
  asio::co_spawn(impl.io, impl.accept_admin_loop(), asio::detached);
}

std::uint16_t Server::start_tls() {
  const Config& config = impl_->context.config;
  impl_->tls_context = make_tls_context(config);
  return impl_->listen_on(impl_->tls_acceptor, config.tls_listen, Listener::tls);
}

void Server::begin_drain() {
  impl_->context.draining = true;
  // A mirror can take hours: it answers "cancelled" now instead of holding the drain.
  if (impl_->context.deps.mirror) impl_->context.deps.mirror->cancel();
  asio::post(impl_->io, [impl = impl_.get()] {
    boost::system::error_code ec;
    impl->acceptor.close(ec);
    impl->tls_acceptor.close(ec);
    impl->metrics_acceptor.close(ec);
    impl->admin_acceptor.close(ec);
  });
  std::lock_guard lock(impl_->connections_mutex);
  for (auto& weak : impl_->connections) {
    if (auto c = weak.lock()) {
      // Idle keep-alive connections are closed now; busy ones close after their response.
      asio::post(c->socket.get_executor(), [c] {
        if (c->idle) {
          boost::system::error_code ec;
          c->socket.close(ec);
        }
      });
    }
  }
}

void Server::close_connections() {
  std::lock_guard lock(impl_->connections_mutex);
  for (auto& weak : impl_->connections) {
    if (auto c = weak.lock()) {
      asio::post(c->socket.get_executor(), [c] {
        boost::system::error_code ec;
        c->socket.close(ec);
      });
    }
  }
}

bool Server::drained() const {
  return open_connections() == 0;
}

std::size_t Server::open_connections() const {
  return impl_->context.stats.open_connections.load();
}

void Server::reopen_logs() {
  impl_->context.reopen_access_log();
}

void Server::rotate_logs() {
  impl_->context.rotate_access_log();
}

}  // namespace inferllama::http
