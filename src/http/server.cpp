#include "server.hpp"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cstring>
#include <list>
#include <mutex>

#include <nlohmann/json.hpp>

#include "accounts_api.hpp"
#include "hashing.hpp"
#include "hub_service.hpp"
#include "identities.hpp"
#include "inferllama/offload.hpp"
#include "inferllama/tracker.hpp"
#include "mirror.hpp"
#include "range.hpp"
#include "forwarded.hpp"
#include "rate_limit_headers.hpp"
#include "response.hpp"
#include "router.hpp"
#include "snapshot_torrents.hpp"
#include "swarm_upstream.hpp"
#include "url.hpp"
#include "failed_attempts.hpp"
#include "usage_log.hpp"

namespace inferllama::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;
using Request = bhttp::request<bhttp::string_body>;

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr std::size_t kBodyLimit = 1024 * 1024;

// Wakes a reader coroutine when the download it follows moves; the timer lives on the reader's strand.
class ProgressTimer : public cache::ProgressListener, public std::enable_shared_from_this<ProgressTimer> {
 public:
  explicit ProgressTimer(const asio::any_io_executor& executor) : timer_(executor) {}
  void on_progress() override {
    if (signaled_.exchange(true)) return;
    asio::post(timer_.get_executor(), [self = shared_from_this()] { self->timer_.cancel(); });
  }
  void arm() { signaled_ = false; }
  Task<void> wait() {
    timer_.expires_after(std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

 private:
  asio::steady_timer timer_;
  std::atomic<bool> signaled_{false};
};

// On every response a browser might render: no sniffing, no framing, no referrer, nothing to load.
template <class Message>
void add_security_headers(Message& m, bool tls) {
  m.set(bhttp::field::server, "inferllama");
  if (tls) m.set(bhttp::field::strict_transport_security, "max-age=31536000");
  m.set("X-Content-Type-Options", "nosniff");
  m.set("X-Frame-Options", "DENY");
  m.set("Referrer-Policy", "no-referrer");
  m.set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
}

// TCP_CORK while a stored file goes out: the header and the sendfile pages leave in full segments
// (like nginx's tcp_nopush); uncorking flushes the tail. About 1.5x for one fast client on loopback.
void set_cork(asio::ip::tcp::socket& socket, bool on) {
  int value = on ? 1 : 0;
  ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

tracker::Endpoint tracker_endpoint(const tcp::endpoint& e) {
  const auto address = e.address();
  if (address.is_v4()) return tracker::Endpoint::v4_from(address.to_v4().to_bytes(), e.port());
  return tracker::Endpoint::v6_from(address.to_v6().to_bytes(), e.port());
}

// The credentials of "Authorization: Bearer X" (the scheme is case-insensitive), or "".
std::string_view bearer_of(std::string_view authorization) {
  if (authorization.size() < 7) return {};
  for (std::size_t i = 0; i < 6; ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != "bearer"[i]) return {};
  }
  if (authorization[6] != ' ') return {};
  std::string_view token = authorization.substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

// A request target for the access log, without the passkey of /p/, /announce/ or /scrape/{passkey}.
std::string redact_target(std::string_view target) {
  std::string out(target);
  for (std::string_view prefix : {"/p/", "/announce/", "/scrape/"}) {
    if (out.starts_with(prefix) && out.size() >= prefix.size() + 32) out.replace(prefix.size(), 32, "<passkey>");
  }
  return out;
}

// Who an anonymous client is: its IPv4 address (also when it arrives IPv4-mapped), or its IPv6 /64,
// since one IPv6 host can pick any address of its /64.
std::string client_network(const asio::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

Address16 address16(const asio::ip::address& address) {
  if (address.is_v6()) return address.to_v6().to_bytes();
  return asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4()).to_bytes();
}

// IPv4-mapped addresses come back as IPv4, as the peer's own address would be.
asio::ip::address to_address(const Address16& bytes) {
  const asio::ip::address_v6 v6(bytes);
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
  return v6;
}

// Request smuggling: only "chunked" alone frames a request body the node can read. A Transfer-Encoding
// whose last coding is not chunked leaves the body's end to guesswork (RFC 9112 6.3: 400), and codings
// before chunked would need decoding the node does not do (501).
std::optional<std::pair<bhttp::status, std::string>> transfer_coding_problem(const Request& req) {
  std::vector<std::string_view> codings;
  for (auto [it, end] = req.equal_range(bhttp::field::transfer_encoding); it != end; ++it) {
    std::string_view field = it->value();
    while (true) {
      const auto comma = field.find(',');
      std::string_view coding = field.substr(0, comma);
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) coding.remove_prefix(1);
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) coding.remove_suffix(1);
      if (!coding.empty()) codings.push_back(coding);
      if (comma == std::string_view::npos) break;
      field.remove_prefix(comma + 1);
    }
  }
  if (codings.empty() && req.find(bhttp::field::transfer_encoding) == req.end()) return std::nullopt;
  const auto chunked = std::count_if(codings.begin(), codings.end(),
                                     [](std::string_view c) { return beast::iequals(c, "chunked"); });
  if (codings.empty() || !beast::iequals(codings.back(), "chunked") || chunked != 1) {
    return std::pair{bhttp::status::bad_request, std::string("Transfer-Encoding must end with chunked, used once")};
  }
  if (codings.size() > 1) {
    return std::pair{bhttp::status::not_implemented, std::string("only the chunked transfer coding is supported")};
  }
  return std::nullopt;
}

// The passkey a route carries (/p/{passkey}/..., /announce/{passkey}), or "".
std::string_view passkey_of(const Route& route) {
  if (const auto* resolve = std::get_if<ResolveRoute>(&route)) return resolve->passkey;
  if (const auto* api = std::get_if<ApiRoute>(&route)) return api->passkey;
  if (const auto* tracker = std::get_if<TrackerRoute>(&route)) return tracker->passkey;
  return {};
}

// Compares secrets in time independent of where they differ.
bool same_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The peer of an admin socket connection runs as the node's own user, or as root. The socket's mode
// (0600) already keeps other users out; this holds should the mode or its directory be loosened.
bool peer_is_node_user(int fd) {
  ucred peer{};
  socklen_t size = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return false;
  return peer.uid == ::geteuid() || peer.uid == 0;
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& listen) {
  auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, static_cast<std::uint16_t>(std::stoul(listen.substr(colon + 1)))};
}

}  // namespace

struct Server::Impl {
  Impl(asio::io_context& io, const Config& config, hub::HubService& hub, ChunkStore& store, asio::thread_pool& blocking)
      : io(io),
        config(config),
        hub(hub),
        store(store),
        blocking(blocking),
        acceptor(io),
        trusted_proxies(parse_networks(config.trusted_proxies).value_or(std::vector<Network>{})) {
    if (!config.access_log.empty()) {
      access_log = config.access_log == "-" ? spdlog::stderr_logger_mt("access")
                                            : spdlog::basic_logger_mt("access", config.access_log);
      access_log->set_pattern("%v");
      access_log->flush_on(spdlog::level::info);
    }
  }
  ~Impl() {
    if (!admin_socket.empty()) ::unlink(admin_socket.c_str());
  }

  struct Connection {
    tcp::socket socket;
    std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;  // set on the TLS listener
    // On the admin socket: the OS vouched for the peer (the socket's mode, SO_PEERCRED), who is the admin.
    // The socket then holds a Unix domain descriptor: no peer address, no TCP options.
    bool admin = false;
    bool idle = true;
    // What the current request turned into, for metrics and the access log.
    const char* route = "";
    unsigned status = 0;
    std::uint64_t bytes = 0;
    std::string tracker_reply;  // reused by every tracker answer on this connection
    bool responded = false;     // some of the current response has been written
    tcp::endpoint peer;         // the other end of the connection, learnt at accept
    bool metrics_only = false;  // on metrics_listen: /metrics and /healthz only
    asio::ip::address client;   // who the current request is from (see identify_client)
    bool forwarded_https = false;  // a trusted proxy says the client spoke https
    bool credentials = false;      // the current request presents a key or passkey (see FailedAttempts)
    // Who the current request is from and what it has used; unset for routes nobody is accounted for.
    struct Account {
      UserId who;
      const LimitPolicy* policy = nullptr;  // nullptr: no limits apply
      std::string repo;                     // "model/acme/x", or "" for requests about no repo
      usage::UsageCounts counts;
      Decision decision;  // holds the concurrent-download slot until the response is done
    };
    std::optional<Account> account;
    HeaderList limit_headers;  // RateLimit fields of the current request, on every response to it
    // The connection is closed if it makes no progress by this time (slow or idle clients).
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    asio::steady_timer watchdog;
    explicit Connection(tcp::socket s) : socket(std::move(s)), watchdog(socket.get_executor()) {}
  };

