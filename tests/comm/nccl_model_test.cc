// The `nccl` backend on a CPU model of CUDA and NCCL (nccl_model/): the
// real comm/nccl/nccl_comm.cc, compiled against the model's headers, with
// W ranks as threads of this process. It runs everywhere, GPU or not, and
// exercises what can be checked without GPUs: setup (ids through the
// bootstrap, device choice, two ranks on one GPU refused), the round
// protocol (control messages, header checks on both ends, payloads),
// requests in posting order, orphans, barriers, abort and teardown, under
// the model's reading of NCCL's semantics (see nccl_model.cc). It says
// nothing about real NCCL's speed or its corner cases; nccl_comm_test is
// the same suite on GPUs.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/nccl/nccl_comm.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"
#include "tests/comm/nccl_model/thread_bootstrap.h"

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

// nccl_comm.cc dlopens "libnccl": here, the model (already loaded).
[[maybe_unused]] const bool kModelLibrary = [] {
  setenv("RINGATTN_NCCL_LIBRARY", RINGATTN_NCCL_MODEL_LIBRARY, 1);
  return true;
}();

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

class ModelWorld : public conformance::CommWorld {
 public:
  static absl::StatusOr<std::unique_ptr<ModelWorld>> Create(int size, absl::Duration timeout) {
    auto made = MakeComms(size, timeout);
    auto world = std::unique_ptr<ModelWorld>(new ModelWorld);
    for (auto& comm : made) {
      if (!comm.ok()) return comm.status();
      world->comms_.push_back(std::move(comm).value());
    }
    return world;
  }
  NcclCommunicator& comm(int r) { return *comms_[r]; }
  int size() const { return static_cast<int>(comms_.size()); }

  void Run(const std::function<void(Communicator&)>& body) override {
    std::vector<std::thread> threads;
    for (auto& comm : comms_) {
      threads.emplace_back([&body, c = comm.get()] {
        EXPECT_TRUE(c->MakeDeviceCurrent().ok());
        body(*c);
      });
    }
    for (std::thread& t : threads) t.join();
  }
  // The model's device memory (the rank's thread has its device current).
  void* Alloc(Communicator&, int64_t bytes) override {
    void* ptr = nullptr;
    EXPECT_EQ(cudaMalloc(&ptr, static_cast<size_t>(std::max<int64_t>(bytes, 1))), cudaSuccess);
    return ptr;
  }
  void Free(Communicator&, void* ptr) override { cudaFree(ptr); }

 private:
  ModelWorld() = default;
  std::vector<std::unique_ptr<NcclCommunicator>> comms_;
};

std::shared_ptr<const conformance::CommBackend> ModelBackend() {
  auto backend = std::make_shared<conformance::CommBackend>();
  backend->name = "nccl on the CPU model";
  backend->make_world =
      [](int size,
         absl::Duration timeout) -> absl::StatusOr<std::unique_ptr<conformance::CommWorld>> {
    ASSIGN_OR_RETURN(std::unique_ptr<ModelWorld> world, ModelWorld::Create(size, timeout));
    return std::unique_ptr<conformance::CommWorld>(std::move(world));
  };
  backend->sender_sees_header_mismatch = true;
  backend->independent_requests = false;
  backend->abort_reaches_peers = false;
  return backend;
}

INSTANTIATE_TEST_SUITE_P(NcclModel, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(ModelBackend(),
                                                                            {1, 2, 3, 4})),
                         conformance::ConformanceParamName);

// ---- setup --------------------------------------------------------------------------

TEST(NcclModelSetupTest, RanksTakeTheirLocalGpusAndDescribeThem) {
  auto made = MakeComms(3, absl::Seconds(10));
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(made[r].ok()) << made[r].status();
    EXPECT_EQ((*made[r])->Device(), r);
    EXPECT_EQ((*made[r])->Name(), "nccl");
    EXPECT_TRUE(Contains((*made[r])->Description(), absl::StrCat("local rank ", r, " of 3")))
        << (*made[r])->Description();
  }
}

