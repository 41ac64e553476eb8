#pragma once
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "cache/download.hpp"

namespace inferllama::torrent {

// Blocks until every download has completed or failed (a thread of the blocking pool waits here while
// a torrent's snapshot is completed or a mirror's files are ingested).
inline void wait_until_done(const std::vector<std::shared_ptr<cache::Download>>& downloads) {
  struct Waiter : cache::ProgressListener {
    std::mutex mutex;
    std::condition_variable cv;
    void on_progress() override {
      std::lock_guard lock(mutex);
      cv.notify_all();
    }
  };
  auto waiter = std::make_shared<Waiter>();
  for (const auto& d : downloads) d->subscribe(waiter);
  for (const auto& d : downloads) {
    std::unique_lock lock(waiter->mutex);
    // The timeout only bounds a wake-up lost between the state check and the wait.
    while (d->state() == cache::Download::State::running) waiter->cv.wait_for(lock, std::chrono::seconds(1));
  }
}

}  // namespace inferllama::torrent