  // Progress: the client has another idle_timeout to make the next step.
  void touch(Connection& c) const { c.deadline = std::chrono::steady_clock::now() + config.idle_timeout; }
  // Waiting on the upstream, not on the client: the client is not timed.
  static void pause_deadline(Connection& c) { c.deadline = std::chrono::steady_clock::time_point::max(); }
  Task<void> watch(std::shared_ptr<Connection> c);

  enum class Listener { plain, tls, metrics };
  Task<void> accept_loop(tcp::acceptor& from, Listener kind);
  Task<void> accept_admin_loop();
  void spawn(std::shared_ptr<Connection> connection);
  std::uint16_t listen_on(tcp::acceptor& acceptor, const std::string& host_port, Listener kind);
  Task<void> serve(std::shared_ptr<Connection> connection);
  Task<bool> handle(Connection& c, Request& request);
  Task<bool> send(Connection& c, StringResponse response);
  Task<bool> send_error(Connection& c, const Request& req, bhttp::status status, const std::string& message,
                        const std::string& code = {});
  Task<bool> send_reply(Connection& c, const Request& req, const hub::Reply& reply);
  // A fault of the node's own (the index failing, say) while answering: logged and counted, and a 500
  // when nothing of the response went out yet (else the connection is closed).
  Task<bool> send_internal_error(Connection& c, const Request& req, const std::string& what);
  Task<bool> send_file(Connection& c, const Request& req, hub::FileAnswer answer);
  Task<bool> stream_stored(Connection& c, const BlobEntry& blob, std::uint64_t first, std::uint64_t last);
  Task<bool> stream_download(Connection& c, cache::Download& download, std::uint64_t first, std::uint64_t last);
  // Writes a response's header (its body follows separately, or there is none).
  Task<bool> write_head(Connection& c, bhttp::response<bhttp::empty_body>& res);
  // Every write that goes out is counted by flowed(), so a client that drops the connection mid-chunk
  // has still been charged for what it received.
  Task<bool> sendfile_all(Connection& c, int fd, std::uint64_t offset, std::uint64_t length, bool from_cache);
  std::string public_base(const Connection& c, const Request& req) const;
  // Who the request is from: the peer, or the client a trusted reverse proxy names (c.client).
  void identify_client(Connection& c, const Request& req) const;
  std::string render_metrics() const;
  Task<bool> handle_admin(Connection& c, const Request& req, const std::string& action);
  Task<bool> handle_tracker(Connection& c, const Request& req, const TrackerRoute& route, std::string_view query);
  Task<bool> handle_resolve(Connection& c, const Request& req, const ResolveRoute& resolve, const hub::Caller& caller);
  Task<bool> handle_torrent(Connection& c, const Request& req, const ApiRoute& api, std::string_view query);
  Task<bool> send_zeros(Connection& c, const Request& req, std::uint64_t size);
  void record(Connection& c, const Request& req, std::chrono::steady_clock::time_point started);
  template <class Message>
  void add_node_headers(const Connection& c, Message& m) const {
    add_security_headers(m, c.tls != nullptr);
    for (const auto& [name, value] : c.limit_headers) m.set(name, value);
  }
  // Identifies the caller (node key, passkey, or address), sets `caller` to the credentials the Hub
  // sees for it, and applies its limits. nullopt: go on; a value: the request was answered (401, 429,
  // 503) and this says whether the connection stays open.
  Task<std::optional<bool>> open_account(Connection& c, const Request& req, hub::Caller& caller,
                                         const std::string& passkey, const std::string& repo, bool download);
  const LimitPolicy* policy_for(const UserId& who) const;
  // Makes `account` the current request's, with its policy's decision on this request (a download when
  // `download`). Whether it was allowed is in c.account->decision.
  Task<void> admit(Connection& c, Connection::Account& account, bool download);
  // File content sent: counted for the usage records and charged to the token limit as it flows.
  void flowed(Connection& c, std::uint64_t bytes, bool from_cache);
  Task<bool> send_unauthorized(Connection& c, const Request& req, const std::string& message);
  Task<bool> handle_usage(Connection& c, const Request& req, std::string_view query);
  bool admin_allowed(const Connection& c, const Request& req) const;

  asio::io_context& io;
  const Config& config;
  hub::HubService& hub;
  ChunkStore& store;
  asio::thread_pool& blocking;
  tcp::acceptor acceptor;
  tcp::acceptor tls_acceptor{io};
  tcp::acceptor metrics_acceptor{io};
  local::acceptor admin_acceptor{io};
  std::filesystem::path admin_socket;  // bound by this node, removed when it stops
  std::unique_ptr<asio::ssl::context> tls_context;
  mutable ServerCounters counters;
  std::shared_ptr<spdlog::logger> access_log;  // JSON lines, when configured
  std::atomic<bool> draining{false};
  std::atomic<std::uint64_t> refused_connections{0};
  std::mutex connections_mutex;
  std::list<std::weak_ptr<Connection>> connections;
  tracker::Tracker* tracker = nullptr;
  torrent::SnapshotTorrents* torrents = nullptr;
  torrent::Mirror* mirror = nullptr;
  std::uint16_t udp_announce_port = 0;
  std::vector<std::function<void(std::string&)>> metrics_sources;
  usage::Identities* identities = nullptr;
  usage::UsageLog* usage_log = nullptr;
  RateLimiter* limiter = nullptr;
  metrics::Counter unauthorized{}, limited{}, internal_errors{};
  std::vector<Network> trusted_proxies;
  MonotonicClock attempts_clock;
  usage::FailedAttempts failed_attempts{attempts_clock, config.auth_failure_limit};
};

Server::Server(asio::io_context& io, const Config& config, hub::HubService& hub, ChunkStore& store,
               asio::thread_pool& blocking)
    : impl_(std::make_unique<Impl>(io, config, hub, store, blocking)) {}
Server::~Server() = default;
ServerCounters& Server::counters() {
  return impl_->counters;
}
void Server::attach_tracker(tracker::Tracker& tracker) {
  impl_->tracker = &tracker;
}
void Server::attach_torrents(torrent::SnapshotTorrents& torrents, std::uint16_t udp_announce_port) {
  impl_->torrents = &torrents;
  impl_->udp_announce_port = udp_announce_port;
}
void Server::attach_mirror(torrent::Mirror& mirror) {
  impl_->mirror = &mirror;
}
void Server::attach_accounts(usage::Identities& identities, usage::UsageLog& usage, RateLimiter& limiter) {
  impl_->identities = &identities;
  impl_->usage_log = &usage;
  impl_->limiter = &limiter;
}
void Server::add_metrics(std::function<void(std::string&)> render) {
  impl_->metrics_sources.push_back(std::move(render));
}

std::uint16_t Server::Impl::listen_on(tcp::acceptor& acceptor, const std::string& host_port, Listener kind) {
  auto [host, port] = split_host_port(host_port);
  tcp::endpoint endpoint(asio::ip::make_address(host), port);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  asio::co_spawn(io, accept_loop(acceptor, kind), asio::detached);
  return acceptor.local_endpoint().port();
}

std::uint16_t Server::start() { return impl_->listen_on(impl_->acceptor, impl_->config.listen, Impl::Listener::plain); }

std::uint16_t Server::start_metrics() {
  return impl_->listen_on(impl_->metrics_acceptor, impl_->config.metrics_listen, Impl::Listener::metrics);
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
  asio::co_spawn(impl.io, impl.accept_admin_loop(), asio::detached);
}

