#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

namespace inferllama {

// Threads for work that blocks (an upstream connection, a disk), started as work arrives, up to `max`,
// and ended after `idle_exit` without work: an idle node holds none, a busy one as many as its work
// needs. Work beyond `max` waits its turn.
class ElasticThreads {
 public:
  explicit ElasticThreads(std::size_t max, std::chrono::milliseconds idle_exit = std::chrono::seconds(30));
  ~ElasticThreads();  // join()
  ElasticThreads(const ElasticThreads&) = delete;
  ElasticThreads& operator=(const ElasticThreads&) = delete;

  void post(std::function<void()> work);
  // Ends every thread once the work already posted has run (`drop_queued`: once the work running now has
  // ended; what waits is dropped, as at a stop that must not wait for it). Work posted afterwards is dropped.
  void join(bool drop_queued = false);
  std::size_t threads() const;

 private:
  void run();

  const std::size_t max_;
  const std::chrono::milliseconds idle_exit_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  std::list<std::thread> threads_;  // ended ones are joined when the next starts, or at join()
  std::list<std::thread::id> ended_;
  std::size_t running_ = 0;  // threads alive
  std::size_t idle_ = 0;     // of them, waiting for work
  bool joining_ = false;
};

}  // namespace inferllama
