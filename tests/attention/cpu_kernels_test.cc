// CPU kernels against the float64 reference: forward and backward over a
// sweep of lengths, head dims, GQA ratios, masks, softcap, dtypes, strides
// and global offsets; fully masked rows; NaN at masked-out keys; poisoned
// outputs; determinism.
#include <cmath>
#include <limits>
#include <vector>

#include "attention/cpu/kernels.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"

namespace ringattn::testing {
namespace {

constexpr int kThreads = 2;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

Mask Causal() { return Mask{true, -1, -1}; }
Mask Window(int64_t l, int64_t r) { return Mask{false, l, r}; }
Mask CausalWindow(int64_t l) { return Mask{true, l, -1}; }

struct ForwardResult {
  std::vector<float> out, lse;  // out contiguous, as float
};

ForwardResult RunForward(const Problem& pr, int threads = kThreads) {
  AttnParams p = pr.Params();
  const Case& c = pr.c;
  Tensor out = MakeTensor(std::vector<float>(c.batch * c.seqlen_q * c.heads * c.head_dim, kNaN),
                          c.batch, c.seqlen_q, c.heads, c.head_dim, c.dtype, c.strided);
  std::vector<float> lse(c.batch * c.heads * c.seqlen_q, kNaN);
  p.out = out.data();
  p.out_stride = out.stride;
  p.lse = lse.data();
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  EXPECT_TRUE(cpu::Forward(p, threads).ok());
  return {ToContiguous(out, c.batch, c.seqlen_q, c.heads, c.head_dim), lse};
}

Grads RunBackward(const Problem& pr, const std::vector<double>& out_ref,
                  const std::vector<double>& lse_ref, int threads = kThreads) {
  const Case& c = pr.c;
  std::vector<float> lse(lse_ref.begin(), lse_ref.end());
  std::vector<float> out(out_ref.begin(), out_ref.end());
  for (float& o : out) o = RoundTo(c.dtype, o);
  std::vector<float> dsum(lse.size());
  cpu::RowDot(pr.tdout.data(), pr.tdout.stride, c.dtype, out.data(),
              TensorStrides::Contiguous(c.seqlen_q, c.heads, c.head_dim), DType::kFloat32,
              dsum.data(), c.batch,
              c.seqlen_q, c.heads, c.head_dim, threads);
  Grads g;
  const AttnParams p = BackwardParams(pr, lse.data(), dsum.data(), &g);
  EXPECT_TRUE(cpu::Backward(p, threads).ok());
  for (auto* x : {&g.dq, &g.dk, &g.dv})
    for (float& val : *x) val = RoundTo(c.dtype, val);
  return g;
}

std::vector<Case> SweepCases() {
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(c); };
  // Odd lengths and S_q != S_k, every mask.
  for (Mask m : {Mask{}, Causal(), Window(16, 8), CausalWindow(33), Window(-1, 5), Window(20, -1)}) {
    for (auto [sq, sk] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {7, 7}, {129, 129}, {1000, 1000}, {129, 300}, {300, 65}}) {
      Case c;
      c.seqlen_q = sq;
      c.seqlen_k = sk;
      c.mask = m;
      c.heads = 2;
      c.heads_k = 1;
      c.head_dim = sq * sk > 100000 ? 32 : 64;
      c.heads = sq * sk > 100000 ? 1 : 2;
      add(c);
    }
  }
  // Head dims, both dtypes, with the causal mask.
  for (int64_t d : {32, 64, 80, 96, 128, 256})
    for (DType t : {DType::kFloat32, DType::kBFloat16}) {
      Case c;
      c.seqlen_q = 130;
      c.seqlen_k = 200;
      c.head_dim = d;
      c.dtype = t;
      c.mask = Causal();
      c.k_pos = PosKind::kFromZero;
      c.q_pos = PosKind::kOffset;
      add(c);
    }
  // GQA ratios.
  for (int64_t ratio : {1, 2, 4, 8}) {
    Case c;
    c.heads = 8;
    c.heads_k = 8 / ratio;
    c.seqlen_q = 97;
    c.seqlen_k = 150;
    c.head_dim = 32;
    c.mask = Window(40, 3);
    add(c);
  }
  // Softcap, bf16, batch, strides.
  for (DType t : {DType::kFloat32, DType::kBFloat16})
    for (Mask m : {Mask{}, Causal()}) {
      Case c;
      c.batch = 2;
      c.seqlen_q = 150;
      c.seqlen_k = 150;
      c.softcap = 1.5f;
      c.dtype = t;
      c.mask = m;
      c.strided = true;
      add(c);
    }
  // Global offsets as a sharded rank sees them: offsets, zigzag, striped.
  for (PosKind qk : {PosKind::kOffset, PosKind::kTwoRanges, PosKind::kStriped})
    for (PosKind kk : {PosKind::kFromZero, PosKind::kTwoRanges, PosKind::kStriped})
      for (Mask m : {Causal(), Window(50, 10)}) {
        Case c;
        c.seqlen_q = 150;
        c.seqlen_k = 170;
        c.head_dim = 32;
        c.q_pos = qk;
        c.k_pos = kk;
        c.mask = m;
        add(c);
      }
  // Packed documents (with every rule), prefix-LM, on contiguous, zigzag and
  // striped positions; GQA, softcap and bf16.
  for (DocKind dk : {DocKind::kTiny, DocKind::kMixed, DocKind::kTileEdges})
    for (Mask m : {Mask{}, Causal(), Window(30, 5), CausalWindow(20), Mask::PrefixLM(100)})
      for (PosKind pk : {PosKind::kFromZero, PosKind::kTwoRanges, PosKind::kStriped}) {
        Case c;
        c.seqlen_q = 300;
        c.seqlen_k = 300;
        c.heads = 4;
        c.heads_k = 2;
        c.head_dim = 32;
        c.q_pos = pk;
        c.k_pos = pk;
        c.mask = WithTestDocuments(m, dk);
        c.dtype = pk == PosKind::kStriped ? DType::kBFloat16 : DType::kFloat32;
        c.softcap = dk == DocKind::kMixed ? 2.0f : 0.0f;
        add(c);
      }
  // Attention sinks (two intervals per row): a few sink tokens and more
  // than a tile of them, with documents, on sharded positions.
  for (Mask m : {Mask::Sink(4, 30), Mask::Sink(70, 20), WithTestDocuments(Mask::Sink(5, 25), DocKind::kMixed),
                 Mask{false, 40, 10, 0, nullptr, 0, 3}})
    for (PosKind pk : {PosKind::kFromZero, PosKind::kOffset, PosKind::kTwoRanges, PosKind::kStriped}) {
      Case c;
      c.seqlen_q = 260;
      c.seqlen_k = 300;
      c.heads = 4;
      c.heads_k = 1;
      c.head_dim = 32;
      c.q_pos = pk;
      c.k_pos = pk == PosKind::kOffset ? PosKind::kFromZero : pk;
      c.mask = m;
      c.dtype = pk == PosKind::kStriped ? DType::kBFloat16 : DType::kFloat32;
      c.softcap = pk == PosKind::kTwoRanges ? 2.0f : 0.0f;
      add(c);
    }
  // Block masks of every kind, ANDed with the other rules: blocks smaller
  // than a tile (partial tiles, per-element bits), tile-sized, and not
  // aligned to tiles; per-head masks with GQA; sharded positions.
  struct BlockCase {
    Mask m;
    int64_t size;
  };
  for (BlockKind bk : {BlockKind::kRandom, BlockKind::kAllOff, BlockKind::kAllOn, BlockKind::kDiagonal})
    for (const BlockCase& bc : {BlockCase{Mask{}, 64}, BlockCase{Causal(), 16},
                                BlockCase{WithTestDocuments(Window(40, 8), DocKind::kMixed), 50},
                                BlockCase{Mask::Sink(5, 30), 32}})
      for (PosKind pk : {PosKind::kFromZero, PosKind::kTwoRanges, PosKind::kStriped}) {
        if (bk != BlockKind::kRandom && pk != PosKind::kTwoRanges) continue;
        Case c;
        c.seqlen_q = 260;
        c.seqlen_k = 300;
        c.heads = 4;
        c.heads_k = 2;
        c.head_dim = 32;
        c.q_pos = pk;
        c.k_pos = pk;
        c.mask = WithTestBlocks(bc.m, bk, bc.size, bk == BlockKind::kRandom && bc.size == 16 ? 4 : 1);
        c.dtype = pk == PosKind::kStriped ? DType::kBFloat16 : DType::kFloat32;
        c.softcap = bc.size == 50 ? 2.0f : 0.0f;
        add(c);
      }
  for (int64_t prefix : {1, 63, 64, 150}) {
    Case c;
    c.seqlen_q = 200;
    c.seqlen_k = 200;
    c.head_dim = 32;
    c.mask = Mask::PrefixLM(prefix);
    add(c);
  }
  return cases;
}

class CpuKernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuKernelTest, ForwardMatchesReference) {
  const Problem pr = MakeProblem(GetParam(), 1234);
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  std::vector<float> out_naive, lse_naive;
  NaiveForward(pr, &out_naive, &lse_naive);
  const ForwardResult r = RunForward(pr);
  const DType t = pr.c.dtype;
  const double tol_out = Tolerance(MaxError(out_naive, out_ref), t);
  const double tol_lse = Tolerance(MaxError(lse_naive, lse_ref), DType::kFloat32);
  EXPECT_LE(MaxError(r.out, out_ref), tol_out);
  EXPECT_LE(MaxError(r.lse, lse_ref), tol_lse);
  for (float o : r.out) ASSERT_FALSE(std::isnan(o)) << "output not written";
  for (float l : r.lse) ASSERT_FALSE(std::isnan(l)) << "lse not written";
}

TEST_P(CpuKernelTest, BackwardMatchesReference) {
  const Problem pr = MakeProblem(GetParam(), 99);
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref,
                    &dk_ref, &dv_ref);
  std::vector<float> dq_n, dk_n, dv_n;
  NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
  const Grads g = RunBackward(pr, out_ref, lse_ref);
  const DType t = pr.c.dtype;
  EXPECT_LE(MaxError(g.dq, dq_ref), Tolerance(MaxError(dq_n, dq_ref), t));
  EXPECT_LE(MaxError(g.dk, dk_ref), Tolerance(MaxError(dk_n, dk_ref), t));
  EXPECT_LE(MaxError(g.dv, dv_ref), Tolerance(MaxError(dv_n, dv_ref), t));
}

