#include "http/session.hpp"

#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <type_traits>

#include "hosting/hosting.hpp"
#include "http/credentials.hpp"
#include "http/file_response.hpp"
#include "http/handlers.hpp"
#include "http/progress_timer.hpp"
#include "http/server_context.hpp"
#include "inferllama/cluster.hpp"
#include "inferllama/version.hpp"
#include "usage/identities.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr std::size_t kBodyLimit = 1024 * 1024;
constexpr std::size_t kLargeRead = 64 * 1024;
// A commit to a hosted repo carries its small files inline (base64): from a caller with a node key only.
constexpr std::size_t kCommitBodyLimit = std::size_t{512} * 1024 * 1024;

// Request smuggling: only "chunked" alone frames a request body the node can read. A Transfer-Encoding
// whose last coding is not chunked leaves the body's end to guesswork (RFC 9112 6.3: 400), and codings
// before chunked would need decoding the node does not do (501).
std::optional<hub::Reply> transfer_coding_problem(const Request& req) {
  std::vector<std::string_view> codings;
  bool present = false;
  for (auto [it, end] = req.equal_range(bhttp::field::transfer_encoding); it != end; ++it) {
    present = true;
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
  if (!present) return std::nullopt;
  const auto chunked =
      std::count_if(codings.begin(), codings.end(), [](std::string_view c) { return beast::iequals(c, "chunked"); });
  if (codings.empty() || !beast::iequals(codings.back(), "chunked") || chunked != 1) {
    return hub::error_reply(400, "Transfer-Encoding must end with chunked, used once");
  }
  if (codings.size() > 1) return hub::error_reply(501, "only the chunked transfer coding is supported");
  return std::nullopt;
}

// TCP_CORK while a stored file goes out: the header and the sendfile pages leave in full segments
// (like nginx's tcp_nopush); uncorking flushes the tail. About 1.5x for one fast client on loopback.
void set_cork(tcp::socket& socket, bool on) {
  int value = on ? 1 : 0;
  ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

// Writes answers on one connection's stream. Every response head passes the one sanitiser
// (clean_fields for messages, HeadWriter for file and tracker heads).
template <class Stream>
class Responder {
 public:
  static constexpr bool kPlain = std::is_same_v<Stream, tcp::socket>;

  Responder(ServerContext& server, Stream& stream, Connection& c) : server_(server), stream_(stream), c_(c) {}

  // Writes the answer; whether the connection stays open. Not a coroutine: only the writer's frame is made.
  Task<bool> write(const Request& req, Answer& answer) {
    if (auto* reply = std::get_if<hub::Reply>(&answer)) return write_reply(req, *reply);
    if (auto* file = std::get_if<FileBody>(&answer)) return write_file(req, *file);
    if (auto* pad = std::get_if<PadBody>(&answer)) return write_pad(req, pad->size);
    return write_tracker(req);
  }

  // A message in the Hub's terms. HEAD gets the GET answer's head, Content-Length included, and no body.
  Task<bool> write_reply(const Request& req, const hub::Reply& reply) {
    // A request that could not be parsed has no version: answer in HTTP/1.1 and close.
    const bool keep = req.version() && req.keep_alive() && !server_.draining;
    StringResponse res = reply_response(reply, req.version() ? req.version() : 11, keep);
    // The console's pages bring their own policy (scripts and styles from the node itself); every other
    // answer gets the fixed one, whatever a handler or an upstream put in it.
    const bool console_page = c_.route == RouteId::console && res.find("Content-Security-Policy") != res.end();
    for (const auto& [name, value] : kSecurityHeaders) {
      if (!(console_page && beast::iequals(name, "Content-Security-Policy"))) res.set(name, value);
    }
    // Every answer but the tracker's says it comes from a node: a child tells its parents from the Hub by
    // it, a mirror a node from another server.
    res.set(cluster::kNodeHeader, kVersion);
    if (c_.tls()) res.set(kTlsHeader.first, kTlsHeader.second);
    for (const auto& [name, value] : c_.limit_headers) res.set(name, value);
    res.prepare_payload();
    clean_fields(res);
    c_.responded = true;
    c_.status = res.result_int();
    c_.bytes = 0;
    const bool head_only = req.method() == bhttp::verb::head;
    boost::system::error_code ec;
    if (head_only) {
      bhttp::response_serializer<bhttp::string_body> serializer{res};
      co_await bhttp::async_write_header(stream_, serializer, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await bhttp::async_write(stream_, res, asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) c_.bytes = res.body().size();
    }
    co_return keep && !ec;
  }

  // A fault of the node's own while answering: logged and counted, and a 500 when nothing of the
  // response went out yet (else the connection is closed: never a complete-looking body).
  Task<bool> internal_error(const Request& req, const std::string& what) {
    server_.stats.internal_errors.add();
    spdlog::error("{} {}: {}", std::string(req.method_string()), redact_target(req.target()), what);
    c_.account.reset();  // nothing is charged for a failed answer's unsent bytes; the slot is freed
    if (c_.responded) co_return false;
    const hub::Reply reply = hub::error_reply(500, "the node failed to answer this request; see its log");
    co_return co_await write_reply(req, reply);
  }

 private:
  Task<bool> write_file(const Request& req, FileBody& body) {
    hub::FileAnswer& answer = body.file;
    // The size is the stored blob's (or the download's, checked against the file's hash when it
    // completes), never a description that may disagree with the bytes.
    if (answer.blob) {
      answer.file.size = answer.blob->size;
    } else if (answer.download) {
      answer.file.size = answer.download->size();
    }
    const bool keep = req.keep_alive() && !server_.draining;
    const FilePlan plan = write_file_head(c_, req, answer, body.range, keep);
    // A pass repo's bytes: the upstream read starts once the range is known, before anything is answered.
    std::shared_ptr<hub::PassStream> pass;
    if (answer.pass && plan.send_body) {
      pass = server_.deps.hub.passes().start(*answer.pass, plan.first, plan.first + plan.length);
      if (!pass) {
        hub::Reply busy =
            hub::error_reply(503, "the node streams as many files of pass repos as it may; retry shortly");
        busy.headers.emplace_back("Retry-After", "1");
        co_return co_await write_reply(req, busy);
      }
    }
    c_.status = plan.status;
    c_.bytes = 0;  // counted as the body goes out (flowed)
    bool cork = false;
    if constexpr (kPlain) {
      cork = answer.blob && plan.send_body;
      if (cork) set_cork(stream_, true);
    }
    if (std::size_t sent = 0; !head_sent_now(sent)) {
      if (!co_await write_head_rest(sent)) co_return false;
    }
    if (!plan.send_body) {
      // Nothing to send, but a download a GET started must still finish before an empty file is listed.
      const bool wait_for_verification =
          plan.status == 200 && answer.download && answer.file.size == 0 && req.method() == bhttp::verb::get;
      if (!wait_for_verification) co_return keep;
    }
    const std::uint64_t end = plan.first + (plan.send_body ? plan.length : 0);
    bool ok = false;
    if (answer.blob) {
      ok = co_await stream_stored(*answer.blob, plan.first, end);
      if constexpr (kPlain) {
        if (cork) set_cork(stream_, false);
      }
    } else if (answer.download) {
      ok = co_await stream_download(*answer.download, plan.first, end);
    } else if (pass) {
      ok = co_await stream_pass(pass, end - plan.first);
    }
    if (ok) (answer.blob ? server_.stats.bytes_from_cache : server_.stats.bytes_from_downloads).add(end - plan.first);
    // The body is with the kernel: the download's slot is free for the client's next one right away.
    if (c_.account) c_.account->decision.slot.reset();
    co_return ok&& keep;
  }

  Task<bool> write_pad(const Request& req, std::uint64_t size) {
    static const std::vector<char> zeros(64 * 1024, 0);
    const bool keep = req.keep_alive() && !server_.draining;
    const FilePlan plan = write_pad_head(c_, req, size, keep);
    c_.status = plan.status;
    c_.bytes = 0;  // counted as the zeros go out (flowed)
    if (std::size_t sent = 0; !head_sent_now(sent)) {
      if (!co_await write_head_rest(sent)) co_return false;
    }
    for (std::uint64_t left = plan.send_body ? plan.length : 0; left > 0;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, zeros.size()));
      boost::system::error_code ec;
      co_await asio::async_write(stream_, asio::buffer(zeros.data(), n), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return false;
      c_.touch();
      server_.flowed(c_, n, true);
      left -= n;
    }
    co_return keep;
  }

  Task<bool> write_tracker(const Request& req) {
    const bool keep = req.keep_alive() && !server_.draining;
    HeadWriter head(c_.head, 200, req.version());
    for (const auto& [name, value] : kSecurityHeaders) head.field(name, value);
    if (c_.tls()) head.field(kTlsHeader.first, kTlsHeader.second);
    head.field("Content-Type", "text/plain");
    head.field("Content-Length", c_.tracker_reply.size());
    head.finish(req.version(), keep);
    c_.status = 200;
    c_.bytes = 0;
    c_.responded = true;
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(c_.head), asio::buffer(c_.tracker_reply)};
    const std::size_t sent = send_now(buffers);
    bool ok = sent == asio::buffer_size(buffers);
    if (!ok) ok = co_await write_rest(buffers, sent);
    if (ok) c_.bytes = c_.tracker_reply.size();
    co_return keep&& ok;
  }

  // The head in c.head: whether it all went out. A plain socket nearly always takes it at once, with no
  // coroutine frame made and no trip through the event loop.
  bool head_sent_now(std::size_t& sent) {
    c_.responded = true;
    sent = send_now(head_buffer());
    return sent == c_.head.size();
  }
  Task<bool> write_head_rest(std::size_t sent) { return write_rest(head_buffer(), sent); }
  std::array<asio::const_buffer, 1> head_buffer() const { return {asio::buffer(c_.head)}; }

  // Whatever of the buffers a plain socket takes without waiting; 0 for TLS, and on an error (which the
  // awaited write after it reports).
  template <std::size_t N>
  std::size_t send_now(const std::array<asio::const_buffer, N>& buffers) {
    if constexpr (!kPlain) {
      return 0;
    } else {
      std::array<iovec, N> iov{};
      for (std::size_t i = 0; i < N; ++i) iov[i] = {const_cast<void*>(buffers[i].data()), buffers[i].size()};
      msghdr message{};
      message.msg_iov = iov.data();
      message.msg_iovlen = N;
      for (;;) {
        const ssize_t n = ::sendmsg(stream_.native_handle(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno != EINTR) return 0;
      }
    }
  }

  // The buffers after their first `sent` bytes, by an awaited write; whether they all went out.
  template <std::size_t N>
  Task<bool> write_rest(std::array<asio::const_buffer, N> buffers, std::size_t sent) {
    beast::buffers_suffix<std::array<asio::const_buffer, N>> rest(buffers);
    rest.consume(sent);
    boost::system::error_code ec;
    co_await asio::async_write(stream_, rest, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec;
  }

  // Every write that goes out is counted by flowed(), so a client that drops the connection mid-chunk
  // has still been charged for what it received.
  // `socket_full`: the caller's sendfile_now just found the socket's buffer full, so this waits first.
  Task<bool> send_range(int fd, std::uint64_t offset, std::uint64_t length, bool from_cache, bool socket_full = false) {
    if constexpr (!kPlain) {
      // TLS encrypts in user space: read the file and write it through the stream.
      std::vector<char> buffer(std::min<std::uint64_t>(length, 256 * 1024));
      while (length > 0) {
        const ssize_t n =
            ::pread(fd, buffer.data(), std::min<std::uint64_t>(length, buffer.size()), static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) co_return false;
        boost::system::error_code ec;
        co_await asio::async_write(stream_, asio::buffer(buffer.data(), static_cast<std::size_t>(n)),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return false;
        c_.touch();
        server_.flowed(c_, static_cast<std::uint64_t>(n), from_cache);
        offset += static_cast<std::uint64_t>(n);
        length -= static_cast<std::uint64_t>(n);
      }
      co_return true;
    } else {
      for (bool wait = socket_full;; wait = true) {
        if (wait) {
          boost::system::error_code ec;
          co_await stream_.async_wait(tcp::socket::wait_write, asio::redirect_error(asio::use_awaitable, ec));
          if (ec) co_return false;
          c_.touch();
        }
        switch (sendfile_now(fd, offset, length, from_cache)) {
          case Sent::all:
            co_return true;
          case Sent::failed:
            co_return false;
          case Sent::socket_full:
            break;
        }
      }
    }
  }

  enum class Sent { all, socket_full, failed };
  // Plain TCP: sendfile until the range is out or the socket's buffer is full; `offset` and `length` say
  // what is left. A small range goes out here whole, with no coroutine frame made for it.
  Sent sendfile_now(int fd, std::uint64_t& offset, std::uint64_t& length, bool from_cache) {
    if (!stream_.native_non_blocking()) stream_.native_non_blocking(true);
    while (length > 0) {
      off_t off = static_cast<off_t>(offset);
      const ssize_t n = ::sendfile(stream_.native_handle(), fd, &off, std::min<std::uint64_t>(length, 1u << 30));
      if (n > 0) {
        offset += static_cast<std::uint64_t>(n);
        length -= static_cast<std::uint64_t>(n);
        server_.flowed(c_, static_cast<std::uint64_t>(n), from_cache);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Sent::socket_full;
      // The client went away, or the file is shorter than the index says.
      spdlog::debug("sendfile stopped at offset {} with {} bytes left: {}", offset, length,
                    n == 0 ? std::string("end of file") : std::generic_category().message(errno));
      return Sent::failed;
    }
    return Sent::all;
  }

  Task<bool> stream_stored(const BlobEntry& blob, std::uint64_t first, std::uint64_t end) {
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
      const int fd = server_.deps.store.open_chunk(blob.chunks[index].id);
      if (fd < 0) {
        spdlog::error("chunk {} of {} is missing from the store", blob.chunks[index].id.hex(), blob.etag);
        auto& hub = server_.deps.hub;
        server_.deps.blocking.post([&hub, etag = blob.etag] { hub.evictor().forget({etag}); });
        co_return false;
      }
      std::uint64_t offset = within, left = n;
      bool ok = false;
      if constexpr (kPlain) {
        const Sent sent = sendfile_now(fd, offset, left, true);
        ok = sent == Sent::all;
        if (sent == Sent::socket_full) ok = co_await send_range(fd, offset, left, true, /*socket_full=*/true);
      } else {
        ok = co_await send_range(fd, offset, left, true);
      }
      ::close(fd);
      if (!ok) co_return false;
      pos += n;
    }
    co_return true;
  }

  Task<bool> stream_download(cache::Download& download, std::uint64_t first, std::uint64_t end) {
    auto listener = std::make_shared<ProgressTimer>(stream_.get_executor());
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
        if (!co_await send_range(fd, within, n, false)) co_return false;
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
      c_.pause_deadline();
      co_await listener->wait();
      c_.touch();
    }
    co_return download.verified() || download.state() != cache::Download::State::failed;
  }

  // `length` bytes of a pass repo's file as the upstream sends them; the read ends with the response.
  Task<bool> stream_pass(const std::shared_ptr<hub::PassStream>& pass, std::uint64_t length) {
    struct Cancel {
      hub::PassStream& stream;
      ~Cancel() { stream.cancel(); }  // a client gone stops the upstream transfer
    } cancel{*pass};
    auto listener = std::make_shared<ProgressTimer>(stream_.get_executor());
    pass->subscribe(listener);
    for (std::uint64_t sent = 0; sent < length;) {
      listener->arm();
      if (const auto bytes = pass->readable(); !bytes.empty()) {
        boost::system::error_code ec;
        co_await asio::async_write(stream_, asio::buffer(bytes.data(), bytes.size()),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return false;
        c_.touch();
        pass->consume(bytes.size());
        server_.flowed(c_, bytes.size(), false);
        sent += bytes.size();
        continue;
      }
      if (pass->state() == hub::PassStream::State::failed) {
        spdlog::warn("closing a passed-through response at byte {} of {}: {}", sent, length, pass->error());
        co_return false;  // the client sees a short body, never a complete-looking one
      }
      c_.pause_deadline();
      co_await listener->wait();
      c_.touch();
    }
    co_return true;
  }

  ServerContext& server_;
  Stream& stream_;
  Connection& c_;
};

// An upload's body, read as the handler asks for it. A body of known length is read from the socket straight
// into the handler's buffer, after the bytes that came with the head; a chunked one through Beast's
// buffer_body parser, with room for large reads.
template <class Stream>
class StreamedBody : public BodyStream {
 public:
  StreamedBody(Stream& stream, beast::flat_buffer& buffer, bhttp::request_parser<bhttp::buffer_body>& parser,
               Connection& c)
      : stream_(stream), buffer_(buffer), parser_(parser), c_(c) {
    if (auto length = parser.content_length()) left_ = *length;
  }

  bool done() const { return left_ ? *left_ == 0 : parser_.is_done(); }
  // Bytes of the body still to come, when its length is known.
  std::optional<std::uint64_t> left() const { return left_; }
  // The client waits for 100 Continue before its body, which it will now never send: nothing to drain.
  bool awaiting_continue() const {
    return !continued_ && beast::iequals(parser_.get()[bhttp::field::expect], "100-continue");
  }

  Task<std::size_t> read(std::span<std::uint8_t> into) override {
    if (done() || into.empty()) co_return 0;
    co_await continue_once();
    if (left_) co_return co_await read_known(into);
    auto& body = parser_.get().body();
    body.data = into.data();
    body.size = into.size();
    buffer_.reserve(kStreamedRead);
    boost::system::error_code ec;
    co_await bhttp::async_read_some(stream_, buffer_, parser_, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) throw boost::system::system_error(ec, "reading the request body");
    c_.touch();
    if (parser_.is_done()) buffer_.shrink_to_fit();  // an idle connection keeps no large buffer
    co_return into.size() - body.size;
  }

 private:
  static constexpr std::size_t kStreamedRead = 256 * 1024;

  Task<std::size_t> read_known(std::span<std::uint8_t> into) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(into.size(), *left_));
    std::size_t got = 0;
    if (buffer_.size() > 0) {
      got = std::min(want, buffer_.size());
      std::memcpy(into.data(), buffer_.data().data(), got);
      buffer_.consume(got);
    } else {
      boost::system::error_code ec;
      got = co_await stream_.async_read_some(asio::buffer(into.data(), want),
                                             asio::redirect_error(asio::use_awaitable, ec));
      if (ec) throw boost::system::system_error(ec, "reading the request body");
    }
    *left_ -= got;
    c_.touch();
    co_return got;
  }

  // A client that sent `Expect: 100-continue` waits for this before its body (curl -T does, for a second).
  Task<void> continue_once() {
    if (continued_) co_return;
    continued_ = true;
    if (!beast::iequals(parser_.get()[bhttp::field::expect], "100-continue")) co_return;
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    boost::system::error_code ec;
    co_await asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) throw boost::system::system_error(ec, "writing 100 Continue");
  }

  Stream& stream_;
  beast::flat_buffer& buffer_;
  bhttp::request_parser<bhttp::buffer_body>& parser_;
  Connection& c_;
  std::optional<std::uint64_t> left_;  // of a body of known length
  bool continued_ = false;
};

// One request, from admission to the last byte of its answer; whether the connection stays open.
template <class Stream>
Task<bool> answer_request(ServerContext& server, Responder<Stream>& responder, Connection& c, const Request& req,
                          BodyStream* body = nullptr) {
  const Origin origin{c.listener, c.client, c.network};
  Admission admission = co_await server.gate.admit(req, origin);
  c.route = admission.route;
  c.credentials = admission.credentials;
  c.account = std::move(admission.account);
  if (c.account && !c.account->who.anonymous()) c.user = c.account->who.str();
  c.limit_headers = std::move(admission.limit_headers);
  if (auto* refusal = std::get_if<Refusal>(&admission.verdict))
    co_return co_await responder.write_reply(req, refusal->reply);
  auto& admitted = std::get<Admitted>(admission.verdict);
  Exchange exchange{server, c, req, url::split_target(req.target()).second, std::move(admitted.caller), body};
  Answer answer = co_await dispatch(exchange, admitted.route);
  co_return co_await responder.write(req, answer);
}

// Reads and drops up to kDrainLimit of a body the answer did not want; whether it reached the end.
template <class Stream>
Task<bool> drain(StreamedBody<Stream>& body) {
  static constexpr std::uint64_t kDrainLimit = 64 * 1024 * 1024;
  // Past the limit the connection closes at once: reading part of what is left would change nothing.
  if (body.awaiting_continue() || body.left().value_or(0) > kDrainLimit) co_return false;
  std::vector<std::uint8_t> scratch(256 * 1024);
  std::uint64_t dropped = 0;
  try {
    while (!body.done() && dropped < kDrainLimit) {
      const std::size_t n = co_await body.read(scratch);
      if (n == 0) break;
      dropped += n;
    }
  } catch (const std::exception&) {
    co_return false;
  }
  co_return body.done();
}

// A commit to a hosted repo, or a repo created with its files, from a caller whose node key holds: only these
// may send more than kBodyLimit, so nobody unknown makes the node buffer large bodies.
bool large_body_allowed(const ServerContext& server, const Route& route, const bhttp::request_header<>& head) {
  const auto* passed = std::get_if<UpstreamRoute>(&route);
  if (!passed || !server.deps.hosting || !server.deps.identities) return false;
  const bool commit = passed->repo && passed->action == "commit" && server.deps.hosting->owns(*passed->repo);
  const bool create = !passed->repo && url::split_target(head.target()).first == "/api/repos/create";
  if (!commit && !create) return false;
  const std::string_view bearer = bearer_of(head[bhttp::field::authorization]);
  return usage::Identities::is_node_key(bearer) &&
         std::holds_alternative<usage::Authenticated>(server.deps.identities->authenticate(bearer));
}

template <class Stream>
Task<void> run(ServerContext& server, std::shared_ptr<Session<Stream>> session) {
  Connection& c = session->connection;
  Stream& stream = session->stream;
  Responder<Stream> responder(server, stream, c);
  ++server.stats.open_connections;
  beast::flat_buffer buffer;
  try {
    if constexpr (!Responder<Stream>::kPlain) {
      c.touch();
      boost::system::error_code ec;
      co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) throw boost::system::system_error(ec, "TLS handshake");
    }
    for (;;) {
      // The head first: what it asks for decides how its body is read.
      bhttp::request_parser<bhttp::empty_body> head_parser;
      head_parser.header_limit(kHeaderLimit);
      // A Content-Length is checked against the limit of the route's body below, once the route is known.
      head_parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      boost::system::error_code ec;
      c.idle = true;
      c.touch();
      if (server.draining && buffer.size() == 0) break;
      co_await bhttp::async_read_header(stream, buffer, head_parser, asio::redirect_error(asio::use_awaitable, ec));
      c.idle = false;
      std::optional<bhttp::request_parser<bhttp::string_body>> parser;
      std::optional<bhttp::request_parser<bhttp::buffer_body>> streamed;
      if (!ec && head_parser.is_done()) {
        parser.emplace(std::move(head_parser));  // no body (every GET): nothing to decide
      } else if (!ec) {
        const auto target = head_parser.get().target();
        const Route routed = route_target(std::string_view(target.data(), target.size()));
        const bhttp::request_header<>& head_only = head_parser.get().base();
        if (streams_body(routed, head_only)) {
          streamed.emplace(std::move(head_parser));
          streamed->body_limit(std::numeric_limits<std::uint64_t>::max());  // the upload's ticket bounds it
        } else {
          // Decided before the head moves into the body's parser.
          const std::uint64_t limit = large_body_allowed(server, routed, head_only) ? kCommitBodyLimit : kBodyLimit;
          parser.emplace(std::move(head_parser));
          parser->body_limit(limit);  // a chunked body's chunks count against it as they come
          if (parser->content_length().value_or(0) > limit) {
            ec = bhttp::error::body_limit;
          } else if (!parser->is_done()) {
            // A large body (a commit's NDJSON) is read 64 KiB at a time, not in the few bytes the head left
            // room for; the room goes again after it, so idle connections stay small.
            const bool large = parser->content_length().value_or(kLargeRead) >= kLargeRead;
            if (large) buffer.reserve(kLargeRead);
            co_await bhttp::async_read(stream, buffer, *parser, asio::redirect_error(asio::use_awaitable, ec));
            if (large) buffer.shrink_to_fit();
          }
        }
      }
      if (ec) {
        Request unparsed;
        unparsed.version(0);  // no version: the answer is HTTP/1.1 and closes
        std::optional<hub::Reply> refusal;
        const bool got_some = parser ? parser->got_some() : head_parser.got_some();
        if (ec == bhttp::error::header_limit) {
          refusal = hub::error_reply(431, "request header too large");
        } else if (ec == bhttp::error::body_limit) {
          refusal = hub::error_reply(413, "request body too large");
        } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                   ec != asio::error::operation_aborted && ec != asio::error::connection_reset && got_some) {
          refusal = hub::error_reply(400, "malformed request");
        }
        if (refusal) co_await responder.write_reply(unparsed, *refusal);
        break;
      }
      std::optional<StreamedBody<Stream>> body;
      Request request = parser ? parser->release() : Request{streamed->get().base()};
      if (streamed) body.emplace(stream, buffer, *streamed, c);
      const auto started = std::chrono::steady_clock::now();
      server.identify_client(c, request);
      // Nothing of the last request's answer describes this one, even if admission fails.
      c.route = RouteId::not_found;
      c.status = 0;
      c.bytes = 0;
      c.cache = CacheStatus::none;
      c.credentials = false;
      c.user.clear();
      c.responded = false;
      if (auto problem = transfer_coding_problem(request)) {
        // The body's end is unknown, so is where the next request starts: answer and close.
        request.keep_alive(false);
        c.route = RouteId::bad_request;
        co_await responder.write_reply(request, *problem);
        server.record(c, request, started);
        break;
      }
      bool keep_alive = false;
      std::string failure;
      try {
        keep_alive = co_await answer_request(server, responder, c, request, body ? &*body : nullptr);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) keep_alive = co_await responder.internal_error(request, failure);
      server.record(c, request, started);
      // A refused upload's client is still sending: a little more of its body is read and dropped, so that it
      // reads the refusal rather than a reset. A body left unread leaves the next request's start unknown.
      if (body && !body->done() && !co_await drain(*body)) break;
      if (!keep_alive || server.draining) break;
    }
  } catch (const std::exception& e) {
    spdlog::debug("connection ended: {}", e.what());
  }
  // The answers are out: closing sends FIN after them (a shutdown first would add nothing but a call).
  boost::system::error_code ignored;
  c.socket.close(ignored);
  --server.stats.open_connections;
}

}  // namespace

Task<void> serve(ServerContext& server, std::shared_ptr<PlainSession> session) {
  return run(server, std::move(session));
}

Task<void> serve(ServerContext& server, std::shared_ptr<TlsSession> session) {
  return run(server, std::move(session));
}

}  // namespace inferllama::http