TEST(NcclModelSetupTest, TwoRanksOnOneGpuAreRefusedOnEveryRank) {
  auto made = MakeComms(3, absl::Seconds(10), [](int, NcclOptions& o) { o.device = 0; });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(made[r].status().code(), absl::StatusCode::kFailedPrecondition) << made[r].status();
    EXPECT_TRUE(Contains(made[r].status().message(), "ranks 0 and 1 would share GPU 0"))
        << made[r].status();
  }
}

TEST(NcclModelSetupTest, ABadDeviceOnOneRankFailsEveryRank) {
  auto made = MakeComms(2, absl::Seconds(10), [](int r, NcclOptions& o) { o.device = r ? 99 : 0; });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(made[r].status().code(), absl::StatusCode::kFailedPrecondition) << made[r].status();
    EXPECT_TRUE(Contains(made[r].status().message(), "rank 1: NcclOptions device"))
        << made[r].status();
  }
}

// ---- behaviour the suite does not cover ------------------------------------------------

constexpr absl::Duration kWait = absl::Seconds(10);
constexpr absl::Duration kSlack = absl::Milliseconds(1500);

MessageMeta Meta(int step, int64_t bytes) {
  MessageMeta m;
  m.step = step;
  m.dtype = 7;
  m.ndim = 1;
  m.shape[0] = bytes;
  return m;
}

std::vector<uint8_t> Pattern(int origin, int step, int64_t bytes) {
  std::vector<uint8_t> out(static_cast<size_t>(bytes));
  for (int64_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(origin * 31 + step * 7 + i);
  return out;
}

TEST(NcclModelTest, HostMemoryAndAnotherGpusMemoryAreRefused) {
  auto world = ModelWorld::Create(2, kWait);
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    const int peer = 1 - c.Rank();
    conformance::Buffer device(**world, c, 64);
    std::vector<uint8_t> host(64);
    auto refused = c.SendRecv(host.data(), 64, peer, Meta(0, 64), device.data(), 64, peer,
                              Meta(0, 64));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(refused.status().message(), "send buffer: expected device memory of GPU"))
        << refused.status();
    EXPECT_TRUE(Contains(refused.status().message(), "got host memory")) << refused.status();
    void* pinned = nullptr;
    cudaMallocHost(&pinned, 64);
    refused = c.SendRecv(device.data(), 64, peer, Meta(0, 64), pinned, 64, peer, Meta(0, 64));
    EXPECT_TRUE(Contains(refused.status().message(), "receive buffer")) << refused.status();
    EXPECT_TRUE(Contains(refused.status().message(), "pinned host memory")) << refused.status();
    cudaFreeHost(pinned);
    // The other rank's GPU.
    cudaSetDevice(peer);
    void* other = nullptr;
    cudaMalloc(&other, 64);
    cudaSetDevice(c.Rank());
    refused = c.SendRecv(other, 64, peer, Meta(0, 64), device.data(), 64, peer, Meta(0, 64));
    EXPECT_TRUE(Contains(refused.status().message(), absl::StrCat("got memory of GPU ", peer)))
        << refused.status();
    cudaFree(other);
    // Nothing was posted: step 0 meets step 0.
    const std::vector<uint8_t> mine = Pattern(c.Rank(), 0, 64);
    conformance::Buffer send(**world, c, 64);
    send.Write(mine);
    auto ok = c.SendRecv(send.data(), 64, peer, Meta(0, 64), device.data(), 64, peer, Meta(0, 64));
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_TRUE((*ok)->Wait(kWait).ok());
    EXPECT_EQ(device.Read(), Pattern(peer, 0, 64));
  });
}

