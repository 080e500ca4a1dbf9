// The ring on the CUDA backend over `cuda-local` (W virtual ranks on GPU 0)
// against the float64 reference, by flash-attn's rule: forward and backward
// for W in {1, 2, 3, 4, 8}, every layout and mask (none, causal, window,
// causal + window), bf16 and fp16, head dims 64 and 128 (and 256 with
// softcap), MHA and GQA
// (H = 4, Hkv = 2 and 1), uneven lengths, batch 2, softcap, empty shards;
// the deterministic backward bitwise equal run after run; the calls on
// callers' streams (inputs written late on them); the refusals of
// tensors the CUDA backend cannot take. Label gpu: without a device every
// test is skipped with "no CUDA device".
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "attention/cuda/kernels.h"
#include "base/cuda_memory.h"
#include "comm/local/cuda_local.h"
#include "gtest/gtest.h"
#include "runtime/ringattn.h"
#include "tests/attention/attn_test_util.h"
#include "tests/runtime/ring_test_util.h"

namespace ringattn::testing {
namespace {

#define SKIP_WITHOUT_DEVICE() \
  if (!cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device"

RingRunOptions OnCuda(bool deterministic = false) {
  RingRunOptions o;
  o.backend = Backend::kCuda;
  o.deterministic = deterministic;
  return o;
}

// S per world size: divisible by neither W nor 2W; shards from ~75 to 301
// rows, so that they end inside the kernels' 64- and 128-row tiles.
int64_t SeqLen(int world) {
  switch (world) {
    case 1: return 301;
    case 2: return 333;
    case 3: return 425;
    case 4: return 461;
    default: return 613;
  }
}

std::vector<RingCase> CudaRingCases() {
  std::vector<RingCase> cases;
  const Mask masks[] = {Mask{}, Mask{true, -1, -1}, Mask{false, 64, 16}, Mask{true, 100, -1}};
  const int64_t kv_heads[] = {4, 2, 1};
  int group = 0;  // one (W, sharding) pair: dtype, head dim, GQA and batch rotate
  for (int world : {1, 2, 3, 4, 8})
    for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
      for (int m = 0; m < 4; ++m) {
        RingCase rc;
        rc.world = world;
        rc.sharding = s;
        rc.c.mask = masks[m];
        rc.c.seqlen_q = rc.c.seqlen_k = SeqLen(world);
        rc.c.batch = group % 4 == 1 ? 2 : 1;
        rc.c.heads = 4;
        rc.c.heads_k = kv_heads[group % 3];
        rc.c.head_dim = ((m >> 1) + group / 2) % 2 == 0 ? 64 : 128;
        rc.c.dtype = (m + group) % 2 == 0 ? DType::kBFloat16 : DType::kFloat16;
        cases.push_back(rc);
      }
      ++group;
    }
  // Softcap.
  {
    RingCase rc;
    rc.world = 4;
    rc.sharding = Sharding::kZigzag;
    rc.c.seqlen_q = rc.c.seqlen_k = SeqLen(4);
    rc.c.heads = 4;
    rc.c.heads_k = 2;
    rc.c.head_dim = 128;
    rc.c.mask = Mask{true, -1, -1};
    rc.c.softcap = 5.0f;
    rc.c.dtype = DType::kBFloat16;
    cases.push_back(rc);
    rc.c.head_dim = 256;  // Gemma's shape: head dim 256 with softcap
    cases.push_back(rc);
    rc.world = 3;
    rc.sharding = Sharding::kStriped;
    rc.c.seqlen_q = rc.c.seqlen_k = SeqLen(3);
    rc.c.head_dim = 64;
    rc.c.mask = Mask{false, 64, 16};
    rc.c.dtype = DType::kFloat16;
    cases.push_back(rc);
  }
  // S < W: empty shards on some ranks.
  for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
    RingCase rc;
    rc.world = 8;
    rc.sharding = s;
    rc.c.seqlen_q = rc.c.seqlen_k = 5;
    rc.c.heads = 4;
    rc.c.heads_k = 2;
    rc.c.head_dim = 64;
    rc.c.mask = Mask{true, -1, -1};
    rc.c.dtype = DType::kBFloat16;
    cases.push_back(rc);
  }
  // Long shards (several 128-row tiles per block pair).
  {
    RingCase rc;
    rc.world = 2;
    rc.sharding = Sharding::kZigzag;
    rc.c.seqlen_q = rc.c.seqlen_k = 699;
    rc.c.heads = 2;
    rc.c.heads_k = 2;
    rc.c.head_dim = 128;
    rc.c.mask = Mask{true, -1, -1};
    rc.c.dtype = DType::kFloat16;
    cases.push_back(rc);
  }
  return cases;
}

class CudaRingTest : public ::testing::TestWithParam<RingCase> {};

TEST_P(CudaRingTest, MatchesReferenceForwardAndBackward) {
  SKIP_WITHOUT_DEVICE();
  const RingCase& rc = GetParam();
  const Problem pr = MakeProblem(rc.c, 77);
  const RingResult r = RunRing(pr, rc.world, rc.sharding, OnCuda());
  ASSERT_TRUE(r.Ok().ok()) << r.Ok();
  ExpectClose(r, Expect(pr));
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaRingTest, ::testing::ValuesIn(CudaRingCases()),
                         [](const auto& info) { return info.param.Name(); });

Case DeterminismCase(DType t, int64_t d, int64_t heads_k, Mask m) {
  Case c;
  c.seqlen_q = c.seqlen_k = SeqLen(4);
  c.heads = 4;
  c.heads_k = heads_k;
  c.head_dim = d;
  c.mask = m;
  c.dtype = t;
  return c;
}

void ExpectBitwiseEqual(const std::vector<float>& a, const std::vector<float>& b,
                        const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
}

struct DeterminismSetup {
  Case c;
  int world;
  Sharding sharding;
};
const DeterminismSetup kDeterminismSetups[] = {
    {DeterminismCase(DType::kBFloat16, 128, 1, Mask{true, -1, -1}), 4, Sharding::kZigzag},
    {DeterminismCase(DType::kFloat16, 64, 2, Mask{false, 64, 16}), 3, Sharding::kStriped},
    {DeterminismCase(DType::kBFloat16, 256, 2, Mask{true, 100, -1}), 2, Sharding::kZigzag},
};

// Both ran, met the reference, and gave the same bits.
void ExpectSameBitsAndClose(const Problem& pr, const RingResult& a, const RingResult& b) {
  ASSERT_TRUE(a.Ok().ok()) << a.Ok();
  ASSERT_TRUE(b.Ok().ok()) << b.Ok();
  ExpectBitwiseEqual(a.out, b.out, "out");
  ExpectBitwiseEqual(a.lse, b.lse, "lse");
  ExpectBitwiseEqual(a.dq, b.dq, "dq");
  ExpectBitwiseEqual(a.dk, b.dk, "dk");
  ExpectBitwiseEqual(a.dv, b.dv, "dv");
  ExpectClose(a, Expect(pr));
}

// deterministic = true: two runs give the same bits (dQ without atomics),
// and the results still meet the reference.
// Every strategy on the GPU (cuda-local, stream-ordered collectives):
// all-gather, Ulysses with an uneven GQA head split, hybrid:2x2, against
// float64, bf16 and fp16, causal and windowed.
TEST(CudaRing, EveryStrategyMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (auto [strategy, ulysses] : {std::pair{Strategy::kAllGather, 0},
                                     std::pair{Strategy::kUlysses, 0},
                                     std::pair{Strategy::kHybrid, 2}})
      for (const Mask& m : {Mask{true, -1, -1}, Mask{true, 300, 0}}) {
        Case c;
        c.seqlen_q = c.seqlen_k = SeqLen(4);
        c.heads = 6;
        c.heads_k = 2;
        c.head_dim = 128;
        c.mask = m;
        c.dtype = t;
        SCOPED_TRACE(absl::StrCat(StrategySpecName(strategy, ulysses, 4), " ", DTypeName(t), " ",
                                  m.ToString()));
        const Problem pr = MakeProblem(c, 12);
        RingRunOptions o = OnCuda();
        o.tweak = [strategy, ulysses](int, RingOptions* opt, int64_t*) {
          opt->strategy = strategy;
          opt->ulysses = ulysses;
        };
        const RingResult r = RunRing(pr, 4, Sharding::kZigzag, o);
        ASSERT_TRUE(r.Ok().ok()) << r.Ok();
        ExpectClose(r, Expect(pr));
      }
}

TEST(CudaRing, DeterministicBackwardIsBitwiseReproducible) {
  SKIP_WITHOUT_DEVICE();
  for (const DeterminismSetup& s : kDeterminismSetups) {
    SCOPED_TRACE(s.c.Name());
    const Problem pr = MakeProblem(s.c, 5);
    ExpectSameBitsAndClose(pr, RunRing(pr, s.world, s.sharding, OnCuda(/*deterministic=*/true)),
                           RunRing(pr, s.world, s.sharding, OnCuda(/*deterministic=*/true)));
  }
}

// On callers' streams (ForwardOnStream / BackwardOnStream): the inputs
// arrive on each caller's stream after a delay, over poisoned tensors, and
// the results are read back on that stream; the deterministic backward
// gives the same bits as the synchronous calls.
TEST(CudaRing, CallersStreamsOrderTheRing) {
  SKIP_WITHOUT_DEVICE();
  for (const DeterminismSetup& s : kDeterminismSetups) {
    SCOPED_TRACE(s.c.Name());
    const Problem pr = MakeProblem(s.c, 6);
    RingRunOptions on_stream = OnCuda(/*deterministic=*/true);
    on_stream.caller_stream = true;
    ExpectSameBitsAndClose(pr, RunRing(pr, s.world, s.sharding, on_stream),
                           RunRing(pr, s.world, s.sharding, OnCuda(/*deterministic=*/true)));
  }
}

// One rank of a one-rank cuda ring, for the refusals.
class CudaRingApi : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_DEVICE();
    auto world = comm::CreateCudaLocalWorld(1);
    ASSERT_TRUE(world.ok()) << world.status();
    world_ = std::move(world).value();
  }
  absl::StatusOr<std::unique_ptr<RingAttention>> Create(RingOptions opt) {
    opt.seqlen = kS;
    opt.backend = Backend::kCuda;
    return RingAttention::Create(&world_->Comm(0), opt);
  }
  static constexpr int64_t kS = 64;
  std::unique_ptr<comm::LocalWorld> world_;
};

