#pragma once
#include <memory>
#include <thread>
#include <vector>

#include "inferllama/asio.hpp"

namespace inferllama {

// I/O contexts beside a main one, each run by one thread of its own, as nginx runs one worker per core.
// A connection lives on one of them for its whole life, so its handlers run on one thread without a
// strand, and the threads never take a handler from each other's queue (no shared scheduler lock, no
// hop to the other core between a read and the write that answers it).
class IoThreads {
 public:
  // `extra` contexts beside `main`, which its owner runs on a thread of its own.
  IoThreads(asio::io_context& main, unsigned extra);
  ~IoThreads();
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  // Every context, the main one first; each is run by exactly one thread.
  const std::vector<asio::io_context*>& contexts() const { return all_; }
  // One thread for each extra context; they run until join(), idle or not.
  void start();
  // Stops the extra contexts and waits for their threads (a second call does nothing).
  void join();

 private:
  std::vector<std::unique_ptr<asio::io_context>> extra_;
  std::vector<asio::io_context*> all_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
};

}  // namespace inferllama
