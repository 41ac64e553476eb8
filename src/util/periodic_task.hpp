#pragma once
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "inferllama/asio.hpp"
#include "util/elastic_threads.hpp"

namespace inferllama {

// Work a node repeats: a timer on `timers` (the I/O context) and each run posted to `runner` (the same
// executor for short work, a pool for work that may block). The next wait starts when a run ends, so
// runs never overlap. A run that throws is logged and the task goes on.
class PeriodicTask {
 public:
  enum class First { after_interval, now };

  PeriodicTask(asio::any_io_executor timers, asio::any_io_executor runner);
  PeriodicTask(asio::any_io_executor timers, ElasticThreads& runner);
  ~PeriodicTask();  // stop()
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // Once. `name` says in the log whose run failed.
  void start(std::string name, std::chrono::steady_clock::duration interval, std::function<void()> fn,
             First first = First::after_interval);
  // Starts a run now rather than at the end of the wait (work was added: a prefetch entry); a run in
  // progress is followed by another at once. Nothing before start() or after stop(). Any thread.
  void run_soon();
  // No run starts after this; a run already posted or in progress is waited for (never call it from a
  // run), so a pool runner must still be running: stop before joining it.
  void stop();

 private:
  // What a timer handler may still reach after the task is gone: it holds only a weak reference.
  struct State {
    std::mutex mutex;
    std::condition_variable idle;
    bool stopped = false;
    bool started = false;
    bool running = false;    // a run is posted or in progress
    bool again = false;      // run_soon() during a run: the next one starts when it ends
    std::uint64_t wait = 0;  // numbers the timer's waits: a wait superseded by run_soon() starts nothing
  };
  void arm();  // under state_->mutex, not stopped
  void dispatch_run();
  void run();

  asio::steady_timer timer_;
  std::function<void(std::function<void()>)> runner_;
  std::string name_;
  std::chrono::steady_clock::duration interval_{};
  std::function<void()> fn_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace inferllama
