// Tests of the `nccl` backend (comm/nccl/nccl_comm.h). Label multigpu.
//
// Meant for mpirun, one process per GPU (tools/multigpu_ci.sh runs it with
// N = 2, 4, 8): each process is one rank over the MPI bootstrap, runs the
// communicator conformance suite (Nccl/...) on device buffers for the
// launched world size, and the fault tests below (abort, posting orders,
// refused buffers). NCCL cannot put two ranks on one GPU, so nothing here
// runs in one process: alone, or with fewer than 2 GPUs, every test skips
// ("needs 2 GPUs: found N", "needs one process per GPU ...", or, in a
// build without the backend, "NCCL not built"). Exceptions: the setup tests
// check the unbuilt backend's answer and, on a machine without a GPU, the
// refusal to start.
//
// RINGATTN_NCCL_TEST_ONE_RANK=1 runs the suite as a one-rank world on one
// GPU (a smoke test of setup, self-messages, barriers and abort for a
// machine with a single GPU).
#include "comm/nccl/nccl_comm.h"

#if RINGATTN_NCCL_TEST_CUDA
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"
#include "tests/comm/nccl_process.h"

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// This process's rank, on its GPU. Message memory is device memory,
// allocated, freed and copied on a stream of the world's own with the
// stream-ordered allocator: cudaFree would wait for every kernel of the
// device, an NCCL kernel still waiting for a silent peer included.
class NcclCommWorld : public conformance::CommWorld {
 public:
  static absl::StatusOr<std::unique_ptr<NcclCommWorld>> Create(absl::Duration timeout) {
    NcclOptions options;
    options.timeout = timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> comm,
                     CreateNcclCommunicator(ProcessBootstrap(), options));
    auto world = std::unique_ptr<NcclCommWorld>(new NcclCommWorld(std::move(comm)));
#if RINGATTN_NCCL_TEST_CUDA
    if (cudaStreamCreateWithFlags(&world->stream_, cudaStreamNonBlocking) != cudaSuccess) {
      return absl::InternalError("cannot create the test's CUDA stream");
    }
#endif
    return world;
  }
  ~NcclCommWorld() override {
    // Collective teardown: nobody finalizes while a peer still talks to it.
    (void)ProcessBootstrap()->Barrier(absl::Seconds(60));
    comm_.reset();
#if RINGATTN_NCCL_TEST_CUDA
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
#endif
  }

  NcclCommunicator& comm() { return *comm_; }
  void Run(const std::function<void(Communicator&)>& body) override { body(*comm_); }

#if RINGATTN_NCCL_TEST_CUDA
  void* Alloc(Communicator&, int64_t bytes) override {
    void* ptr = nullptr;
    Check(cudaMallocAsync(&ptr, static_cast<size_t>(std::max<int64_t>(bytes, 1)), stream_));
    Check(cudaStreamSynchronize(stream_));
    return ptr;
  }
  void Free(Communicator&, void* ptr) override {
    Check(cudaFreeAsync(ptr, stream_));
    Check(cudaStreamSynchronize(stream_));
  }
  void Upload(Communicator&, void* dst, const void* host_src, int64_t bytes) override {
    if (bytes <= 0) return;
    Check(cudaMemcpyAsync(dst, host_src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice,
                          stream_));
    Check(cudaStreamSynchronize(stream_));
  }
  void Download(Communicator&, void* host_dst, const void* src, int64_t bytes) override {
    if (bytes <= 0) return;
    Check(cudaMemcpyAsync(host_dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost,
                          stream_));
    Check(cudaStreamSynchronize(stream_));
  }
#else
  // Unreachable: without CUDA there is no NCCL backend and every test skips.
  void* Alloc(Communicator&, int64_t) override {
    ADD_FAILURE() << "no CUDA runtime in this build";
    return nullptr;
  }
#endif

 private:
  explicit NcclCommWorld(std::unique_ptr<NcclCommunicator> comm) : comm_(std::move(comm)) {}
#if RINGATTN_NCCL_TEST_CUDA
  static void Check(cudaError_t e) {
    EXPECT_EQ(e, cudaSuccess) << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  }
  cudaStream_t stream_ = nullptr;
#endif
  std::unique_ptr<NcclCommunicator> comm_;
};

// ---- the conformance suite, one rank per process -----------------------------------

