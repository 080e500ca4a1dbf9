// The GPU ring's ORDER, on the CPU model of CUDA (tests/comm/nccl_model):
// runtime/ring.cc, runtime/cuda_backend.cc, comm/local/cuda_local.cc and
// comm/nccl/nccl_comm.cc, compiled against the model's headers, with the
// kernels run by the CPU kernels on the model's stream threads
// (model_kernels.cc). Streams are real threads and every stream operation
// is delayed at random (ModelSetJitter), so a transfer that does not wait
// for the kernel producing its bytes, a kernel that does not wait for a
// transfer, or a caller's stream that does not wait for the ring, reads
// stale or poisoned data here. The results must equal the CPU ring's
// (same kernels, one thread) bit for bit. Runs in every build, GPU or not;
// what it cannot say (real kernels, real NCCL, speed) is cuda_ring_test's
// and tools/gpu_check.sh's.
#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "attention/dtype.h"
#include "base/status.h"
#include "comm/local/cuda_local.h"
#include "comm/local/local_comm.h"
#include "comm/nccl/nccl_comm.h"
#include "gtest/gtest.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "tests/comm/nccl_model/thread_bootstrap.h"

namespace ringattn {
namespace {

// nccl_comm.cc dlopens "libnccl": here, the model (already loaded).
[[maybe_unused]] const bool kModelLibrary = [] {
  setenv("RINGATTN_NCCL_LIBRARY", RINGATTN_NCCL_MODEL_LIBRARY, 1);
  ModelSetJitter(200);
  ModelSetCopyTime(3000);  // transfers as slow as kernels, at times
  return true;
}();

constexpr int64_t kD = 64;
constexpr uint16_t kPoison = 0x7fc1;  // a bf16 NaN

enum class Comm { kCudaLocal, kLocal, kNccl };

struct Case {
  int world = 2;
  Sharding sharding = Sharding::kContiguous;
  bool causal = false;
  int64_t window = -1;  // window_left (and right when not causal)
  int64_t heads = 4, heads_k = 2;
  int64_t seqlen = 0;  // 0: 37 per rank (uneven across zigzag halves)
  bool docs = false;   // packed documents (the backend uploads them to the "device")
};

std::string Name(const Case& c) {
  return absl::StrCat("W", c.world, "_", ShardingName(c.sharding), c.causal ? "_causal" : "",
                      c.window >= 0 ? absl::StrCat("_window", c.window) : "", "_H", c.heads, "kv",
                      c.heads_k, c.docs ? "_docs" : "");
}

void PrintTo(const Case& c, std::ostream* os) { *os << Name(c); }

// One rank's tensors: inputs filled at random (per rank), outputs poisoned.
struct Shard {
  std::vector<uint16_t> q, k, v, dout, out, dq, dk, dv;
  std::vector<float> lse;
};

struct RingRun {
  std::vector<Shard> shards;
  std::vector<absl::Status> fwd, bwd;
};

int64_t SeqLen(const Case& c) { return c.seqlen > 0 ? c.seqlen : 37 * c.world; }

// The case's mask; its documents (tiny, empty, one across ranks) live in a
// static pool.
Mask MaskOf(const Case& c) {
  const Mask m = Mask::Window(c.window, c.causal ? -1 : c.window, c.causal);
  if (!c.docs) return m;
  static std::mutex mu;
  static std::map<int64_t, std::vector<int64_t>> pool;
  std::lock_guard<std::mutex> lock(mu);
  const int64_t S = SeqLen(c);
  std::vector<int64_t>& b = pool[S];
  if (b.empty()) b = {0, 5, 5, S / 3, S / 3 + 1, S - 10, S};
  return m.WithDocuments(b.data(), static_cast<int64_t>(b.size()));
}

std::vector<Shard> MakeShards(const Case& c) {
  auto layout = Layout::Create(c.sharding, SeqLen(c), c.world, 2, MaskOf(c));
  EXPECT_TRUE(layout.ok()) << layout.status();
  std::vector<Shard> shards(c.world);
  for (int r = 0; r < c.world; ++r) {
    const int64_t s = layout->ShardLength(r);
    std::mt19937 rng(1234 + r);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto random = [&](int64_t n) {
      std::vector<uint16_t> x(n);
      for (auto& e : x) e = FloatToBF16(normal(rng));
      return x;
    };
    Shard& sh = shards[r];
    sh.q = random(s * c.heads * kD);
    sh.k = random(s * c.heads_k * kD);
    sh.v = random(s * c.heads_k * kD);
    sh.dout = random(s * c.heads * kD);
    sh.out.assign(sh.q.size(), kPoison);
    sh.dq.assign(sh.q.size(), kPoison);
    sh.dk.assign(sh.k.size(), kPoison);
    sh.dv.assign(sh.k.size(), kPoison);
    sh.lse.assign(c.heads * s, NAN);
  }
  return shards;
}

// Per-rank hooks of a run on a caller's stream (null: the synchronous API).
struct CallerStreams {
  // Before the call: may queue work on `stream` (e.g. late inputs).
  std::function<void(int rank, cudaStream_t stream, Shard& shard)> before;
  bool enabled = false;
  // The synchronous calls (null stream), with `before` given the legacy
  // default stream (null), which they must follow.
  bool legacy_default = false;
};

// Runs forward and backward on every rank as threads, over `comm`.
RingRun RunRing(const Case& c, Backend backend, Comm comm, const CallerStreams& callers = {},
            absl::Duration timeout = absl::Seconds(30)) {
  RingRun run;
  run.shards = MakeShards(c);
  run.fwd.assign(c.world, absl::OkStatus());
  run.bwd.assign(c.world, absl::OkStatus());
  std::unique_ptr<comm::LocalWorld> local;
  std::vector<std::unique_ptr<comm::NcclCommunicator>> nccl;
  comm::LocalWorldOptions wo;
  wo.timeout = timeout;
  if (comm == Comm::kNccl) {
    for (auto& made : comm::MakeComms(c.world, timeout)) {
      if (!made.ok()) {
        ADD_FAILURE() << made.status();
        return run;
      }
      nccl.push_back(std::move(made).value());
    }
  } else {
    auto w = comm == Comm::kCudaLocal ? comm::CreateCudaLocalWorld(c.world, wo, 0)
                                      : comm::LocalWorld::Create(c.world, wo);
    if (!w.ok()) {
      ADD_FAILURE() << w.status();
      return run;
    }
    local = std::move(w).value();
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < c.world; ++r) {
    threads.emplace_back([&, r] {
      comm::Communicator* cm = local ? &local->Comm(r) : nccl[r].get();
      RingOptions opt;
      opt.seqlen = SeqLen(c);
      opt.sharding = c.sharding;
      opt.stripe = 2;
      opt.mask = MaskOf(c);
      opt.dtype = DType::kBFloat16;
      opt.timeout = timeout;
      opt.num_threads = 1;
      opt.backend = backend;
      if (!nccl.empty()) {
        ASSERT_TRUE(nccl[r]->MakeDeviceCurrent().ok());
        opt.device_index = nccl[r]->Device();
      }
      auto ring = RingAttention::Create(cm, opt);
      ASSERT_TRUE(ring.ok()) << ring.status();
      Shard& sh = run.shards[r];
      const int64_t s = (*ring)->ShardLength();
      const Device dev = backend == Backend::kCuda ? Device::kCuda : Device::kCpu;
      auto view = [&](std::vector<uint16_t>& x, int64_t h) {
        return TensorView::Contiguous(x.data(), DType::kBFloat16, {1, s, h, kD}, dev);
      };
      const TensorView lse = TensorView::Contiguous(sh.lse.data(), DType::kFloat32,
                                                    {1, c.heads, s}, dev);
      cudaStream_t stream = nullptr;
      if (callers.enabled) {
        ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
        if (callers.before) callers.before(r, stream, sh);
      } else if (callers.legacy_default && callers.before) {
        callers.before(r, nullptr, sh);
      }
      run.fwd[r] = (*ring)->ForwardOnStream(stream, view(sh.q, c.heads), view(sh.k, c.heads_k),
                                            view(sh.v, c.heads_k), view(sh.out, c.heads), lse);
      if (run.fwd[r].ok()) {
        run.bwd[r] = (*ring)->BackwardOnStream(
            stream, view(sh.q, c.heads), view(sh.k, c.heads_k), view(sh.v, c.heads_k),
            view(sh.out, c.heads), lse, view(sh.dout, c.heads), view(sh.dq, c.heads),
            view(sh.dk, c.heads_k), view(sh.dv, c.heads_k));
      }
      if (stream != nullptr) {
        // The results must be there for the caller's stream: snapshot them
        // from a stream operation, then poison the tensors (host) once the
        // stream has passed the snapshot.
        Shard snap;
        ModelLaunch(stream, [&snap, &sh] { snap = sh; });
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        // Stats after a call on a stream: waits for the kernels' timing.
        EXPECT_GE((*ring)->LastStats().compute_seconds, 0.0);
        sh = snap;
        ring->reset();  // drains the rank's stream before the caller's goes
        cudaStreamDestroy(stream);
      }
    });
  }
  for (auto& t : threads) t.join();
  return run;
}

void ExpectSameBits(const RingRun& got, const RingRun& want, const std::string& what) {
  ASSERT_EQ(got.shards.size(), want.shards.size());
  for (size_t r = 0; r < got.shards.size(); ++r) {
    ASSERT_TRUE(got.fwd[r].ok()) << what << " rank " << r << ": " << got.fwd[r];
    ASSERT_TRUE(got.bwd[r].ok()) << what << " rank " << r << ": " << got.bwd[r];
    const Shard& a = got.shards[r];
    const Shard& b = want.shards[r];
    EXPECT_EQ(a.out, b.out) << what << ": out of rank " << r;
    EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)))
        << what << ": lse of rank " << r;
    EXPECT_EQ(a.dq, b.dq) << what << ": dq of rank " << r;
    EXPECT_EQ(a.dk, b.dk) << what << ": dk of rank " << r;
    EXPECT_EQ(a.dv, b.dv) << what << ": dv of rank " << r;
  }
}

