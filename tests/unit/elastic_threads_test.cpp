#include "util/elastic_threads.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace inferllama {
namespace {

// Work that blocks until released, as an upstream call does.
struct Gate {
  std::mutex mutex;
  std::condition_variable changed;
  int entered = 0;
  bool open = false;

  void pass() {
    std::unique_lock lock(mutex);
    ++entered;
    changed.notify_all();
    changed.wait(lock, [this] { return open; });
  }
  void wait_entered(int n) {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(10), [&] { return entered >= n; })) << entered;
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
};

TEST(ElasticThreadsTest, NoThreadUntilWorkAndNoMoreThanTheMost) {
  ElasticThreads pool(3, std::chrono::seconds(30));
  EXPECT_EQ(pool.threads(), 0u);
  Gate gate;
  std::atomic<int> done{0};
  for (int i = 0; i < 5; ++i) {
    pool.post([&] {
      gate.pass();
      ++done;
    });
  }
  gate.wait_entered(3);
  EXPECT_EQ(pool.threads(), 3u);  // the other two wait their turn
  gate.release();
  pool.join();
  EXPECT_EQ(done.load(), 5);
  EXPECT_EQ(pool.threads(), 0u);
}

TEST(ElasticThreadsTest, IdleThreadsEnd) {
  ElasticThreads pool(4, std::chrono::milliseconds(20));
  std::atomic<int> done{0};
  pool.post([&] { ++done; });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((done.load() == 0 || pool.threads() > 0) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(done.load(), 1);
  EXPECT_EQ(pool.threads(), 0u);
  // And a new one starts for the next work.
  pool.post([&] { ++done; });
  pool.join();
  EXPECT_EQ(done.load(), 2);
}

TEST(ElasticThreadsTest, WorkThatThrowsLeavesThePoolWorking) {
  ElasticThreads pool(1);
  std::atomic<int> done{0};
  pool.post([] { throw std::runtime_error("upstream gone"); });
  pool.post([&] { ++done; });
  pool.join();
  EXPECT_EQ(done.load(), 1);
}

}  // namespace
}  // namespace inferllama
