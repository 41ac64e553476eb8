#pragma once
// The one place that includes Asio: Boost 1.74's asio/awaitable.hpp uses std::exchange without
// including <utility>, so it must come first.
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace inferllama {
namespace asio = boost::asio;
template <class T = void>
using Task = asio::awaitable<T>;
}  // namespace inferllama