INSTANTIATE_TEST_SUITE_P(Sweep, CpuKernelTest, ::testing::ValuesIn(SweepCases()),
                         [](const auto& info) { return info.param.Name(); });

TEST(CpuKernel, FullyMaskedRowsGiveZeroAndNegInf) {
  Case c;
  c.seqlen_q = 70;
  c.seqlen_k = 90;
  c.q_pos = PosKind::kFromZero;
  c.k_pos = PosKind::kOffset;  // keys start at 39: queries 0..38 see nothing
  c.mask = Causal();
  const Problem pr = MakeProblem(c, 5);
  const ForwardResult r = RunForward(pr);
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t i = 0; i < c.seqlen_q; ++i) {
      const bool empty = pr.qmap.Global(i) < pr.kmap.Global(0);
      const float lse = r.lse[h * c.seqlen_q + i];
      if (empty) {
        EXPECT_EQ(lse, -INFINITY) << "row " << i;
        for (int64_t d = 0; d < c.head_dim; ++d)
          EXPECT_EQ(r.out[(i * c.heads + h) * c.head_dim + d], 0.0f);
      } else {
        EXPECT_TRUE(std::isfinite(lse)) << "row " << i;
      }
    }
  // Backward of fully masked rows: zero gradient, no NaN.
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  const Grads g = RunBackward(pr, out_ref, lse_ref);
  for (const auto* x : {&g.dq, &g.dk, &g.dv})
    for (float val : *x) ASSERT_TRUE(std::isfinite(val));
}