// The CPU ring's results; they contain no poison (every row is written).
RingRun Want(const Case& c) {
  RingRun want = RunRing(c, Backend::kCpu, Comm::kLocal);
  for (const Shard& sh : want.shards) {
    for (uint16_t x : sh.out) EXPECT_NE(x, kPoison);
    for (uint16_t x : sh.dk) EXPECT_NE(x, kPoison);
  }
  return want;
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (int w : {2, 3, 4}) {
    for (Sharding sh : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
      for (int m = 0; m < 3; ++m) {
        Case c;
        c.world = w;
        c.sharding = sh;
        c.causal = m >= 1;
        c.window = m == 2 ? 40 : -1;
        if ((w + m) % 2 == 1) c.heads_k = 1;  // MQA on half the cases
        cases.push_back(c);
      }
    }
  }
  for (Sharding sh : {Sharding::kZigzag, Sharding::kBalanced}) {
    Case c;
    c.world = sh == Sharding::kZigzag ? 3 : 4;
    c.sharding = sh;
    c.causal = true;
    c.docs = true;
    cases.push_back(c);
    c.causal = false;
    c.window = 20;
    cases.push_back(c);
  }
  return cases;
}

class RingModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(RingModelTest, CudaLocalStreamOrderedEqualsCpuRing) {
  const Case c = GetParam();
  ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kCudaLocal), Want(c), "cuda-local");
}