TEST(NcclModelTest, DifferentPostingOrdersFailBothRanks) {
  auto world = ModelWorld::Create(2, kWait);
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    const int peer = 1 - c.Rank();
    constexpr int64_t kBytes = 4096;
    conformance::Buffer send(**world, c, kBytes);
    conformance::Buffer recv(**world, c, kBytes);
    send.Write(Pattern(c.Rank(), 1, kBytes));
    absl::Status status;
    if (c.Rank() == 0) {  // sends and receives
      auto r = c.SendRecv(send.data(), kBytes, peer, Meta(1, kBytes), recv.data(), kBytes, peer,
                          Meta(1, kBytes));
      ASSERT_TRUE(r.ok());
      status = (*r)->Wait(kWait);
      EXPECT_TRUE(Contains(status.message(), "rank 1's request at this place receives nothing"))
          << status;
      EXPECT_EQ(recv.Read(), Pattern(1, 1, kBytes)) << "the matching direction did not deliver";
    } else {  // only sends
      auto r = c.SendRecv(send.data(), kBytes, peer, Meta(1, kBytes), nullptr, 0, 0, MessageMeta{});
      ASSERT_TRUE(r.ok());
      status = (*r)->Wait(kWait);
      EXPECT_TRUE(Contains(status.message(), "but this request receives nothing from rank 0"))
          << status;
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(c.BytesSent(), c.Rank() == 1 ? kBytes : 0);  // only 1 -> 0 matched
    // Both ranks are at the same place again.
    send.Write(Pattern(c.Rank(), 2, kBytes));
    auto again = c.SendRecv(send.data(), kBytes, peer, Meta(2, kBytes), recv.data(), kBytes, peer,
                            Meta(2, kBytes));
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE((*again)->Wait(kWait).ok());
    EXPECT_EQ(recv.Read(), Pattern(peer, 2, kBytes));
  });
}

// The documented limit: "receive from the left, then send to the right" on
// every rank cannot be matched in order; it times out naming the peer and
// the step instead of hanging, and teardown still ends.
TEST(NcclModelTest, ReceiveFirstOnEveryRankTimesOutNamingPeerAndStep) {
  constexpr absl::Duration kShort = absl::Milliseconds(300);
  auto world = ModelWorld::Create(3, kShort);
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    const int next = (c.Rank() + 1) % c.Size(), prev = (c.Rank() + c.Size() - 1) % c.Size();
    conformance::Buffer send(**world, c, 100);
    conformance::Buffer recv(**world, c, 100);
    auto incoming = c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), 100, prev, Meta(4, 100));
    auto outgoing = c.SendRecv(send.data(), 100, next, Meta(4, 100), nullptr, 0, 0, MessageMeta{});
    ASSERT_TRUE(incoming.ok() && outgoing.ok());
    const absl::Status in = (*incoming)->Wait(kShort);
    EXPECT_EQ(in.code(), absl::StatusCode::kDeadlineExceeded) << in;
    EXPECT_TRUE(Contains(in.message(), absl::StrCat("no message from rank ", prev, " for step 4")))
        << in;
    const absl::Status out = (*outgoing)->Wait(absl::ZeroDuration());
    EXPECT_EQ(out.code(), absl::StatusCode::kDeadlineExceeded) << out;
    EXPECT_TRUE(Contains(out.message(), "posting order")) << out;
  });
}