TEST_F(CudaRingApi, RefusesWhatTheKernelsCannotTake) {
  RingOptions opt;
  opt.dtype = DType::kFloat32;
  auto fp32 = Create(opt);
  ASSERT_FALSE(fp32.ok());
  EXPECT_EQ(fp32.status().code(), absl::StatusCode::kUnimplemented) << fp32.status();
  EXPECT_TRUE(absl::StrContains(fp32.status().message(), "dtype")) << fp32.status();

  opt.dtype = DType::kBFloat16;
  auto ring = Create(opt);
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_TRUE(absl::StrContains((*ring)->BackendDescription(), "cuda"))
      << (*ring)->BackendDescription();
  const int64_t H = 2, D = 64;
  auto buf = cuda::DeviceBuffer::Allocate(4 * kS * H * 128 * 2 + 64);
  ASSERT_TRUE(buf.ok()) << buf.status();
  ASSERT_TRUE(cuda::Fill(buf->data(), 0, buf->size()).ok());
  ASSERT_TRUE(cuda::Synchronize(nullptr).ok());  // the ring's stream does not wait for memset
  auto lse = cuda::DeviceBuffer::Allocate(H * kS * 4);
  ASSERT_TRUE(lse.ok()) << lse.status();
  char* base = buf->as<char>();
  auto V = [&](void* p, int64_t d, Device dev = Device::kCuda) {
    return TensorView::Contiguous(p, DType::kBFloat16, {1, kS, H, d}, dev);
  };
  const TensorView lv =
      TensorView::Contiguous(lse->data(), DType::kFloat32, {1, H, kS}, Device::kCuda);
  const TensorView good = V(base, D);
  // Host tensors.
  std::vector<uint16_t> host(kS * H * D);
  absl::Status s = (*ring)->Forward(V(host.data(), D, Device::kCpu), good, good, good, lv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "q device: expected cuda, got cpu")) << s;
  // Head dim 32.
  s = (*ring)->Forward(V(base, 32), V(base, 32), V(base, 32), V(base, 32), lv);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "head dim")) << s;
  // q not 16-byte aligned.
  s = (*ring)->Forward(V(base + 2, D), good, good, good, lv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "q: the CUDA kernels read 16-byte rows")) << s;
  // The same views are fine.
  s = (*ring)->Forward(good, good, good, V(base + kS * H * D * 2, D), lv);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(CudaRing, CpuBackendRefusesDeviceTensors) {
  SKIP_WITHOUT_DEVICE();
  auto world = comm::LocalWorld::Create(1);
  ASSERT_TRUE(world.ok());
  RingOptions opt;
  opt.seqlen = 16;
  opt.num_threads = 1;
  auto ring = RingAttention::Create(&(*world)->Comm(0), opt);
  ASSERT_TRUE(ring.ok()) << ring.status();
  auto buf = cuda::DeviceBuffer::Allocate(16 * 64 * 4);
  ASSERT_TRUE(buf.ok());
  std::vector<float> host(16 * 64), lse(16);
  const TensorView dq =
      TensorView::Contiguous(buf->data(), DType::kFloat32, {1, 16, 1, 64}, Device::kCuda);
  const TensorView hv = TensorView::Contiguous(host.data(), DType::kFloat32, {1, 16, 1, 64});
  const absl::Status s = (*ring)->Forward(
      dq, hv, hv, hv, TensorView::Contiguous(lse.data(), DType::kFloat32, {1, 1, 16}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "q device: expected cpu, got cuda")) << s;
}

}  // namespace
}  // namespace ringattn::testing