INSTANTIATE_TEST_SUITE_P(Cases, RingModelTest, ::testing::ValuesIn(AllCases()),
                         [](const auto& info) { return Name(info.param); });

TEST(RingModel, NcclStreamOrderedEqualsCpuRing) {
  for (Case c : {Case{2, Sharding::kZigzag, true}, Case{4, Sharding::kContiguous, false, 50},
                 Case{3, Sharding::kStriped, true, 30, 4, 1}}) {
    SCOPED_TRACE(Name(c));
    ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kNccl), Want(c), "nccl");
  }
}

// A communicator that is not stream ordered (plain local memcpy; the
// model's device memory is host memory): the ring synchronizes first.
TEST(RingModel, NotStreamOrderedCommSynchronizesFirst) {
  const Case c{3, Sharding::kZigzag, true};
  ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kLocal), Want(c), "local");
}

// On callers' streams whose own work writes the inputs late (after a
// delay, over poisoned tensors): the ring must start after it, and the
// snapshot the callers' streams take after the calls must see the results.
CallerStreams LateInputs() {
  CallerStreams callers;
  callers.enabled = true;
  callers.before = [](int rank, cudaStream_t stream, Shard& sh) {
    auto real = std::make_shared<Shard>(sh);
    for (auto* x : {&sh.q, &sh.k, &sh.v, &sh.dout}) x->assign(x->size(), kPoison);
    ModelLaunch(stream, [rank, real, &sh] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + 10 * rank));
      sh.q = real->q;
      sh.k = real->k;
      sh.v = real->v;
      sh.dout = real->dout;
    });
  };
  return callers;
}

