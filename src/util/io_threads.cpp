#include "util/io_threads.hpp"

namespace inferllama {

IoThreads::IoThreads(asio::io_context& main, unsigned extra) {
  all_.push_back(&main);
  for (unsigned i = 0; i < extra; ++i) {
    // One thread runs it; handlers are still posted to it from others (the blocking pool, the reaper).
    extra_.push_back(std::make_unique<asio::io_context>(1));
    all_.push_back(extra_.back().get());
  }
}

IoThreads::~IoThreads() {
  join();
}

void IoThreads::start() {
  for (auto& io : extra_) {
    guards_.push_back(asio::make_work_guard(*io));
    threads_.emplace_back([&io = *io] { io.run(); });
  }
}

void IoThreads::join() {
  guards_.clear();
  for (auto& io : extra_) io->stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

}  // namespace inferllama
