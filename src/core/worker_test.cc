#include "core/worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <thread>
#include <vector>

namespace dyad {
namespace {

TEST(Worker, RunsEachJobOnItsOwnThreadInPostOrder) {
  auto worker = Worker::Start();
  ASSERT_TRUE(worker.ok()) << worker.error().message;
  std::vector<int> ran;  // written by the jobs, read after Wait
  std::thread::id on;
  for (int i = 0; i < 100; ++i) {
    (*worker)->Post([&ran, &on, i] {
      ran.push_back(i);
      on = std::this_thread::get_id();
    });
  }
  (*worker)->Wait();
  ASSERT_EQ(ran.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ran[static_cast<size_t>(i)], i);
  EXPECT_NE(on, std::this_thread::get_id());
}

TEST(Worker, WaitWithNothingPostedReturnsAtOnce) {
  auto worker = Worker::Start();
  ASSERT_TRUE(worker.ok());
  (*worker)->Wait();
  (*worker)->Wait();
}

// Wait (and the destructor) return only once the job in flight has: the
// job here cannot return before the test lets it.
TEST(Worker, WaitAndTheDestructorWaitForTheJobInFlight) {
  for (bool destroy : {false, true}) {
    auto worker = Worker::Start();
    ASSERT_TRUE(worker.ok());
    std::latch started(1), release(1);
    bool done = false;
    (*worker)->Post([&] {
      started.count_down();
      release.wait();
      done = true;
    });
    started.wait();
    std::thread opener([&] { release.count_down(); });
    if (destroy) worker->reset();
    else (*worker)->Wait();
    EXPECT_TRUE(done);
    opener.join();
  }
}

// A job posted while one runs waits for it: never two at once.
TEST(Worker, APostWhileAJobRunsWaitsForIt) {
  auto worker = Worker::Start();
  ASSERT_TRUE(worker.ok());
  std::latch started(1), release(1);
  std::atomic<int> running{0}, most{0};
  auto job = [&](bool first) {
    most = std::max(most.load(), ++running);
    if (first) {
      started.count_down();
      release.wait();
    }
    --running;
  };
  (*worker)->Post([&] { job(true); });
  started.wait();
  std::thread opener([&] { release.count_down(); });
  (*worker)->Post([&] { job(false); });
  (*worker)->Wait();
  opener.join();
  EXPECT_EQ(most.load(), 1);
}

}  // namespace
}  // namespace dyad