TEST(RingModel, CallerStreamCudaLocal) {
  const Case c{3, Sharding::kZigzag, true, 60};
  ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kCudaLocal, LateInputs()), Want(c),
                 "cuda-local on callers' streams");
}

TEST(RingModel, CallerStreamNccl) {
  const Case c{2, Sharding::kStriped, false};
  ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kNccl, LateInputs()), Want(c),
                 "nccl on callers' streams");
}

// The synchronous API follows the legacy default stream (PyTorch's default
// stream), on which the inputs here are written late.
TEST(RingModel, SynchronousCallsFollowTheLegacyDefaultStream) {
  const Case c{3, Sharding::kStriped, true};
  CallerStreams legacy = LateInputs();
  legacy.enabled = false;
  legacy.legacy_default = true;
  ExpectSameBits(RunRing(c, Backend::kCuda, Comm::kCudaLocal, legacy), Want(c),
                 "cuda-local after the legacy stream");
}

TEST(RingModel, StreamOnCpuBackendIsRefused) {
  auto world = comm::LocalWorld::Create(1);
  ASSERT_TRUE(world.ok());
  RingOptions opt;
  opt.seqlen = 8;
  auto ring = RingAttention::Create(&(*world)->Comm(0), opt);
  ASSERT_TRUE(ring.ok()) << ring.status();
  std::vector<float> x(8 * kD), lse(8);
  const auto t = TensorView::Contiguous(x.data(), DType::kFloat32, {1, 8, 1, kD});
  const auto l = TensorView::Contiguous(lse.data(), DType::kFloat32, {1, 1, 8});
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const absl::Status s = (*ring)->ForwardOnStream(stream, t, t, t, t, l);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("stream"), absl::string_view::npos) << s;
  cudaStreamDestroy(stream);
}