std::uint16_t Server::start_tls() {
  const Config& config = impl_->config;
  // TLS 1.2 and 1.3 only, forward-secret AEAD ciphers only.
  auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                       asio::ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  SSL_CTX_set_cipher_list(context->native_handle(),
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                          "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
  context->use_certificate_chain_file(config.tls_cert.string());
  context->use_private_key_file(config.tls_key.string(), asio::ssl::context::pem);
  impl_->tls_context = std::move(context);
  return impl_->listen_on(impl_->tls_acceptor, config.tls_listen, Impl::Listener::tls);
}

void Server::begin_drain() {
  impl_->draining = true;
  // A mirror can take hours: it answers "cancelled" now instead of holding the drain.
  if (impl_->mirror) impl_->mirror->cancel();
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

bool Server::drained() const {
  return impl_->counters.open_connections.load() == 0;
}

Task<void> Server::Impl::accept_loop(tcp::acceptor& acceptor, Listener kind) {
  while (acceptor.is_open()) {
    boost::system::error_code ec;
    tcp::socket socket(asio::make_strand(io));
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      spdlog::warn("accept failed: {}", ec.message());
      continue;
    }
    if (draining) break;
    if (counters.open_connections.load() >= config.max_connections) {
      // Over the limit: a short 503 instead of a connection that would starve the others.
      static constexpr std::string_view busy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
          "Retry-After: 1\r\nX-Error-Message: too many connections\r\nContent-Length: 33\r\n\r\n"
          "{\"error\":\"too many connections\"}";
      socket.non_blocking(true, ec);
      socket.write_some(asio::buffer(busy), ec);
      socket.close(ec);
      ++refused_connections;
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    const auto peer = socket.remote_endpoint(ec);
    if (ec) continue;  // gone already
    auto connection = std::make_shared<Connection>(std::move(socket));
    connection->peer = peer;
    if (kind == Listener::tls)
      connection->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(connection->socket, *tls_context);
    connection->metrics_only = kind == Listener::metrics;
    spawn(std::move(connection));
  }
}

void Server::Impl::spawn(std::shared_ptr<Connection> connection) {
  {
    std::lock_guard lock(connections_mutex);
    std::erase_if(connections, [](const auto& w) { return w.expired(); });
    connections.push_back(connection);
  }
  auto executor = connection->socket.get_executor();
  asio::co_spawn(executor, watch(connection), asio::detached);
  asio::co_spawn(executor, serve(std::move(connection)), asio::detached);
}

Task<void> Server::Impl::accept_admin_loop() {
  while (admin_acceptor.is_open()) {
    boost::system::error_code ec;
    local::socket peer(asio::make_strand(io));
    co_await admin_acceptor.async_accept(peer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !admin_acceptor.is_open()) break;
      spdlog::warn("admin socket: accept failed: {}", ec.message());
      continue;
    }
    if (draining) break;
    if (!peer_is_node_user(peer.native_handle())) {
      spdlog::warn("admin socket: refused a peer that runs as another user");
      continue;  // `peer` closes
    }
    // Served by the same code as TCP connections: reading, writing and timeouts do not depend on the
    // socket's family, so the descriptor moves into the connection's socket.
    tcp::socket socket(peer.get_executor());
    socket.assign(tcp::v6(), peer.release(), ec);
    if (ec) continue;
    auto connection = std::make_shared<Connection>(std::move(socket));
    connection->admin = true;
    spawn(std::move(connection));
  }
}

Task<void> Server::Impl::watch(std::shared_ptr<Connection> c) {
  while (c->socket.is_open()) {
    boost::system::error_code ec;
    c->watchdog.expires_at(std::min(c->deadline, std::chrono::steady_clock::now() + std::chrono::seconds(1)));
    co_await c->watchdog.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (c->socket.is_open() && std::chrono::steady_clock::now() >= c->deadline) {
      // Idle keep-alive, a slow request (slowloris) or a client that stopped reading.
      c->socket.close(ec);
    }
  }
}

Task<void> Server::Impl::serve(std::shared_ptr<Connection> connection) {
  ++counters.open_connections;
  beast::flat_buffer buffer;
  try {
    // Plain and TLS streams are picked with if/else around each co_await, never `co_await (tls ? a : b)`:
    // GCC 12 destroys the awaitable of a conditional expression twice.
    if (connection->tls) {
      touch(*connection);
      boost::system::error_code ec;
      co_await connection->tls->async_handshake(asio::ssl::stream_base::server,
                                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) throw boost::system::system_error(ec, "TLS handshake");
    }
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(kBodyLimit);
      boost::system::error_code ec;
      connection->idle = true;
      touch(*connection);
      if (draining && buffer.size() == 0) break;
      if (connection->tls) {
        co_await bhttp::async_read(*connection->tls, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      } else {
        co_await bhttp::async_read(connection->socket, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      }
      connection->idle = false;
      if (ec) {
        Request dummy;
        if (ec == bhttp::error::header_limit) {
          co_await send_error(*connection, dummy, bhttp::status::request_header_fields_too_large,
                              "request header too large");
        } else if (ec == bhttp::error::body_limit) {
          co_await send_error(*connection, dummy, bhttp::status::payload_too_large, "request body too large");
        } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                   ec != asio::error::operation_aborted && ec != asio::error::connection_reset && parser.got_some()) {
          co_await send_error(*connection, dummy, bhttp::status::bad_request, "malformed request");
        }
        break;
      }
      Request request = parser.release();
      const auto started = std::chrono::steady_clock::now();
      identify_client(*connection, request);
      if (auto problem = transfer_coding_problem(request)) {
        // The body's end is unknown, so is where the next request starts: answer and close.
        request.keep_alive(false);
        connection->route = "bad_request";
        co_await send_error(*connection, request, problem->first, problem->second);
        record(*connection, request, started);
        break;
      }
      connection->responded = false;
      bool keep_alive = false;
      std::string failure;
      try {
        keep_alive = co_await handle(*connection, request);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) keep_alive = co_await send_internal_error(*connection, request, failure);
      record(*connection, request, started);
      if (!keep_alive || draining) break;
    }
  } catch (const std::exception& e) {
    spdlog::debug("connection ended: {}", e.what());
  }
  boost::system::error_code ignored;
  connection->socket.shutdown(tcp::socket::shutdown_send, ignored);
  connection->socket.close(ignored);
  connection->watchdog.cancel();
  --counters.open_connections;
}

void Server::Impl::identify_client(Connection& c, const Request& req) const {
  const auto& peer = c.peer;
  if (trusted_proxies.empty()) {
    c.client = peer.address();
    c.forwarded_https = false;
    return;
  }
  ForwardedHeaders headers;
  for (auto [it, end] = req.equal_range(bhttp::field::forwarded); it != end; ++it) headers.forwarded.push_back(it->value());
  for (auto [it, end] = req.equal_range("X-Forwarded-For"); it != end; ++it)
    headers.x_forwarded_for.push_back(it->value());
  headers.x_forwarded_proto = req["X-Forwarded-Proto"];
  const auto origin = client_origin(address16(peer.address()), trusted_proxies, headers);
  c.client = to_address(origin.address);
  c.forwarded_https = origin.https;
}

std::string Server::Impl::public_base(const Connection& c, const Request& req) const {
  if (!config.public_url.empty()) return config.public_url;
  std::string host(req[bhttp::field::host]);
  bool sane = !host.empty() && host.size() < 256 && std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
  });
  return (c.tls || c.forwarded_https ? "https://" : "http://") + (sane ? host : config.listen);
}