// NaN and Inf in K and V at keys no query may see (causal future, outside a
// window) must not reach out, lse, dq, dk or dv.
TEST(CpuKernel, NonFiniteAtMaskedKeysStaysOut) {
  for (Mask m : {Causal(), Window(10, 0), CausalWindow(5), Mask::Sink(3, 10)}) {
    const Problem pr = NonFiniteAtMaskedKeys(m, 64, DType::kFloat32);
    const ForwardResult r = RunForward(pr);
    std::vector<double> out_ref(r.out.begin(), r.out.end()), lse_ref(r.lse.begin(), r.lse.end());
    const Grads g = RunBackward(pr, out_ref, lse_ref);
    EXPECT_TRUE(MaskedKeysStayedOut(pr, r.out, r.lse, g)) << m.ToString();
  }
  // Blocks of 50: queries 0..99 are block rows 0 and 1; only key blocks 0
  // and 1 are on, so key 101 (block 2) is masked by the block mask alone,
  // in a tile that holds visible keys.
  static const std::vector<uint8_t> bits = [] {
    std::vector<uint8_t> b(41 * 41, 0);
    for (int64_t a = 0; a < 41; ++a) b[a * 41] = b[a * 41 + 1] = 1;
    return b;
  }();
  for (Mask m : {Mask{}, Window(120, 120)}) {
    const Problem pr = NonFiniteAtMaskedKeys(m.WithBlocks(bits.data(), 1, 41, 41, 50), 64,
                                             DType::kFloat32);
    const ForwardResult r = RunForward(pr);
    std::vector<double> out_ref(r.out.begin(), r.out.end()), lse_ref(r.lse.begin(), r.lse.end());
    const Grads g = RunBackward(pr, out_ref, lse_ref);
    EXPECT_TRUE(MaskedKeysStayedOut(pr, r.out, r.lse, g)) << pr.c.mask.ToString();
  }
}

TEST(CpuKernel, DeterministicAcrossRuns) {
  Case c;
  c.batch = 1;
  c.heads = 4;
  c.heads_k = 1;
  c.seqlen_q = 333;
  c.seqlen_k = 333;
  c.mask = Causal();
  c.dtype = DType::kBFloat16;
  const Problem pr = MakeProblem(c, 8);
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  const ForwardResult a = RunForward(pr), b = RunForward(pr);
  const Grads ga = RunBackward(pr, out_ref, lse_ref), gb = RunBackward(pr, out_ref, lse_ref);
  EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4));
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4));
  EXPECT_EQ(ga.dq, gb.dq);
  EXPECT_EQ(ga.dk, gb.dk);
  EXPECT_EQ(ga.dv, gb.dv);
}

// A single thread and many threads agree within the tolerance (the backward
// splits key tiles over classes when heads are few).
TEST(CpuKernel, ThreadCountsAgree) {
  Case c;
  c.heads = 2;
  c.heads_k = 1;
  c.seqlen_q = 260;
  c.seqlen_k = 260;
  c.mask = Window(70, 0);
  const Problem pr = MakeProblem(c, 4);
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref,
                    &dk_ref, &dv_ref);
  for (int threads : {1, 3, 8}) {
    const Grads g = RunBackward(pr, out_ref, lse_ref, threads);
    EXPECT_LE(MaxError(g.dq, dq_ref), 1e-4) << threads;
    EXPECT_LE(MaxError(g.dk, dk_ref), 1e-4) << threads;
    const ForwardResult r = RunForward(pr, threads);
    EXPECT_LE(MaxError(r.out, out_ref), 1e-5) << threads;
  }
}

TEST(CpuKernel, RejectsBadParams) {
  const Problem pr = MakeProblem(Case{}, 1);
  AttnParams p = pr.Params();
  std::vector<float> out(64 * 2 * 64), lse(2 * 64);
  p.out = out.data();
  p.lse = lse.data();
  p.num_heads_k = 3;
  EXPECT_EQ(cpu::Forward(p, 1).code(), absl::StatusCode::kInvalidArgument);
  p.num_heads_k = 2;
  p.scale = NAN;
  EXPECT_EQ(cpu::Forward(p, 1).code(), absl::StatusCode::kInvalidArgument);
  p.scale = 1.0f;
  p.dtype = DType::kFloat16;
  EXPECT_EQ(cpu::Forward(p, 1).code(), absl::StatusCode::kUnimplemented);
  p.dtype = DType::kFloat32;
  p.q = nullptr;
  EXPECT_EQ(cpu::Forward(p, 1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ringattn::testing
