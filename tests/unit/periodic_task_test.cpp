#include "util/periodic_task.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>

namespace inferllama {
namespace {

using namespace std::chrono_literals;

TEST(PeriodicTaskTest, RunsAgainAfterEachIntervalOnTheRunner) {
  asio::io_context io;
  asio::thread_pool pool(1);
  PeriodicTask task(io.get_executor(), pool.get_executor());
  std::atomic<int> runs{0};
  std::atomic<bool> on_pool{true};
  task.start("test", 1ms, [&] {
    on_pool = on_pool && pool.get_executor().running_in_this_thread();
    if (++runs == 3) io.stop();
  });
  io.run();  // until the third run stops it
  task.stop();
  EXPECT_EQ(runs.load(), 3);
  EXPECT_TRUE(on_pool.load());
  pool.join();
}

TEST(PeriodicTaskTest, FirstRunNowDoesNotWaitForTheInterval) {
  asio::io_context io;
  PeriodicTask task(io.get_executor(), io.get_executor());
  int runs = 0;
  task.start(
      "test", std::chrono::hours(1), [&] { ++runs; }, PeriodicTask::First::now);
  io.run_one();
  EXPECT_EQ(runs, 1);
  task.stop();
  io.restart();
  io.run();  // the cancelled wait completes without a run
  EXPECT_EQ(runs, 1);
}

TEST(PeriodicTaskTest, StopWaitsForTheRunInProgressAndNoneStartsAfter) {
  asio::io_context io;
  asio::thread_pool pool(1);
  PeriodicTask task(io.get_executor(), pool.get_executor());
  std::promise<void> entered;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> runs{0};
  std::atomic<bool> finished{false};
  task.start(
      "test", 1ms,
      [&] {
        if (++runs > 1) return;
        entered.set_value();
        released.wait();
        finished = true;
      },
      PeriodicTask::First::now);
  entered.get_future().wait();
  auto stopping = std::async(std::launch::async, [&] { task.stop(); });
  EXPECT_EQ(stopping.wait_for(50ms), std::future_status::timeout);  // held by the run
  release.set_value();
  stopping.get();
  EXPECT_TRUE(finished.load());
  io.run();  // nothing was armed after the stop
  pool.join();
  EXPECT_EQ(runs.load(), 1);
}

TEST(PeriodicTaskTest, ARunThatThrowsDoesNotEndTheTask) {
  asio::io_context io;
  PeriodicTask task(io.get_executor(), io.get_executor());
  int runs = 0;
  task.start("test", 1ms, [&] {
    if (++runs == 1) throw std::runtime_error("the disk is full");
    io.stop();
  });
  io.run();
  EXPECT_EQ(runs, 2);
}

TEST(PeriodicTaskTest, RunSoonStartsARunWithoutWaitingForTheInterval) {
  asio::io_context io;
  PeriodicTask task(io.get_executor(), io.get_executor());
  int runs = 0;
  task.run_soon();  // before start: nothing to run
  task.start("test", std::chrono::hours(1), [&] { ++runs; });
  task.run_soon();
  for (int i = 0; i < 500 && runs == 0; ++i) io.run_one_for(10ms);
  EXPECT_EQ(runs, 1);
  // The hour's wait was replaced by a new one: nothing else runs now.
  io.poll();
  EXPECT_EQ(runs, 1);
  task.stop();
  task.run_soon();  // after stop: nothing
  io.restart();
  io.run();
  EXPECT_EQ(runs, 1);
}

TEST(PeriodicTaskTest, RunSoonDuringARunRunsOnceMoreWhenItEnds) {
  asio::io_context io;
  asio::thread_pool pool(1);
  PeriodicTask task(io.get_executor(), pool.get_executor());
  std::promise<void> entered;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> second;
  std::atomic<int> runs{0};
  task.start(
      "test", std::chrono::hours(1),
      [&] {
        if (++runs == 1) {
          entered.set_value();
          released.wait();
        } else {
          second.set_value();
        }
      },
      PeriodicTask::First::now);
  entered.get_future().wait();
  task.run_soon();
  task.run_soon();  // one more run, however often asked during the run
  release.set_value();
  auto second_run = second.get_future();
  EXPECT_EQ(second_run.wait_for(10s), std::future_status::ready);
  task.stop();
  EXPECT_EQ(runs.load(), 2);
  pool.join();
}

}  // namespace
}  // namespace inferllama