void Server::Impl::record(Connection& c, const Request& req, std::chrono::steady_clock::time_point started) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const std::string route = c.route;
  counters.requests.with("route=\"" + route + "\",status=\"" + std::to_string(c.status) + "\"").add();
  counters.latency.with("route=\"" + route + "\"").observe(seconds);
  if (c.account) {
    auto& account = *c.account;
    account.counts.requests = 1;
    // A row per repo that answered: names that do not exist (or were refused) go under no repo, so
    // made-up names cannot grow the usage table.
    if (c.status >= 400) account.repo.clear();
    usage_log->add(account.who, account.repo, account.counts);
    c.account.reset();  // frees a concurrent-download slot
  }
  c.limit_headers.clear();
  if (!access_log) return;
  nlohmann::json line{{"time_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count()},
                      {"remote", c.admin ? "admin socket" : c.client.is_unspecified() ? "" : c.client.to_string()},
                      {"method", std::string(req.method_string())},
                      {"target", redact_target(req.target())},
                      {"route", route},
                      {"status", c.status},
                      {"bytes", c.bytes},
                      {"duration_ms", seconds * 1000}};
  access_log->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string Server::Impl::render_metrics() const {
  using metrics::write_header;
  using metrics::write_sample;
  std::string out;
  write_header(out, "inferllama_http_requests_total", "counter", "HTTP requests by route and status");
  counters.requests.each([&](const std::string& labels, const metrics::Counter& c) {
    write_sample(out, "inferllama_http_requests_total", labels, static_cast<double>(c.value()));
  });
  write_header(out, "inferllama_http_request_duration_seconds", "histogram", "Time to answer a request, by route");
  counters.latency.each([&](const std::string& labels, const metrics::Histogram& h) {
    h.render(out, "inferllama_http_request_duration_seconds", labels);
  });
  write_header(out, "inferllama_http_open_connections", "gauge", "Open client connections");
  write_sample(out, "inferllama_http_open_connections", "", static_cast<double>(counters.open_connections.load()));
  write_header(out, "inferllama_http_refused_connections_total", "counter", "Connections refused over max_connections");
  write_sample(out, "inferllama_http_refused_connections_total", "", static_cast<double>(refused_connections.load()));
  write_header(out, "inferllama_served_bytes_total", "counter", "Body bytes sent, by where they came from");
  write_sample(out, "inferllama_served_bytes_total", "source=\"cache\"",
               static_cast<double>(counters.bytes_from_cache.value()));
  write_sample(out, "inferllama_served_bytes_total", "source=\"download\"",
               static_cast<double>(counters.bytes_from_downloads.value()));
  auto& h = hub.counters();
  write_header(out, "inferllama_cache_requests_total", "counter", "File requests answered from the store (hit) or not");
  write_sample(out, "inferllama_cache_requests_total", "result=\"hit\"", static_cast<double>(h.hits.load()));
  write_sample(out, "inferllama_cache_requests_total", "result=\"miss\"", static_cast<double>(h.misses.load()));
  write_header(out, "inferllama_upstream_requests_total", "counter", "Metadata requests sent upstream");
  write_sample(out, "inferllama_upstream_requests_total", "", static_cast<double>(h.upstream_requests.load()));
  const auto& metadata = hub.metadata();
  write_header(out, "inferllama_metadata_entries", "gauge",
               "Hub metadata answers stored (revision info, tree pages, paths-info)");
  write_sample(out, "inferllama_metadata_entries", "", static_cast<double>(metadata.entries()));
  write_header(out, "inferllama_metadata_bytes", "gauge", "Bytes charged to the stored metadata answers");
  write_sample(out, "inferllama_metadata_bytes", "", static_cast<double>(metadata.bytes()));
  write_header(out, "inferllama_metadata_budget_bytes", "gauge", "Budget of the stored metadata answers");
  write_sample(out, "inferllama_metadata_budget_bytes", "", static_cast<double>(metadata.budget()));
  write_header(out, "inferllama_metadata_evictions_total", "counter", "Stored metadata answers dropped for the budget");
  write_sample(out, "inferllama_metadata_evictions_total", "", static_cast<double>(metadata.evictions()));
  write_header(out, "inferllama_metadata_unstored_total", "counter",
               "Metadata requests with parameters real clients do not send: forwarded, not stored");
  write_sample(out, "inferllama_metadata_unstored_total", "", static_cast<double>(h.metadata_unstored.load()));
  auto& d = hub.downloads().counters();
  write_header(out, "inferllama_upstream_errors_total", "counter", "Upstream failures by kind");
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"transport\"",
               static_cast<double>(h.upstream_transport_errors.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"server\"",
               static_cast<double>(h.upstream_server_errors.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"transfer_retry\"",
               static_cast<double>(d.retries.load()));
  write_sample(out, "inferllama_upstream_errors_total", "kind=\"download_failed\"",
               static_cast<double>(d.failed.load()));
  write_header(out, "inferllama_upstream_bytes_total", "counter", "File bytes fetched upstream");
  write_sample(out, "inferllama_upstream_bytes_total", "", static_cast<double>(d.upstream_bytes.load()));
  write_header(out, "inferllama_resumed_bytes_total", "counter",
               "File bytes an interrupted download had staged and a later one reused");
  write_sample(out, "inferllama_resumed_bytes_total", "", static_cast<double>(d.resumed_bytes.load()));
  write_header(out, "inferllama_downloads_total", "counter", "Upstream file downloads by outcome");
  write_sample(out, "inferllama_downloads_total", "result=\"started\"", static_cast<double>(d.started.load()));
  write_sample(out, "inferllama_downloads_total", "result=\"completed\"", static_cast<double>(d.completed.load()));
  write_sample(out, "inferllama_downloads_total", "result=\"failed\"", static_cast<double>(d.failed.load()));
  write_header(out, "inferllama_ingests_total", "counter",
               "Files that arrived over BitTorrent (mirrors) and went through the verified ingest, by outcome");
  write_sample(out, "inferllama_ingests_total", "result=\"started\"", static_cast<double>(d.ingests_started.load()));
  write_sample(out, "inferllama_ingests_total", "result=\"completed\"",
               static_cast<double>(d.ingests_completed.load()));
  write_sample(out, "inferllama_ingests_total", "result=\"failed\"", static_cast<double>(d.ingests_failed.load()));
  write_header(out, "inferllama_downloads_in_flight", "gauge", "Files being fetched upstream now");
  write_sample(out, "inferllama_downloads_in_flight", "", static_cast<double>(hub.downloads().in_flight()));
  write_header(out, "inferllama_disk_used_bytes", "gauge", "Bytes in stored chunks");
  write_sample(out, "inferllama_disk_used_bytes", "", static_cast<double>(store.bytes_stored()));
  auto& evictor = hub.evictor();
  write_header(out, "inferllama_disk_budget_bytes", "gauge", "Disk budget of the chunk store (0 = none)");
  write_sample(out, "inferllama_disk_budget_bytes", "", static_cast<double>(evictor.budget()));
  write_header(out, "inferllama_evictions_total", "counter", "Files evicted to stay under the budget");
  write_sample(out, "inferllama_evictions_total", "", static_cast<double>(evictor.counters().evicted_files.load()));
  write_header(out, "inferllama_evicted_bytes_total", "counter", "Disk bytes freed by evictions");
  write_sample(out, "inferllama_evicted_bytes_total", "", static_cast<double>(evictor.counters().evicted_bytes.load()));
  write_header(out, "inferllama_http_internal_errors_total", "counter",
               "Requests the node failed to answer for a fault of its own (500 or a closed connection)");
  write_sample(out, "inferllama_http_internal_errors_total", "", static_cast<double>(internal_errors.value()));
  if (tracker) tracker->render_metrics(out);
  if (limiter) {
    write_header(out, "inferllama_http_unauthorized_total", "counter",
                 "Requests refused with 401: a bad node key or passkey, or none under require_auth");
    write_sample(out, "inferllama_http_unauthorized_total", "", static_cast<double>(unauthorized.value()));
    write_header(out, "inferllama_http_rate_limited_total", "counter", "Requests refused by a rate limit (429, 503)");
    write_sample(out, "inferllama_http_rate_limited_total", "", static_cast<double>(limited.value()));
    write_header(out, "inferllama_auth_failures_total", "counter",
                 "Credentials refused (node keys, passkeys, the admin key), counted per client address");
    write_sample(out, "inferllama_auth_failures_total", "", static_cast<double>(failed_attempts.failures()));
    write_header(out, "inferllama_auth_blocked_total", "counter",
                 "Requests refused (429) because their address presented too many refused credentials");
    write_sample(out, "inferllama_auth_blocked_total", "", static_cast<double>(failed_attempts.refusals()));
    write_header(out, "inferllama_auth_tracked_addresses", "gauge", "Client addresses with recent refused credentials");
    write_sample(out, "inferllama_auth_tracked_addresses", "", static_cast<double>(failed_attempts.tracked()));
    limiter->render_metrics(out);
  }
  for (const auto& render : metrics_sources) render(out);
  return out;
}

// The admin is a caller on the admin socket (the OS checked who it is) or a TCP caller with the admin
// key. An address is no identity: behind a reverse proxy on this host every client comes from loopback.
bool Server::Impl::admin_allowed(const Connection& c, const Request& req) const {
  if (c.admin) return true;
  return !config.admin_key.empty() && same_secret(bearer_of(req[bhttp::field::authorization]), config.admin_key);
}

Task<bool> Server::Impl::handle_admin(Connection& c, const Request& req, const std::string& action) {
  if (!admin_allowed(c, req)) {
    if (!config.admin_key.empty()) {
      co_return co_await send_unauthorized(c, req, "the admin API needs the node's admin key as a bearer token");
    }
    co_return co_await send_error(c, req, bhttp::status::forbidden,
                                  "the admin API is not served over TCP on a node without admin_key: run `inferllama` "
                                  "beside the node (it uses the admin socket in the data directory) or set admin_key");
  }
  if (action.starts_with("users") || action.starts_with("keys")) {
    if (!identities) co_return co_await send_error(c, req, bhttp::status::not_found, "this node keeps no users");
    const std::string_view query = url::split_target(req.target()).second;
    // HEAD is GET without the body (send_reply leaves it out).
    const std::string method = req.method() == bhttp::verb::head ? "GET" : std::string(req.method_string());
    usage::Accounts accounts{*identities, *usage_log, config.token_size};
    auto answer =
        co_await offload(blocking, [&] { return usage::answer_admin(accounts, method, action, query, req.body()); });
    if (!answer) co_return co_await send_error(c, req, bhttp::status::not_found, "no such route");
    // no-store: a created key's secret must not be kept anywhere.
    const hub::Reply reply{
        answer->status, {{"Cache-Control", "no-store"}}, answer->content_type, std::move(answer->body)};
    co_return co_await send_reply(c, req, reply);
  }
  if (req.method() != bhttp::verb::post)
    co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use POST");
  // A JSON body cannot be sent across origins without a preflight, which the node never grants: a web
  // page in a browser on this host cannot pin, collect or mirror.
  if (!req[bhttp::field::content_type].starts_with("application/json"))
    co_return co_await send_error(c, req, bhttp::status::unsupported_media_type, "send a JSON body (application/json)");
  nlohmann::json result;
  if (action == "mirror") {
    auto body = nlohmann::json::parse(req.body(), nullptr, false);
    if (!mirror || !body.is_object() || !body.contains("repo") || !body["repo"].is_string() || !body.contains("from") ||
        !body["from"].is_string()) {
      co_return co_await send_error(c, req, bhttp::status::bad_request,
                                    "expected {\"repo\": ..., \"revision\": ..., \"type\": ..., \"from\": URL}");
    }
    auto type = parse_repo_type(body.value("type", "model"));
    if (!type) co_return co_await send_error(c, req, bhttp::status::bad_request, "type is model, dataset or space");
    RepoId repo{*type, body["repo"].get<std::string>()};
    const std::string rev = body.value("revision", "main");
    std::string from = body["from"].get<std::string>();
    while (from.ends_with('/')) from.pop_back();
    if (!from.starts_with("http://") && !from.starts_with("https://"))
      co_return co_await send_error(c, req, bhttp::status::bad_request, "from is the http(s) URL of another node");
    pause_deadline(c);
    auto outcome = co_await offload(blocking, [&] { return mirror->mirror(repo, rev, from); });
    touch(c);
    if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return co_await send_reply(c, req, *reply);
    const auto& done = std::get<torrent::MirrorOutcome>(outcome);
    result = {{"repo", repo.key()},
              {"commit", done.commit},
              {"files", done.files},
              {"fetched_files", done.fetched_files},
              {"fetched_bytes", done.fetched_bytes},
              {"info_hash", done.info_hash},
              {"same_swarm", done.same_swarm}};
  } else if (action == "gc") {
    auto report = co_await offload(blocking, [&] { return hub.evictor().collect_garbage(); });
    result = {{"chunks_removed", report.chunks_removed}, {"bytes_freed", report.bytes_freed}};
  } else {
    auto body = nlohmann::json::parse(req.body(), nullptr, false);
    if (!body.is_object() || !body.contains("repo") || !body["repo"].is_string()) {
      co_return co_await send_error(c, req, bhttp::status::bad_request, "expected {\"repo\": ..., \"revision\": ...}");
    }
    auto type = parse_repo_type(body.value("type", "model"));
    if (!type) co_return co_await send_error(c, req, bhttp::status::bad_request, "type is model, dataset or space");
    RepoId repo{*type, body["repo"].get<std::string>()};
    const std::string rev = body.value("revision", "main");
    const bool pinned = action == "pin";
    auto outcome = co_await offload(blocking, [&] { return hub.pin(repo, rev, pinned); });
    if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return co_await send_reply(c, req, *reply);
    result = {{"repo", repo.key()}, {"commit", std::get<std::string>(outcome)}, {"pinned", pinned}};
  }
  StringResponse res{bhttp::status::ok, req.version()};
  res.keep_alive(req.keep_alive());
  res.set(bhttp::field::content_type, "application/json");
  res.body() = result.dump();
  co_return co_await send(c, std::move(res));
}

Task<bool> Server::Impl::send_internal_error(Connection& c, const Request& req, const std::string& what) {
  internal_errors.add();
  spdlog::error("{} {}: {}", std::string(req.method_string()), redact_target(req.target()), what);
  c.account.reset();  // nothing is charged for a failed answer's unsent bytes; the slot is freed
  if (c.responded) co_return false;
  co_return co_await send_error(c, req, bhttp::status::internal_server_error,
                                "the node failed to answer this request; see its log");
}

Task<bool> Server::Impl::send(Connection& c, StringResponse response) {
  c.responded = true;
  add_node_headers(c, response);
  response.prepare_payload();
  clean_fields(response);
  c.status = response.result_int();
  c.bytes = response.body().size();
  bool keep = response.keep_alive() && !draining;
  response.keep_alive(keep);
  boost::system::error_code ec;
  if (c.tls) {
    co_await bhttp::async_write(*c.tls, response, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await bhttp::async_write(c.socket, response, asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return keep && !ec;
}

Task<bool> Server::Impl::send_error(Connection& c, const Request& req, bhttp::status status, const std::string& message,
                                    const std::string& code) {
  co_return co_await send_reply(c, req, hub::error_reply(static_cast<unsigned>(status), message, code));
}

Task<bool> Server::Impl::send_reply(Connection& c, const Request& req, const hub::Reply& reply) {
  // A request that could not be parsed has no version: answer in HTTP/1.1 and close.
  StringResponse res = reply_response(reply, req.version() ? req.version() : 11, req.version() && req.keep_alive());
  if (req.method() != bhttp::verb::head) co_return co_await send(c, std::move(res));
  // HEAD: the GET answer's header, without its body.
  res.prepare_payload();
  add_node_headers(c, res);
  bhttp::response<bhttp::empty_body> head{res.result(), res.version()};
  for (const auto& field : res) head.set(field.name_string(), field.value());
  const bool keep = res.keep_alive() && !draining;
  head.keep_alive(keep);
  c.status = head.result_int();
  c.bytes = 0;
  co_return co_await write_head(c, head) && keep;
}

Task<bool> Server::Impl::handle(Connection& c, Request& req) {
  const std::string_view query = url::split_target(req.target()).second;
  Route r = route_target(req.target());
  c.route = route_name(r);
  const bool read = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
  hub::Caller caller{std::string(req[bhttp::field::authorization])};

  if (std::holds_alternative<BadRequest>(r)) {
    co_return co_await send_error(c, req, bhttp::status::bad_request, std::get<BadRequest>(r).message);
  }
  c.credentials = !req[bhttp::field::authorization].empty() || !passkey_of(r).empty();
  if (c.credentials) {
    std::chrono::milliseconds retry_after{0};
    if (failed_attempts.blocked(client_network(c.client), retry_after)) {
      const auto seconds = std::chrono::ceil<std::chrono::seconds>(retry_after).count();
      hub::Reply refusal = hub::error_reply(429, "too many refused credentials from this address; retry in " +
                                                     std::to_string(seconds) + " s");
      refusal.headers.emplace_back("Retry-After", std::to_string(seconds));
      co_return co_await send_reply(c, req, refusal);
    }
  }
  if (std::holds_alternative<NotFound>(r)) {
    co_return co_await send_error(c, req, bhttp::status::not_found, "no such route");
  }
  if (c.admin && !std::holds_alternative<AdminRoute>(r) && !std::holds_alternative<UsageRoute>(r) &&
      !std::holds_alternative<HealthRoute>(r)) {
    co_return co_await send_error(c, req, bhttp::status::not_found, "the admin socket serves the admin API only");
  }
  if (auto* admin = std::get_if<AdminRoute>(&r)) co_return co_await handle_admin(c, req, admin->action);
  if (auto* tracker_route = std::get_if<TrackerRoute>(&r))
    co_return co_await handle_tracker(c, req, *tracker_route, query);
  if (c.metrics_only && !std::holds_alternative<MetricsRoute>(r) && !std::holds_alternative<HealthRoute>(r)) {
    co_return co_await send_error(c, req, bhttp::status::not_found, "this listener serves /metrics and /healthz only");
  }
  if (std::holds_alternative<MetricsRoute>(r)) {
    // Counters tell an outsider what is cached and who is busy: on metrics_listen, or with the admin key.
    if (!c.metrics_only &&
        (config.admin_key.empty() || !same_secret(bearer_of(req[bhttp::field::authorization]), config.admin_key))) {
      co_return co_await send_error(c, req, bhttp::status::not_found,
                                    "metrics are served on metrics_listen, or here with the admin key as a bearer");
    }
    StringResponse res{bhttp::status::ok, req.version()};
    res.keep_alive(req.keep_alive());
    res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = render_metrics();
    co_return co_await send(c, std::move(res));
  }
  if (std::holds_alternative<HealthRoute>(r)) {
    StringResponse res{bhttp::status::ok, req.version()};
    res.keep_alive(req.keep_alive());
    res.set(bhttp::field::content_type, "text/plain");
    res.set(torrent::kNodeHeader, torrent::kNodeVersion);  // how a mirror tells a node from another server
    res.body() = "ok\n";
    co_return co_await send(c, std::move(res));
  }
  if (std::holds_alternative<UsageRoute>(r)) {
    if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
    co_return co_await handle_usage(c, req, query);
  }
  // The Hub's routes and the node's torrent routes: accounted to a user or an address, and limited.
  if (limiter) {
    const auto* resolve = std::get_if<ResolveRoute>(&r);
    const auto* api = std::get_if<ApiRoute>(&r);
    const std::string& passkey = resolve ? resolve->passkey : api->passkey;
    const std::string repo = resolve ? resolve->repo.key() : api->repo.key();
    const bool download = req.method() == bhttp::verb::get && (resolve || api->kind == ApiRoute::Kind::webseed);
    const auto answered = co_await open_account(c, req, caller, passkey, repo, download);
    if (answered) co_return *answered;
  }
  if (auto* resolve = std::get_if<ResolveRoute>(&r)) {
    if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET or HEAD");
    co_return co_await handle_resolve(c, req, *resolve, caller);
  }
  auto& api = std::get<ApiRoute>(r);
  if (api.kind == ApiRoute::Kind::webseed) {
    if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET or HEAD");
    // BEP 47 padding between files: clients that fetch pieces over HTTP ask for these zeros too.
    if (api.path.starts_with(".pad/")) {
      const std::string_view digits = std::string_view(api.path).substr(5);
      std::uint64_t size = 0;
      const bool valid = !digits.empty() && digits.size() <= 9 &&
                         std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      if (valid) size = std::stoull(std::string(digits));
      if (!valid || size >= config.chunk_size) {  // padding always ends within one piece (one chunk)
        co_return co_await send_error(c, req, bhttp::status::not_found, "no such pad file", "EntryNotFound");
      }
      co_return co_await send_zeros(c, req, size);
    }
    // A named route, not a temporary: GCC 12 destroys temporaries of a co_await expression twice.
    const ResolveRoute file{api.repo, api.rev, api.path};
    co_return co_await handle_resolve(c, req, file, caller);
  }
  if (api.kind == ApiRoute::Kind::torrent || api.kind == ApiRoute::Kind::magnet) {
    if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
    co_return co_await handle_torrent(c, req, api, query);
  }
  const std::string q(query);
  hub::Reply reply;
  switch (api.kind) {
    case ApiRoute::Kind::info:
    case ApiRoute::Kind::revision: {
      if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
      std::optional<std::string> rev;
      if (api.kind == ApiRoute::Kind::revision) rev = api.rev;
      reply = co_await offload(blocking, [&] { return hub.info(api.repo, rev, q, caller); });
      break;
    }
    case ApiRoute::Kind::tree: {
      if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
      const std::string base = public_base(c, req);
      reply = co_await offload(blocking, [&] { return hub.tree(api.repo, api.rev, api.path, q, caller, base); });
      break;
    }
    case ApiRoute::Kind::paths_info: {
      if (req.method() != bhttp::verb::post) {
        co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use POST");
      }
      const std::string content_type(req[bhttp::field::content_type]);
      reply = co_await offload(blocking,
                               [&] { return hub.paths_info(api.repo, api.rev, content_type, req.body(), caller); });
      break;
    }
    case ApiRoute::Kind::refs:
      if (!read) co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
      reply = co_await offload(blocking, [&] { return hub.refs(api.repo, q, caller); });
      break;
    case ApiRoute::Kind::torrent:
    case ApiRoute::Kind::magnet:
    case ApiRoute::Kind::webseed:
      break;  // answered above
  }
  co_return co_await send_reply(c, req, reply);
}

const LimitPolicy* Server::Impl::policy_for(const UserId& who) const {
  const LimitPolicy* policy = &config.limit_anonymous;
  if (!who.anonymous()) {
    auto it = config.limit_users.find(who.str());
    policy = it != config.limit_users.end() ? &it->second : &config.limit_default;
  }
  return policy->limits_anything() ? policy : nullptr;
}

Task<void> Server::Impl::admit(Connection& c, Connection::Account& account, bool download) {
  account.policy = policy_for(account.who);
  if (account.policy) {
    const UserId who = account.who;
    const LimitPolicy& policy = *account.policy;
    account.decision = co_await limiter->admit(who, policy, download);
    if (!account.decision.allowed) limited.add();
  }
  c.account = std::move(account);
}

Task<bool> Server::Impl::send_unauthorized(Connection& c, const Request& req, const std::string& message) {
  unauthorized.add();
  if (c.credentials) failed_attempts.failed(client_network(c.client));
  c.limit_headers.emplace_back("WWW-Authenticate", "Bearer realm=\"inferllama\"");
  co_return co_await send_error(c, req, bhttp::status::unauthorized, message);
}

Task<std::optional<bool>> Server::Impl::open_account(Connection& c, const Request& req, hub::Caller& caller,
                                                     const std::string& passkey, const std::string& repo,
                                                     bool download) {
  Connection::Account account;
  std::string user;  // the node user; none: the request is the client address's
  const std::string_view bearer = bearer_of(req[bhttp::field::authorization]);
  if (!passkey.empty()) {
    // A torrent's web seed: BitTorrent clients send no credentials, so the Hub sees an anonymous caller.
    auto owner = identities->user_of_passkey(passkey);
    if (!owner) {
      co_return co_await send_unauthorized(c, req, "unknown passkey, or its user is disabled");
    }
    user = std::move(*owner);
    caller.authorization.clear();
  } else if (usage::Identities::is_node_key(bearer)) {
    auto checked = identities->authenticate(bearer);
    if (const auto* why = std::get_if<std::string>(&checked)) {
      co_return co_await send_unauthorized(c, req, *why);
    }
    auto& who = std::get<usage::Authenticated>(checked);
    user = std::move(who.user);
    // The node key never leaves the node: upstream, the user is their own Hub token, or anonymous
    // (the node's token then opens public repos only).
    caller.authorization = who.hub_token.empty() ? std::string() : "Bearer " + who.hub_token;
  } else if (req[bhttp::field::authorization].find(usage::kKeyPrefix) != std::string_view::npos) {
    // Something like a node key in another form ("Basic", no scheme, a tab): refused, never passed on.
    co_return co_await send_unauthorized(c, req, "send a node key as Authorization: Bearer il_...");
  } else if (config.require_auth) {
    co_return co_await send_unauthorized(
        c, req, "this node needs an API key: send Authorization: Bearer il_... (set HF_TOKEN to your node key)");
  } else if (!config.admin_key.empty() && same_secret(bearer, config.admin_key)) {
    caller.authorization.clear();  // the admin key opens the admin API, and is nobody's Hub token
  }
  if (user.empty()) {
    account.who = UserId::address(c.client.is_unspecified() ? std::string("unknown") : client_network(c.client));
  } else {
    account.who = UserId::user(std::move(user));
  }
  account.repo = repo;
  co_await admit(c, account, download);
  const Decision& decision = c.account->decision;
  c.limit_headers = rate_limit_headers(decision);
  if (decision.allowed) co_return std::nullopt;
  hub::Reply refusal;
  if (decision.refused_by) {
    refusal.status = 429;
    refusal.body = rate_limited_body(decision, c.account->who);  // Retry-After is among the limit headers
  } else {
    // The shared limit store could not be asked and the node is told to refuse rather than guess.
    refusal.status = 503;
    refusal.headers.emplace_back("Retry-After", "1");
    refusal.body = R"({"error":"rate limits cannot be checked right now; retry shortly"})";
  }
  refusal.headers.emplace_back("X-Error-Message", nlohmann::json::parse(refusal.body).value("error", "rate limited"));
  co_return co_await send_reply(c, req, refusal);
}

void Server::Impl::flowed(Connection& c, std::uint64_t bytes, bool from_cache) {
  if (!c.account || bytes == 0) return;
  auto& account = *c.account;
  (from_cache ? account.counts.bytes_from_cache : account.counts.bytes_from_upstream) += bytes;
  account.counts.token_bytes += bytes;
  if (account.policy && account.policy->tokens > 0) limiter->charge(account.who, *account.policy, bytes);
}

Task<bool> Server::Impl::handle_usage(Connection& c, const Request& req, std::string_view query) {
  if (!identities) co_return co_await send_error(c, req, bhttp::status::not_found, "this node keeps no usage records");
  std::optional<std::string> viewer;
  const std::string_view bearer = bearer_of(req[bhttp::field::authorization]);
  if (usage::Identities::is_node_key(bearer)) {
    auto checked = identities->authenticate(bearer);
    if (const auto* why = std::get_if<std::string>(&checked)) {
      co_return co_await send_unauthorized(c, req, *why);
    }
    viewer = std::get<usage::Authenticated>(checked).user;
  } else if (admin_allowed(c, req)) {
    viewer.reset();  // the admin sees everyone
  } else {
    co_return co_await send_unauthorized(c, req,
                                         "usage records need your node key (or the admin key) as a bearer token");
  }
  usage::Accounts accounts{*identities, *usage_log, config.token_size};
  auto answer = co_await offload(blocking, [&] { return usage::answer_usage(accounts, viewer, query); });
  const hub::Reply reply{answer.status, {{"Cache-Control", "no-store"}}, answer.content_type, std::move(answer.body)};
  co_return co_await send_reply(c, req, reply);
}

Task<bool> Server::Impl::handle_resolve(Connection& c, const Request& req, const ResolveRoute& resolve,
                                        const hub::Caller& caller) {
  if (auto hit = hub.resolve_fast(resolve.repo, resolve.rev, resolve.path)) {
    co_return co_await send_file(c, req, std::move(*hit));
  }
  const bool want_body = req.method() == bhttp::verb::get;
  auto outcome = co_await offload(
      blocking, [&] { return hub.resolve(resolve.repo, resolve.rev, resolve.path, caller, want_body); });
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return co_await send_reply(c, req, *reply);
  co_return co_await send_file(c, req, std::move(std::get<hub::FileAnswer>(outcome)));
}

Task<bool> Server::Impl::handle_torrent(Connection& c, const Request& req, const ApiRoute& api,
                                        std::string_view query) {
  if (!torrents) co_return co_await send_error(c, req, bhttp::status::not_found, "this node offers no torrents");
  torrent::SnapshotTorrents::Request request{api.repo, api.rev, api.path};
  for (const auto& [name, value] : url::parse_query(query)) {
    if (name == "format") {
      if (value == "hybrid") {
        request.format = torrent::Format::hybrid;
      } else if (value != "v1") {
        co_return co_await send_error(c, req, bhttp::status::bad_request, "format is v1 (default) or hybrid");
      }
    } else if (name == "wait") {
      request.wait = !(value == "false" || value == "0" || value == "no");
    }
  }
  pause_deadline(c);  // completing a snapshot waits on the upstream, not on the client
  torrent::NodeLinks links{public_base(c, req), "", ""};
  if ((config.tracker_private || config.require_auth) && c.account && !c.account->who.anonymous()) {
    if (auto user = identities->user(c.account->who.str())) links.passkey = user->passkey;
  }
  if (udp_announce_port && links.passkey.empty()) {
    // The HTTP port is not the tracker's: the same host, the tracker's port.
    links.udp_announce =
        "udp://" + std::string(url::host_of(links.base)) + ":" + std::to_string(udp_announce_port) + "/announce";
  }
  // Completing the snapshot, and bencoding and hashing a torrent of maybe thousands of files, stay off
  // the I/O thread.
  const bool magnet = api.kind == ApiRoute::Kind::magnet;
  std::string document, etag;
  auto outcome = co_await offload(blocking, [&] {
    auto got = torrents->get(request);
    if (const auto* built = std::get_if<torrent::SnapshotTorrent>(&got)) {
      if (magnet) {
        document = torrents->magnet(*built, links);
      } else {
        document = torrents->metainfo(*built, links);
        etag = "\"" + cache::sha256(document).hex() + "\"";
      }
    }
    return got;
  });
  touch(c);
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return co_await send_reply(c, req, *reply);
  const auto& built = std::get<torrent::SnapshotTorrent>(outcome);
  StringResponse res{bhttp::status::ok, req.version()};
  res.keep_alive(req.keep_alive());
  res.set("X-InferLlama-Info-Hash", built.torrent->info_hash_v1.hex());
  if (built.torrent->info_hash_v2) res.set("X-InferLlama-Info-Hash-V2", built.torrent->info_hash_v2->hex());
  res.set("X-Repo-Commit", built.commit);
  if (!links.passkey.empty()) res.set(bhttp::field::cache_control, "private, no-store");  // it names the passkey
  if (magnet) {
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(document);
    co_return co_await send(c, std::move(res));
  }
  std::string metainfo = std::move(document);
  res.set(bhttp::field::etag, etag);
  res.set(bhttp::field::content_type, "application/x-bittorrent");
  res.set(bhttp::field::content_disposition, "attachment; filename=\"" + built.torrent->name + ".torrent\"");
  auto if_none_match = req[bhttp::field::if_none_match];
  if (!if_none_match.empty() && if_none_match.find(etag) != std::string_view::npos) {
    res.result(bhttp::status::not_modified);
  } else {
    res.body() = std::move(metainfo);
  }
  if (req.method() == bhttp::verb::head) {
    res.content_length(res.body().size());
    res.body().clear();
    bhttp::response<bhttp::empty_body> head{res.result(), res.version()};
    add_node_headers(c, res);
    for (const auto& field : res) head.set(field.name_string(), field.value());
    head.keep_alive(res.keep_alive());
    c.status = head.result_int();
    co_return co_await write_head(c, head) && req.keep_alive();
  }
  co_return co_await send(c, std::move(res));
}

Task<bool> Server::Impl::send_zeros(Connection& c, const Request& req, std::uint64_t size) {
  static const std::vector<char> zeros(64 * 1024, 0);
  bhttp::response<bhttp::empty_body> res{bhttp::status::ok, req.version()};
  add_node_headers(c, res);
  res.set(bhttp::field::content_type, "application/octet-stream");
  res.set(bhttp::field::accept_ranges, "bytes");
  const bool keep = req.keep_alive() && !draining;
  res.keep_alive(keep);
  std::uint64_t length = size;
  ByteRange range = parse_range(req[bhttp::field::range], size);
  if (range.kind == ByteRange::Kind::unsatisfiable) {
    res.result(bhttp::status::range_not_satisfiable);
    res.set(bhttp::field::content_range, "bytes */" + std::to_string(size));
    length = 0;
  } else if (range.kind == ByteRange::Kind::partial) {
    res.result(bhttp::status::partial_content);
    res.set(bhttp::field::content_range,
            "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" + std::to_string(size));
    length = range.length();
  }
  res.content_length(length);
  c.status = res.result_int();
  if (req.method() == bhttp::verb::head) length = 0;
  c.bytes = length;
  if (!co_await write_head(c, res)) co_return false;
  while (length > 0) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(length, zeros.size()));
    boost::system::error_code ec;
    if (c.tls) {
      co_await asio::async_write(*c.tls, asio::buffer(zeros.data(), n), asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(c.socket, asio::buffer(zeros.data(), n),
                                 asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) co_return false;
    touch(c);
    flowed(c, n, true);
    length -= n;
  }
  co_return keep;
}

// Tracker answers are small and frequent: the tracker fills the connection's reused buffer and a fixed
// head goes out in front of it, without Beast's header map and serializer.
Task<bool> Server::Impl::handle_tracker(Connection& c, const Request& req, const TrackerRoute& route,
                                        std::string_view query) {
  if (!tracker) co_return co_await send_error(c, req, bhttp::status::not_found, "this node runs no tracker");
  if (req.method() != bhttp::verb::get)
    co_return co_await send_error(c, req, bhttp::status::method_not_allowed, "use GET");
  boost::system::error_code ec;
  const auto local = c.socket.local_endpoint(ec);
  if (ec) co_return false;
  // A private tracker answers only announces and scrapes that carry a user's passkey, and counts them
  // against the user.
  std::string refusal;
  if (config.tracker_private || !route.passkey.empty()) {
    std::optional<std::string> user;
    if (route.passkey.empty()) {
      refusal = "this tracker is private: announce with your passkey (/announce/PASSKEY, /scrape/PASSKEY)";
    } else if (!identities || !(user = identities->user_of_passkey(route.passkey))) {
      refusal = "unknown passkey, or its user is disabled";
      failed_attempts.failed(client_network(c.client));
    } else {
      Connection::Account account;
      account.who = UserId::user(std::move(*user));
      co_await admit(c, account, false);
      if (!c.account->decision.allowed) {
        refusal = "rate limit exceeded: retry in " + std::to_string(retry_after_seconds(c.account->decision)) + " s";
      }
    }
  }
  if (!refusal.empty()) {
    // Trackers refuse in bencoding, with a 200: that is what every client shows its user.
    c.tracker_reply = "d14:failure reason" + std::to_string(refusal.size()) + ":" + refusal + "e";
  } else if (route.kind == TrackerRoute::Kind::announce) {
    // The peer's address is the client's, also behind a trusted proxy; its port is the announce's own.
    tracker->http_announce(query, tracker_endpoint(tcp::endpoint(c.client, c.peer.port())), tracker_endpoint(local),
                           c.tracker_reply);
  } else {
    tracker->http_scrape(query, c.tracker_reply);
  }
  const bool keep = req.keep_alive() && !draining;
  const bool http10 = req.version() == 10;
  char head[512];
  const int head_size = std::snprintf(
      head, sizeof head,
      "HTTP/1.%d 200 OK\r\nServer: inferllama\r\n%sContent-Type: text/plain\r\nX-Content-Type-Options: nosniff\r\n"
      "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
      "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\nContent-Length: %zu\r\n%s\r\n",
      http10 ? 0 : 1, c.tls ? "Strict-Transport-Security: max-age=31536000\r\n" : "", c.tracker_reply.size(),
      keep ? (http10 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n");
  c.status = 200;
  c.bytes = c.tracker_reply.size();
  c.responded = true;
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(head, static_cast<std::size_t>(head_size)),
                                                  asio::buffer(c.tracker_reply)};
  if (c.tls) {
    co_await asio::async_write(*c.tls, buffers, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await asio::async_write(c.socket, buffers, asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return keep && !ec;
}

Task<bool> Server::Impl::send_file(Connection& c, const Request& req, hub::FileAnswer answer) {
  // The size is the stored blob's (or the download's, checked against the file's hash when it completes),
  // never a description that may disagree with the bytes.
  if (answer.blob) {
    answer.file.size = answer.blob->size;
  } else if (answer.download) {
    answer.file.size = answer.download->size();
  }
  const auto& file = answer.file;
  const std::string quoted_etag = "\"" + file.etag + "\"";
  bhttp::response<bhttp::empty_body> res{bhttp::status::ok, req.version()};
  add_node_headers(c, res);
  res.set("X-Repo-Commit", answer.commit);
  res.set(torrent::kNodeHeader, torrent::kNodeVersion);  // a child node learns that its upstream is a node
  if (!answer.stale.empty()) res.set(hub::kStaleHeader, answer.stale);
  res.set(bhttp::field::etag, quoted_etag);
  if (file.lfs) {
    res.set("X-Linked-Etag", quoted_etag);
    res.set("X-Linked-Size", std::to_string(file.size));
  }
  res.set(bhttp::field::accept_ranges, "bytes");
  res.set(bhttp::field::content_type, "application/octet-stream");
  const bool keep = req.keep_alive() && !draining;
  res.keep_alive(keep);

  auto if_none_match = req[bhttp::field::if_none_match];
  if (!if_none_match.empty() && (if_none_match == "*" || if_none_match.find(quoted_etag) != std::string_view::npos)) {
    res.result(bhttp::status::not_modified);
    c.status = res.result_int();
    c.bytes = 0;
    const bool written = co_await write_head(c, res);
    co_return keep && written;
  }

  ByteRange range = parse_range(req[bhttp::field::range], file.size);
  std::uint64_t first = 0, length = file.size;
  if (file.size == 0 && !req[bhttp::field::range].empty()) {
    // No range of an empty file is satisfiable, but @huggingface/hub probes every file with
    // "bytes=0-0" and treats a 416 as fatal: answer the whole (empty) file, with its size.
    res.set(bhttp::field::content_range, "bytes */0");
  } else if (range.kind == ByteRange::Kind::unsatisfiable) {
    res.result(bhttp::status::range_not_satisfiable);
    res.set(bhttp::field::content_range, "bytes */" + std::to_string(file.size));
    length = 0;
  } else if (range.kind == ByteRange::Kind::partial) {
    res.result(bhttp::status::partial_content);
    res.set(bhttp::field::content_range, "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) +
                                             "/" + std::to_string(file.size));
    first = range.first;
    length = range.length();
  }
  res.content_length(length);
  c.status = res.result_int();
  c.bytes = req.method() == bhttp::verb::head ? 0 : length;
  const bool cork = !c.tls && answer.blob && length > 0 && req.method() != bhttp::verb::head;
  if (cork) set_cork(c.socket, true);
  if (!co_await write_head(c, res)) co_return false;
  if (req.method() == bhttp::verb::head || length == 0) {
    // Nothing to send, but a download a GET started must still finish before an empty file is listed.
    if (!answer.download || file.size > 0 || req.method() == bhttp::verb::head) co_return keep;
  }
  bool ok;
  if (answer.blob) {
    ok = co_await stream_stored(c, *answer.blob, first, first + length);
    if (cork) set_cork(c.socket, false);
  } else if (answer.download) {
    ok = co_await stream_download(c, *answer.download, first, first + length);
  } else {
    ok = false;
  }
  if (ok) (answer.blob ? counters.bytes_from_cache : counters.bytes_from_downloads).add(length);
  // The body is with the kernel: the download's slot is free for the client's next one right away.
  if (c.account) c.account->decision.slot.reset();
  co_return ok&& keep;
}

Task<bool> Server::Impl::write_head(Connection& c, bhttp::response<bhttp::empty_body>& res) {
  c.responded = true;
  clean_fields(res);
  boost::system::error_code ec;
  bhttp::response_serializer<bhttp::empty_body> sr{res};
  if (c.tls) {
    co_await bhttp::async_write_header(*c.tls, sr, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await bhttp::async_write_header(c.socket, sr, asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return !ec;
}

Task<bool> Server::Impl::sendfile_all(Connection& c, int fd, std::uint64_t offset, std::uint64_t length,
                                      bool from_cache) {
  if (c.tls) {
    // TLS encrypts in user space: read the file and write it through the stream.
    std::vector<char> buffer(std::min<std::uint64_t>(length, 256 * 1024));
    while (length > 0) {
      const ssize_t n =
          ::pread(fd, buffer.data(), std::min<std::uint64_t>(length, buffer.size()), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) co_return false;
      boost::system::error_code ec;
      co_await asio::async_write(*c.tls, asio::buffer(buffer.data(), static_cast<std::size_t>(n)),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return false;
      touch(c);
      flowed(c, static_cast<std::uint64_t>(n), from_cache);
      offset += static_cast<std::uint64_t>(n);
      length -= static_cast<std::uint64_t>(n);
    }
    co_return true;
  }
  if (!c.socket.native_non_blocking()) c.socket.native_non_blocking(true);
  off_t off = static_cast<off_t>(offset);
  while (length > 0) {
    ssize_t n = ::sendfile(c.socket.native_handle(), fd, &off, std::min<std::uint64_t>(length, 1u << 30));
    if (n > 0) {
      length -= static_cast<std::uint64_t>(n);
      flowed(c, static_cast<std::uint64_t>(n), from_cache);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      boost::system::error_code ec;
      co_await c.socket.async_wait(tcp::socket::wait_write, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return false;
      touch(c);
      continue;
    }
    // The client went away, or the file is shorter than the index says.
    spdlog::debug("sendfile stopped at offset {} with {} bytes left: {}", off, length,
                  n == 0 ? std::string("end of file") : std::generic_category().message(errno));
    co_return false;
  }
  co_return true;
}

Task<bool> Server::Impl::stream_stored(Connection& c, const BlobEntry& blob, std::uint64_t first, std::uint64_t end) {
  const std::uint64_t cs = blob.chunk_size;
  for (std::uint64_t pos = first; pos < end;) {
    // Every step sends at least one byte of a chunk the record lists, or ends the response.
    const std::size_t index = cs == 0 ? blob.chunks.size() : static_cast<std::size_t>(pos / cs);
    const std::uint64_t within = pos - index * cs;
    if (index >= blob.chunks.size() || within >= blob.chunks[index].size) {
      spdlog::error("byte {} of {} lies past its {} recorded chunks", pos, blob.etag, blob.chunks.size());
      co_return false;
    }
    const std::uint64_t n = std::min<std::uint64_t>(end - pos, blob.chunks[index].size - within);
    int fd = store.open_chunk(blob.chunks[index].id);
    if (fd < 0) {
      spdlog::error("chunk {} of {} is missing from the store", blob.chunks[index].id.hex(), blob.etag);
      const std::string etag = blob.etag;
      asio::post(blocking, [this, etag] { hub.evictor().forget({etag}); });
      co_return false;
    }
    bool ok = co_await sendfile_all(c, fd, within, n, true);
    ::close(fd);
    if (!ok) co_return false;
    pos += n;
  }
  co_return true;
}

Task<bool> Server::Impl::stream_download(Connection& c, cache::Download& download, std::uint64_t first,
                                         std::uint64_t end) {
  auto listener = std::make_shared<ProgressTimer>(c.socket.get_executor());
  download.subscribe(listener);
  if (first > 0) download.prioritize(first);
  std::uint64_t pos = first;
  for (;;) {
    listener->arm();
    if (pos >= end) {
      // Every byte asked for is out; an empty body still waits for the file to be verified.
      if (end > 0 || download.verified() || download.state() != cache::Download::State::running) break;
    } else if (std::uint64_t n = download.readable(pos); n > 0) {
      auto [fd, within] = download.locate(pos);
      n = std::min(n, end - pos);
      if (!co_await sendfile_all(c, fd, within, n, false)) co_return false;
      pos += n;
      continue;
    }
    if (download.state() == cache::Download::State::failed && !download.verified()) {
      spdlog::warn("closing a response of {} at byte {}: {}", download.etag(), pos, download.error());
      co_return false;  // the client sees a short body, never a complete-looking one
    }
    if (pos < end && (pos >= download.size() || download.state() == cache::Download::State::complete)) {
      // Nothing more will come for this position: never wait (or spin) on a range the file does not have.
      spdlog::error("closing a response of {} at byte {}: the file has {} bytes", download.etag(), pos,
                    download.size());
      co_return false;
    }
    pause_deadline(c);
    co_await listener->wait();
    touch(c);
  }
  co_return download.verified() || download.state() != cache::Download::State::failed;
}

}  // namespace inferllama::http
