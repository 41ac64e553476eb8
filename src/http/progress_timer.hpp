// Wakes a coroutine when the download it follows moves (bytes, its verdict, its end); the timer lives on the
// coroutine's executor, and a wait ends after 5 s at most, so a missed wake-up costs time, never a hang.
#pragma once
#include <atomic>
#include <chrono>
#include <memory>

#include "cache/download.hpp"
#include "inferllama/asio.hpp"

namespace inferllama::http {

class ProgressTimer : public cache::ProgressListener, public std::enable_shared_from_this<ProgressTimer> {
 public:
  explicit ProgressTimer(const asio::any_io_executor& executor) : timer_(executor) {}
  void on_progress() override {
    if (signaled_.exchange(true)) return;
    asio::post(timer_.get_executor(), [self = shared_from_this()] { self->timer_.cancel(); });
  }
  // Before looking at the download: progress from then on ends the next wait.
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

}  // namespace inferllama::http
