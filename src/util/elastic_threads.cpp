#include "util/elastic_threads.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>

namespace inferllama {

ElasticThreads::ElasticThreads(std::size_t max, std::chrono::milliseconds idle_exit)
    : max_(std::max<std::size_t>(1, max)), idle_exit_(idle_exit) {}

ElasticThreads::~ElasticThreads() {
  join();
}

void ElasticThreads::post(std::function<void()> work) {
  std::list<std::thread> finished;
  {
    std::lock_guard lock(mutex_);
    if (joining_) return;
    queue_.push_back(std::move(work));
    if (idle_ >= queue_.size() || running_ >= max_) {
      wake_.notify_one();
      return;
    }
    // Threads that ended are joined here, off the lock, so that the list stays as long as the busy ones.
    for (auto it = threads_.begin(); it != threads_.end();) {
      const bool ended = std::find(ended_.begin(), ended_.end(), it->get_id()) != ended_.end();
      if (ended) {
        ended_.remove(it->get_id());
        finished.splice(finished.end(), threads_, it++);
      } else {
        ++it;
      }
    }
    ++running_;
    try {
      threads_.emplace_back([this] { run(); });
    } catch (...) {  // no thread to be had (a pids limit): the work is not taken
      --running_;
      queue_.pop_back();
      throw;
    }
  }
  for (auto& t : finished) t.join();
}

void ElasticThreads::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_;
    const bool woken = wake_.wait_for(lock, idle_exit_, [this] { return !queue_.empty() || joining_; });
    --idle_;
    if (queue_.empty() && (joining_ || !woken)) break;
    auto work = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      work();
    } catch (const std::exception& e) {
      spdlog::error("blocking work failed: {}", e.what());
    } catch (...) {
      spdlog::error("blocking work failed");
    }
    lock.lock();
  }
  --running_;
  ended_.push_back(std::this_thread::get_id());
}

void ElasticThreads::join(bool drop_queued) {
  std::list<std::thread> all;
  {
    std::lock_guard lock(mutex_);
    joining_ = true;
    if (drop_queued) queue_.clear();
    all.swap(threads_);
    ended_.clear();
  }
  wake_.notify_all();
  for (auto& t : all) t.join();
}

std::size_t ElasticThreads::threads() const {
  std::lock_guard lock(mutex_);
  return running_;
}

}  // namespace inferllama
