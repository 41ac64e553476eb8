#pragma once
#include <exception>
#include <optional>
#include <type_traits>

#include <memory>

#include "inferllama/asio.hpp"
#include "util/elastic_threads.hpp"

namespace inferllama {

// Runs a blocking call on `pool` and resumes the awaiting coroutine on its own executor with the
// result (or its exception): RocksDB, disk and upstream calls never block an I/O thread.
template <class Fn>
Task<std::invoke_result_t<Fn>> offload(ElasticThreads& pool, Fn fn) {
  using Result = std::invoke_result_t<Fn>;
  auto executor = co_await asio::this_coro::executor;
  std::optional<Result> result;
  std::exception_ptr error;
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [&](auto handler) {
        // The completion handler moves only; the pool's work is copyable.
        auto resume = std::make_shared<decltype(handler)>(std::move(handler));
        pool.post([&, resume, executor] {
          try {
            result.emplace(fn());
          } catch (...) {
            error = std::current_exception();
          }
          asio::post(executor, std::move(*resume));
        });
      },
      asio::use_awaitable);
  if (error) std::rethrow_exception(error);
  co_return std::move(*result);
}

}  // namespace inferllama