std::shared_ptr<const conformance::CommBackend> NcclBackend() {
  auto backend = std::make_shared<conformance::CommBackend>();
  backend->name = "nccl (device buffers)";
  backend->make_world =
      [](int size,
         absl::Duration timeout) -> absl::StatusOr<std::unique_ptr<conformance::CommWorld>> {
    if (ProcessBootstrap()->Size() != size) {
      return absl::FailedPreconditionError(
          absl::StrCat("the nccl suite runs with the launched world size ",
                       ProcessBootstrap()->Size(), ", not ", size));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<NcclCommWorld> world, NcclCommWorld::Create(timeout));
    return std::unique_ptr<conformance::CommWorld>(std::move(world));
  };
  // Both ends check the same pair of headers (the control messages).
  backend->sender_sees_header_mismatch = true;
  // NCCL: a rank's requests run in posting order; Abort is local.
  backend->independent_requests = false;
  backend->abort_reaches_peers = false;
  backend->skip_reason = SkipReason;
  return backend;
}

// Instantiated in every build, so that each test says why it skips.
INSTANTIATE_TEST_SUITE_P(Nccl, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(NcclBackend(),
                                                                            {LaunchedSize()})),
                         conformance::ConformanceParamName);

// ---- setup ------------------------------------------------------------------------

TEST(NcclSetupTest, UnbuiltBackendAnswersUnimplemented) {
  if (NcclBuilt()) GTEST_SKIP() << "NCCL is built";
  auto comm = CreateNcclCommunicator(nullptr);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnimplemented) << comm.status();
  EXPECT_TRUE(Contains(comm.status().message(), "--comm nccl")) << comm.status();
  EXPECT_EQ(VisibleGpuCount(), 0);
}

// Without a GPU, setup stops with a clear error before NCCL is asked for
// anything (a one-rank world: no launcher needed).
TEST(NcclSetupTest, NoGpuIsAClearError) {
  if (!NcclBuilt()) GTEST_SKIP() << "NCCL not built";
  if (VisibleGpuCount() > 0) GTEST_SKIP() << "a GPU is visible (the multi-GPU tests run)";
  std::unique_ptr<Bootstrap> self = CreateSelfBootstrap();
  auto comm = CreateNcclCommunicator(self.get());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition) << comm.status();
  EXPECT_TRUE(Contains(comm.status().message(), "rank 0: "));
  EXPECT_TRUE(Contains(comm.status().message(), "no CUDA device") ||
              Contains(comm.status().message(), "cannot load the NCCL library"))
      << comm.status();
  const std::string described = NcclDescription();
  EXPECT_TRUE(absl::StartsWith(described, "NCCL ") || Contains(described, "cannot load"))
      << described;
}

