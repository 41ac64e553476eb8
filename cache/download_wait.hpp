#pragma once
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "cache/download.hpp"

namespace inferllama::cache {

// Lets a thread of the blocking pool wait on downloads (a torrent's snapshot being completed, a mirror's
// files ingested, a prefetch): woken whenever one it watches makes progress or ends.
class DownloadWaiter {
 public:
  void watch(const std::shared_ptr<Download>& download) { download->subscribe(state_); }
  // Blocks until `done()` holds, asking again at every wake-up.
  template <class Predicate>
  void wait(Predicate done) {
    std::unique_lock lock(state_->mutex);
    // The timeout only bounds a wake-up lost between a check and the wait.
    while (!done()) state_->cv.wait_for(lock, std::chrono::seconds(1));
  }

 private:
  struct State : ProgressListener {
    std::mutex mutex;
    std::condition_variable cv;
    void on_progress() override {
      std::lock_guard lock(mutex);
      cv.notify_all();
    }
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Blocks until every download has completed or failed.
inline void wait_until_done(const std::vector<std::shared_ptr<Download>>& downloads) {
  DownloadWaiter waiter;
  for (const auto& d : downloads) waiter.watch(d);
  waiter.wait([&] {
    for (const auto& d : downloads) {
      if (d->state() == Download::State::running) return false;
    }
    return true;
  });
}

}  // namespace inferllama::cache