TEST(NcclModelTest, AbortFailsThisRankAtOnceAndItsPeersWithinTheirTimeout) {
  constexpr absl::Duration kTimeout = absl::Milliseconds(500);
  auto world = ModelWorld::Create(3, kTimeout);
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    const int next = (c.Rank() + 1) % c.Size(), prev = (c.Rank() + c.Size() - 1) % c.Size();
    constexpr int64_t kBytes = 65536;
    conformance::Buffer send(**world, c, kBytes);
    conformance::Buffer recv(**world, c, kBytes);
    absl::Status status;
    absl::Time aborted_at = absl::InfiniteFuture();
    const absl::Time start = absl::Now();
    for (int step = 0; step < 10 && status.ok(); ++step) {
      if (c.Rank() == 2 && step == 3) {
        aborted_at = absl::Now();
        c.Abort(absl::InternalError("injected fault"));
      }
      auto r = c.SendRecv(send.data(), kBytes, next, Meta(step, kBytes), recv.data(), kBytes, prev,
                          Meta(step, kBytes));
      status = r.ok() ? (*r)->Wait(kTimeout) : r.status();
    }
    ASSERT_FALSE(status.ok());
    if (c.Rank() == 2) {
      EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
      EXPECT_TRUE(Contains(status.message(), "rank 2 aborted: INTERNAL: injected fault")) << status;
      EXPECT_LE(absl::Now() - aborted_at, kSlack);
      EXPECT_EQ(c.Barrier(kWait).code(), absl::StatusCode::kAborted);
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_TRUE(Contains(status.message(), "step 3")) << status;
      EXPECT_LE(absl::Now() - start, 2 * kTimeout + 2 * kSlack);
      // The destroyed request of the failed step aborted this rank too.
      EXPECT_EQ(c.Barrier(kWait).code(), absl::StatusCode::kCancelled);
    }
  });
}

TEST(NcclModelTest, AbortWakesThisRanksPendingWait) {
  auto world = ModelWorld::Create(2, absl::Milliseconds(500));
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    if (c.Rank() != 0) return;
    conformance::Buffer recv(**world, c, 64);
    recv.Fill(0xA5);
    {
      auto r = c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), 64, 1, Meta(5, 64));
      ASSERT_TRUE(r.ok());
      const absl::Time start = absl::Now();
      std::thread aborter([&c] {
        absl::SleepFor(absl::Milliseconds(100));
        c.Abort(absl::UnavailableError("node lost"));
      });
      const absl::Status status = (*r)->Wait(absl::Seconds(5));
      aborter.join();
      EXPECT_LE(absl::Now() - start, absl::Milliseconds(100) + kSlack);
      EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
      EXPECT_TRUE(Contains(status.message(), "node lost")) << status;
    }
    EXPECT_EQ(recv.Read(), std::vector<uint8_t>(64, 0xA5));
  });
}

TEST(NcclModelTest, BarrierAfterATimedOutBarrierIsOutOfStep) {
  auto world = ModelWorld::Create(2, absl::Milliseconds(300));
  ASSERT_TRUE(world.ok()) << world.status();
  (*world)->Run([&](Communicator& c) {
    if (c.Rank() == 0) return;
    EXPECT_EQ(c.Barrier(absl::Milliseconds(200)).code(), absl::StatusCode::kDeadlineExceeded);
    const absl::Status again = c.Barrier(kWait);
    EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
    EXPECT_TRUE(Contains(again.message(), "out of step")) << again;
  });
}

TEST(NcclModelTest, GatherToRankZeroInPostingOrder) {
  auto world = ModelWorld::Create(4, kWait);
  ASSERT_TRUE(world.ok()) << world.status();
  auto bytes_of = [](int r) { return int64_t{1000} * r + 3; };
  (*world)->Run([&](Communicator& c) {
    if (c.Rank() != 0) {
      conformance::Buffer send(**world, c, bytes_of(c.Rank()));
      send.Write(Pattern(c.Rank(), 3, bytes_of(c.Rank())));
      auto r = c.SendRecv(send.data(), bytes_of(c.Rank()), 0, Meta(3, bytes_of(c.Rank())),
                          nullptr, 0, 0, MessageMeta{});
      ASSERT_TRUE(r.ok());
      EXPECT_TRUE((*r)->Wait(kWait).ok());
      return;
    }
    for (int r = 1; r < c.Size(); ++r) {
      conformance::Buffer recv(**world, c, bytes_of(r));
      auto req = c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), bytes_of(r), r,
                            Meta(3, bytes_of(r)));
      ASSERT_TRUE(req.ok());
      ASSERT_TRUE((*req)->Wait(kWait).ok()) << "from rank " << r;
      EXPECT_EQ(recv.Read(), Pattern(r, 3, bytes_of(r)));
    }
  });
}

}  // namespace
}  // namespace ringattn::comm