// Request::WaitOnStream, below the ring: the host waits until the transfer
// is queued, not for its bytes, and the stream waits for the bytes. The
// bytes are held back until both ranks have returned from WaitOnStream and
// tested the request (still pending); then a stream operation queued after
// WaitOnStream must see them. `hold` holds them on one rank (before it
// posts), `release` lets them go.
void ExpectStreamWaitsForTheBytes(const std::vector<comm::Communicator*>& comms,
                                  const std::function<void(int, cudaStream_t)>& hold,
                                  const std::function<void()>& release,
                                  const std::function<void(int)>& make_current) {
  static constexpr int64_t kBytes = 1 << 16;
  const int world = static_cast<int>(comms.size());
  std::atomic<int> tested{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      // A rank that stops early (a failed ASSERT) still counts as tested,
      // so that the bytes are released and the other ranks end.
      bool counted = false;
      struct Count {
        std::atomic<int>& n;
        bool& done;
        ~Count() {
          if (!done) ++n;
        }
      } count{tested, counted};
      make_current(r);
      cudaStream_t stream = nullptr;
      ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
      unsigned char* send = nullptr;
      unsigned char* recv = nullptr;
      ASSERT_EQ(cudaMalloc(&send, kBytes), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&recv, kBytes), cudaSuccess);
      for (int64_t i = 0; i < kBytes; ++i) send[i] = static_cast<unsigned char>(i * 7 + r);
      std::memset(recv, 0xee, kBytes);  // the model's device memory is host memory
      hold(r, stream);
      comm::MessageMeta meta;
      meta.ndim = 1;
      meta.shape[0] = kBytes;
      const int to = (r + 1) % world, from = (r + world - 1) % world;
      auto req =
          comms[r]->SendRecvOnStream(stream, send, kBytes, to, meta, recv, kBytes, from, meta);
      ASSERT_TRUE(req.ok()) << req.status();
      EXPECT_TRUE((*req)->WaitOnStream(stream, absl::Seconds(10)).ok());
      auto done = (*req)->Test();
      ASSERT_TRUE(done.ok()) << done.status();
      EXPECT_FALSE(*done) << "rank " << r
                          << ": the bytes were held back, yet the request completed";
      std::vector<unsigned char> seen;
      ModelLaunch(stream, [&seen, recv] { seen.assign(recv, recv + kBytes); });
      counted = true;
      ++tested;
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_EQ(seen.size(), static_cast<size_t>(kBytes));
      for (int64_t i = 0; i < kBytes; ++i) {
        ASSERT_EQ(seen[i], static_cast<unsigned char>(i * 7 + from))
            << "rank " << r << " byte " << i;
      }
      EXPECT_TRUE((*req)->Wait(absl::Seconds(10)).ok());
      req->reset();
      cudaFree(send);
      cudaFree(recv);
      cudaStreamDestroy(stream);
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (tested.load() < world && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(tested.load(), world) << "ranks still in WaitOnStream after 30 s";
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the snapshots are queued
  release();
  for (auto& t : threads) t.join();
}

TEST(RingModel, CudaLocalWaitOnStreamQueuesTheWaitNotTheHost) {
  auto world = comm::CreateCudaLocalWorld(3, {}, 0);
  ASSERT_TRUE(world.ok()) << world.status();
  std::vector<comm::Communicator*> comms;
  for (int r = 0; r < 3; ++r) comms.push_back(&(*world)->Comm(r));
  ModelHoldCopies(true);  // the copier queues the copy, which then waits
  struct Release {
    ~Release() { ModelHoldCopies(false); }  // whatever happens, no later test is held
  } release;
  ExpectStreamWaitsForTheBytes(
      comms, [](int, cudaStream_t) {}, [] { ModelHoldCopies(false); }, [](int) {});
}

TEST(RingModel, NcclWaitOnStreamQueuesTheWaitNotTheHost) {
  std::vector<std::unique_ptr<comm::NcclCommunicator>> nccl;
  for (auto& made : comm::MakeComms(2, absl::Seconds(10))) {
    ASSERT_TRUE(made.ok()) << made.status();
    nccl.push_back(std::move(made).value());
  }
  std::vector<comm::Communicator*> comms{nccl[0].get(), nccl[1].get()};
  // Rank 0's stream is stuck before its post: the payload, which waits for
  // it on the device, cannot move; the control messages and the header
  // check need no stream.
  auto gate = std::make_shared<std::atomic<bool>>(false);
  ExpectStreamWaitsForTheBytes(
      comms,
      [gate](int rank, cudaStream_t stream) {
        if (rank != 0) return;
        ModelLaunch(stream, [gate] {
          while (!gate->load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
        });
      },
      [gate] { gate->store(true); },
      [&nccl](int rank) { ASSERT_TRUE(nccl[rank]->MakeDeviceCurrent().ok()); });
}

// A communicator whose first stream-ordered request fails after the ring's
// stream was made to wait for it: Test says pending, Wait the error. On a
// caller's stream the call returns first; the next call must report it.
class LateFailureComm final : public comm::Communicator {
 public:
  explicit LateFailureComm(comm::Communicator* inner) : inner_(inner) {}
  int Rank() const override { return inner_->Rank(); }
  int Size() const override { return inner_->Size(); }
  std::string Name() const override { return inner_->Name(); }
  absl::StatusOr<std::unique_ptr<comm::Request>> SendRecv(
      const void* send, int64_t send_bytes, int to, const comm::MessageMeta& send_meta, void* recv,
      int64_t recv_bytes, int from, const comm::MessageMeta& recv_meta) override {
    return inner_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  }
  bool StreamOrdered() const override { return inner_->StreamOrdered(); }
  absl::StatusOr<std::unique_ptr<comm::Request>> SendRecvOnStream(
      void* stream, const void* send, int64_t send_bytes, int to,
      const comm::MessageMeta& send_meta, void* recv, int64_t recv_bytes, int from,
      const comm::MessageMeta& recv_meta) override {
    auto r = inner_->SendRecvOnStream(stream, send, send_bytes, to, send_meta, recv, recv_bytes,
                                      from, recv_meta);
    if (!r.ok() || failed_once_) return r;
    failed_once_ = true;
    return std::unique_ptr<comm::Request>(new Failing(std::move(r).value()));
  }
  absl::Status Barrier(absl::Duration timeout) override { return inner_->Barrier(timeout); }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  int64_t BytesSent() const override { return inner_->BytesSent(); }

 private:
  class Failing final : public comm::Request {
   public:
    explicit Failing(std::unique_ptr<comm::Request> inner) : inner_(std::move(inner)) {}
    absl::StatusOr<bool> Test() override { return false; }
    absl::Status Wait(absl::Duration timeout) override {
      RETURN_IF_ERROR(inner_->Wait(timeout));
      return absl::DataLossError("injected: the transfer failed after it was queued");
    }
    absl::Status WaitOnStream(void* stream, absl::Duration timeout) override {
      return inner_->WaitOnStream(stream, timeout);
    }

   private:
    std::unique_ptr<comm::Request> inner_;
  };
  comm::Communicator* inner_;
  bool failed_once_ = false;
};

TEST(RingModel, TransferFailingAfterACallOnAStreamIsReportedByTheNextCall) {
  const Case c{2, Sharding::kContiguous, false};
  auto world = comm::CreateCudaLocalWorld(c.world, {}, 0);
  ASSERT_TRUE(world.ok()) << world.status();
  std::vector<Shard> shards = MakeShards(c);
  std::vector<absl::Status> first(c.world), second(c.world);
  std::vector<std::thread> threads;
  for (int r = 0; r < c.world; ++r) {
    threads.emplace_back([&, r] {
      LateFailureComm cm(&(*world)->Comm(r));
      RingOptions opt;
      opt.seqlen = SeqLen(c);
      opt.dtype = DType::kBFloat16;
      opt.backend = Backend::kCuda;
      opt.timeout = absl::Seconds(10);
      auto ring = RingAttention::Create(&cm, opt);
      ASSERT_TRUE(ring.ok()) << ring.status();
      Shard& sh = shards[r];
      const int64_t s = (*ring)->ShardLength();
      auto view = [&](std::vector<uint16_t>& x, int64_t h) {
        return TensorView::Contiguous(x.data(), DType::kBFloat16, {1, s, h, kD}, Device::kCuda);
      };
      const TensorView lse =
          TensorView::Contiguous(sh.lse.data(), DType::kFloat32, {1, c.heads, s}, Device::kCuda);
      cudaStream_t stream = nullptr;
      ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
      for (absl::Status* st : {&first[r], &second[r]}) {
        *st = (*ring)->ForwardOnStream(stream, view(sh.q, c.heads), view(sh.k, c.heads_k),
                                       view(sh.v, c.heads_k), view(sh.out, c.heads), lse);
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ring->reset();
      cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < c.world; ++r) {
    EXPECT_TRUE(first[r].ok()) << "rank " << r << ": " << first[r];
    // This rank's own failed transfer, or its peer's abort.
    EXPECT_FALSE(second[r].ok()) << "rank " << r;
  }
  for (int r = 0; r < c.world; ++r) {
    if (second[r].code() != absl::StatusCode::kDataLoss) continue;
    EXPECT_NE(second[r].message().find("ring step 0"), absl::string_view::npos) << second[r];
    EXPECT_NE(second[r].message().find("injected"), absl::string_view::npos) << second[r];
    return;
  }
  ADD_FAILURE() << "no rank reported the injected failure: " << second[0] << " / " << second[1];
}

// A caller's stream that never gets to the ring's work (blocked here until
// the test lets it go): the ranks fail within the timeout, naming the step,
// instead of hanging; nothing waits on the stuck stream in the meantime.
TEST(RingModel, StuckCallerStreamIsATimeoutNotAHang) {
  const Case c{2, Sharding::kContiguous, false};
  auto release = std::make_shared<std::atomic<bool>>(false);
  CallerStreams callers;
  callers.enabled = true;
  callers.before = [release](int rank, cudaStream_t stream, Shard&) {
    if (rank != 0) return;
    ModelLaunch(stream, [release] {
      while (!release->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  };
  std::thread releaser([release] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    release->store(true);
  });
  const auto start = std::chrono::steady_clock::now();
  const RingRun run = RunRing(c, Backend::kCuda, Comm::kCudaLocal, callers, absl::Seconds(1));
  releaser.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  for (int r = 0; r < c.world; ++r) {
    EXPECT_FALSE(run.fwd[r].ok()) << "rank " << r;
    EXPECT_NE(run.fwd[r].message().find("ring step 0"), absl::string_view::npos) << run.fwd[r];
  }
}

}  // namespace
}  // namespace ringattn
