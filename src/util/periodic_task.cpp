#include "util/periodic_task.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

namespace inferllama {

PeriodicTask::PeriodicTask(asio::any_io_executor timers, asio::any_io_executor runner)
    : timer_(std::move(timers)),
      runner_([runner = std::move(runner)](std::function<void()> run) { asio::dispatch(runner, std::move(run)); }) {}

PeriodicTask::PeriodicTask(asio::any_io_executor timers, ElasticThreads& runner)
    : timer_(std::move(timers)), runner_([&runner](std::function<void()> run) { runner.post(std::move(run)); }) {}

PeriodicTask::~PeriodicTask() {
  stop();
}

void PeriodicTask::start(std::string name, std::chrono::steady_clock::duration interval, std::function<void()> fn,
                         First first) {
  name_ = std::move(name);
  interval_ = interval;
  fn_ = std::move(fn);
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) return;
    state_->started = true;
    if (first == First::after_interval) {
      arm();
      return;
    }
    state_->running = true;
  }
  dispatch_run();
}

void PeriodicTask::arm() {
  timer_.expires_after(interval_);
  const std::uint64_t wait = ++state_->wait;
  timer_.async_wait([this, wait, weak = std::weak_ptr<State>(state_)](const boost::system::error_code& ec) {
    const auto state = weak.lock();
    if (ec || !state) return;
    {
      std::lock_guard lock(state->mutex);
      if (state->stopped || state->wait != wait) return;
      state->running = true;
    }
    dispatch_run();
  });
}

void PeriodicTask::run_soon() {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped || !state_->started) return;
    if (state_->running) {
      state_->again = true;
      return;
    }
    ++state_->wait;  // the wait in progress, even if it just ended, starts nothing
    timer_.cancel();
    state_->running = true;
  }
  dispatch_run();
}

void PeriodicTask::dispatch_run() {
  // The I/O context keeps running while a run is away on a pool: it has the next wait to arm. Inline when
  // the runner is this I/O thread's own context, so no run is left queued when it stops.
  auto work = asio::prefer(timer_.get_executor(), asio::execution::outstanding_work.tracked);
  runner_([this, work = std::move(work)] { run(); });
}

void PeriodicTask::run() {
  try {
    fn_();
  } catch (const std::exception& e) {
    spdlog::error("{} failed: {}", name_, e.what());
  }
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) {
      state_->running = false;
      state_->idle.notify_all();
      return;
    }
    if (!state_->again) {
      state_->running = false;
      arm();
      return;
    }
    state_->again = false;
  }
  dispatch_run();
}

void PeriodicTask::stop() {
  std::unique_lock lock(state_->mutex);
  state_->stopped = true;
  timer_.cancel();
  state_->idle.wait(lock, [this] { return !state_->running; });
}

}  // namespace inferllama