TEST(NcclSetupTest, BadTimeoutIsRefused) {
  if (!NcclBuilt()) GTEST_SKIP() << "NCCL not built";
  std::unique_ptr<Bootstrap> self = CreateSelfBootstrap();
  NcclOptions options;
  options.timeout = absl::Seconds(-1);
  EXPECT_EQ(CreateNcclCommunicator(self.get(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateNcclCommunicator(nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- fault tests and NCCL-specific behaviour -----------------------------------------

constexpr absl::Duration kWait = absl::Seconds(10);
constexpr absl::Duration kFaultTimeout = absl::Seconds(1);
constexpr absl::Duration kSlack = absl::Milliseconds(1500);

MessageMeta Meta(int step, int64_t bytes, int kind = 0) {
  MessageMeta meta;
  meta.step = step;
  meta.kind = kind;
  meta.dtype = 7;
  meta.ndim = 1;
  meta.shape[0] = bytes;
  return meta;
}

std::vector<uint8_t> Pattern(int origin, int step, int64_t bytes) {
  std::vector<uint8_t> out(static_cast<size_t>(bytes));
  for (int64_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(origin * 31 + step * 7 + i);
  return out;
}

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = SkipReason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  // Tests between ranks: not in the one-rank smoke run.
  bool NeedsPeers() const { return LaunchedSize() >= 2; }

  std::unique_ptr<NcclCommWorld> MakeWorld(absl::Duration timeout) {
    absl::StatusOr<std::unique_ptr<NcclCommWorld>> world = NcclCommWorld::Create(timeout);
    EXPECT_TRUE(world.ok()) << world.status();
    return world.ok() ? std::move(world).value() : nullptr;
  }
};

absl::Status Exchange(Communicator& c, conformance::Buffer& send, int64_t bytes, int step,
                      conformance::Buffer& recv, absl::Duration timeout) {
  const int next = (c.Rank() + 1) % c.Size(), prev = (c.Rank() + c.Size() - 1) % c.Size();
  auto request = c.SendRecv(send.data(), bytes, next, Meta(step, bytes), recv.data(), bytes, prev,
                            Meta(step, bytes));
  if (!request.ok()) return request.status();
  return (*request)->Wait(timeout);
}

TEST_F(NcclTest, HostMemoryIsRefusedNamingTheArgument) {
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kWait);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  const int next = (c.Rank() + 1) % c.Size(), prev = (c.Rank() + c.Size() - 1) % c.Size();
  conformance::Buffer device(*world, c, 64);
  std::vector<uint8_t> host(64);
  auto refused = c.SendRecv(host.data(), 64, next, Meta(0, 64), device.data(), 64, prev,
                            Meta(0, 64));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(Contains(refused.status().message(), "send buffer")) << refused.status();
  EXPECT_TRUE(Contains(refused.status().message(), "host memory")) << refused.status();
  refused = c.SendRecv(device.data(), 64, next, Meta(0, 64), host.data(), 64, prev, Meta(0, 64));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(Contains(refused.status().message(), "receive buffer")) << refused.status();
  // Zero-byte messages move no payload: host pointers are fine, and the
  // refused calls posted nothing (this step-0 exchange meets step 0).
  auto empty = c.SendRecv(host.data(), 0, next, Meta(0, 0), host.data() + 1, 0, prev, Meta(0, 0));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->Wait(kWait).ok());
  EXPECT_EQ(c.Name(), "nccl");
  EXPECT_GE(world->comm().Device(), 0);
  EXPECT_TRUE(Contains(world->comm().Description(), "NCCL ")) << world->comm().Description();
}

#if RINGATTN_NCCL_TEST_CUDA
TEST_F(NcclTest, AnotherGpusMemoryIsRefused) {
  if (VisibleGpuCount() < 2) GTEST_SKIP() << "this process sees one GPU";
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kWait);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  const int mine = world->comm().Device();
  const int other = (mine + 1) % VisibleGpuCount();
  void* elsewhere = nullptr;
  ASSERT_EQ(cudaSetDevice(other), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&elsewhere, 64), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(mine), cudaSuccess);
  auto refused = c.SendRecv(elsewhere, 64, c.Rank(), Meta(0, 64), elsewhere, 64, c.Rank(),
                            Meta(0, 64));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(Contains(refused.status().message(), absl::StrCat("memory of GPU ", other)))
      << refused.status();
  cudaFree(elsewhere);
}
#endif

// Abort is local: the aborting rank fails at once; its peers, which NCCL
// cannot tell, fail within their timeout naming a peer and the step.
TEST_F(NcclTest, AbortFailsThisRankAtOnceAndItsPeersWithinTheirTimeout) {
  if (!NeedsPeers()) GTEST_SKIP() << "needs 2 ranks";
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kFaultTimeout);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  const int aborter = c.Size() - 1;
  const int steps = c.Size() + 6;
  constexpr int64_t kBytes = 65536;
  conformance::Buffer send(*world, c, kBytes);
  conformance::Buffer recv(*world, c, kBytes);
  send.Write(Pattern(c.Rank(), 0, kBytes));
  absl::Status status;
  absl::Time aborted_at = absl::InfiniteFuture();
  const absl::Time start = absl::Now();
  int step = 0;
  for (; step < steps && status.ok(); ++step) {
    if (c.Rank() == aborter && step == 3) {
      aborted_at = absl::Now();
      c.Abort(absl::InternalError("injected fault"));
    }
    status = Exchange(c, send, kBytes, step, recv, kFaultTimeout);
  }
  ASSERT_FALSE(status.ok()) << "rank " << c.Rank() << " ran all " << steps << " steps";
  if (c.Rank() == aborter) {
    EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
    EXPECT_TRUE(Contains(status.message(), absl::StrCat("rank ", aborter, " aborted"))) << status;
    EXPECT_TRUE(Contains(status.message(), "injected fault")) << status;
    EXPECT_LE(absl::Now() - aborted_at, kSlack);
    // Later calls fail too, at once.
    const absl::Time later = absl::Now();
    EXPECT_EQ(c.Barrier(kWait).code(), absl::StatusCode::kAborted);
    EXPECT_EQ(Exchange(c, send, kBytes, steps, recv, kWait).code(), absl::StatusCode::kAborted);
    EXPECT_LE(absl::Now() - later, kSlack);
  } else {
    EXPECT_TRUE(status.code() == absl::StatusCode::kDeadlineExceeded ||
                status.code() == absl::StatusCode::kUnavailable ||
                status.code() == absl::StatusCode::kAborted)
        << status;
    EXPECT_TRUE(Contains(status.message(), "step ")) << status;
    EXPECT_TRUE(Contains(status.message(), "rank ")) << status;
    // At most a timed-out wait, and the destroyed request's own wait, past
    // the ring steps that worked.
    EXPECT_LE(absl::Now() - start, 2 * kFaultTimeout + 2 * kSlack);
  }
}

