// W ranks of the nccl backend as threads of one process, on the CPU model
// of CUDA and NCCL (nccl_model.cc): a bootstrap whose AllGather is a
// rendezvous of the threads, and MakeComms, which makes every rank's
// communicator at once (setup is collective). For nccl_model_test and
// ring_model_test.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/nccl/nccl_comm.h"

namespace ringattn::comm {

// The bootstrap of W ranks as threads: AllGather is a rendezvous.
class Hub {
 public:
  explicit Hub(int size) : size_(size), slots_(size) {}
  absl::StatusOr<std::vector<std::string>> AllGather(int rank, const std::string& mine,
                                                     absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    const unsigned long generation = generation_;
    slots_[rank] = mine;
    if (++arrived_ == size_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      return result_;
    }
    auto done = [&] { return generation_ != generation; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::DeadlineExceededError("model bootstrap: not every rank arrived");
    }
    return result_;
  }

 private:
  absl::Mutex mu_;
  const int size_;
  int arrived_ = 0;
  unsigned long generation_ = 0;
  std::vector<std::string> slots_, result_;
};

class ThreadBootstrap final : public Bootstrap {
 public:
  ThreadBootstrap(std::shared_ptr<Hub> hub, int rank, int size)
      : hub_(std::move(hub)), rank_(rank), size_(size) {}
  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Name() const override { return "threads"; }
  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration timeout) override {
    return hub_->AllGather(rank_, mine, timeout);
  }
  absl::Status Barrier(absl::Duration timeout) override {
    return hub_->AllGather(rank_, "", timeout).status();
  }

 private:
  std::shared_ptr<Hub> hub_;
  const int rank_, size_;
};

// Makes every rank's communicator at once (setup is collective).
inline std::vector<absl::StatusOr<std::unique_ptr<NcclCommunicator>>> MakeComms(
    int size, absl::Duration timeout, const std::function<void(int, NcclOptions&)>& tune = {}) {
  auto hub = std::make_shared<Hub>(size);
  std::vector<absl::StatusOr<std::unique_ptr<NcclCommunicator>>> made(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      ThreadBootstrap bootstrap(hub, r, size);
      NcclOptions options;
      options.timeout = timeout;
      if (tune) tune(r, options);
      made[r] = CreateNcclCommunicator(&bootstrap, options);
    });
  }
  for (std::thread& t : threads) t.join();
  return made;
}

}  // namespace ringattn::comm
