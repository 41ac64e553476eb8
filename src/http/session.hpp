// A client connection's life: read a request, admit it, dispatch it to its handler, write the answer,
// until the connection closes. One coroutine templated on the stream, so that plain TCP or TLS is
// chosen once, at accept (server.cpp), and nothing below asks again.
#pragma once
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/stream_traits.hpp>

#include "http/connection.hpp"
#include "inferllama/asio.hpp"

namespace inferllama::http {

class ServerContext;

template <class Stream>
struct Session {
  Session(Stream s, Listener listener, std::chrono::steady_clock::duration idle_timeout)
      : stream(std::move(s)), connection(boost::beast::get_lowest_layer(stream), listener, idle_timeout) {}
  Stream stream;
  Connection connection;
};

using PlainSession = Session<asio::ip::tcp::socket>;
using TlsSession = Session<asio::ssl::stream<asio::ip::tcp::socket>>;

// Serves the connection until it ends (or the server's reaper closes it when it stalls).
Task<void> serve(ServerContext& server, std::shared_ptr<PlainSession> session);
Task<void> serve(ServerContext& server, std::shared_ptr<TlsSession> session);

}  // namespace inferllama::http