TEST_F(NcclTest, AbortWakesThisRanksPendingWait) {
  if (!NeedsPeers()) GTEST_SKIP() << "needs 2 ranks";
  // The short timeout bounds the peers' teardown (their finalize cannot
  // complete with rank 0 aborted).
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kFaultTimeout);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  if (c.Rank() == 0) {
    constexpr int64_t kBytes = 64;
    conformance::Buffer recv(*world, c, kBytes);
    recv.Fill(0xA5);
    {
      // Rank 1 never sends; another thread aborts while this one waits.
      auto request = c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), kBytes, 1,
                                Meta(5, kBytes));
      ASSERT_TRUE(request.ok()) << request.status();
      const absl::Time start = absl::Now();
      std::thread aborter([&c] {
        absl::SleepFor(absl::Milliseconds(100));
        c.Abort(absl::UnavailableError("node lost"));
      });
      const absl::Status status = (*request)->Wait(absl::Seconds(5));
      aborter.join();
      EXPECT_LE(absl::Now() - start, absl::Milliseconds(100) + kSlack);
      EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
      EXPECT_TRUE(Contains(status.message(), "rank 0 aborted")) << status;
      EXPECT_TRUE(Contains(status.message(), "node lost")) << status;
      EXPECT_EQ((*request)->Test().status().code(), absl::StatusCode::kAborted);
    }
    EXPECT_EQ(recv.Read(), std::vector<uint8_t>(kBytes, 0xA5)) << "bytes were written";
  }
}

// Ranks whose requests at the same place do not match (one sends and
// receives, the other only sends) both fail with InvalidArgument; the
// direction that does match still delivers, and the next round is sound.
TEST_F(NcclTest, DifferentPostingOrdersFailBothRanks) {
  if (!NeedsPeers()) GTEST_SKIP() << "needs 2 ranks";
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kWait);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  if (c.Rank() > 1) return;
  const int peer = 1 - c.Rank();
  constexpr int64_t kBytes = 4096;
  conformance::Buffer send(*world, c, kBytes);
  conformance::Buffer recv(*world, c, kBytes);
  send.Write(Pattern(c.Rank(), 1, kBytes));
  recv.Fill(0);
  absl::Status status;
  if (c.Rank() == 0) {
    auto request = c.SendRecv(send.data(), kBytes, peer, Meta(1, kBytes), recv.data(), kBytes,
                              peer, Meta(1, kBytes));
    ASSERT_TRUE(request.ok()) << request.status();
    status = (*request)->Wait(kWait);
    EXPECT_TRUE(Contains(status.message(), "rank 1's request at this place receives nothing"))
        << status;
    EXPECT_EQ(recv.Read(), Pattern(1, 1, kBytes)) << "the matching direction did not deliver";
  } else {
    auto request = c.SendRecv(send.data(), kBytes, peer, Meta(1, kBytes), nullptr, 0, 0,
                              MessageMeta{});
    ASSERT_TRUE(request.ok()) << request.status();
    status = (*request)->Wait(kWait);
    EXPECT_TRUE(Contains(status.message(), "but this request receives nothing from rank 0"))
        << status;
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  send.Write(Pattern(c.Rank(), 2, kBytes));
  auto again = c.SendRecv(send.data(), kBytes, peer, Meta(2, kBytes), recv.data(), kBytes, peer,
                          Meta(2, kBytes));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->Wait(kWait).ok());
  EXPECT_EQ(recv.Read(), Pattern(peer, 2, kBytes));
}

// Gathers to rank 0, one rank after another (tools/gather.h GatherToRoot):
// half requests in an order the in-order rule matches.
TEST_F(NcclTest, GatherToRankZeroInPostingOrder) {
  if (!NeedsPeers()) GTEST_SKIP() << "needs 2 ranks";
  std::unique_ptr<NcclCommWorld> world = MakeWorld(kWait);
  ASSERT_NE(world, nullptr);
  Communicator& c = world->comm();
  auto bytes_of = [](int r) { return int64_t{1000} * r + 3; };
  if (c.Rank() != 0) {
    conformance::Buffer send(*world, c, bytes_of(c.Rank()));
    send.Write(Pattern(c.Rank(), 3, bytes_of(c.Rank())));
    auto request = c.SendRecv(send.data(), bytes_of(c.Rank()), 0, Meta(3, bytes_of(c.Rank())),
                              nullptr, 0, 0, MessageMeta{});
    ASSERT_TRUE(request.ok()) << request.status();
    EXPECT_TRUE((*request)->Wait(kWait).ok());
    return;
  }
  for (int r = 1; r < c.Size(); ++r) {
    conformance::Buffer recv(*world, c, bytes_of(r));
    auto request = c.SendRecv(nullptr, 0, 0, MessageMeta{}, recv.data(), bytes_of(r), r,
                              Meta(3, bytes_of(r)));
    ASSERT_TRUE(request.ok()) << request.status();
    ASSERT_TRUE((*request)->Wait(kWait).ok()) << "from rank " << r;
    EXPECT_EQ(recv.Read(), Pattern(r, 3, bytes_of(r))) << "from rank " << r;
  }
}

}  // namespace
}  // namespace ringattn::comm
