// Merging partial (out, lse) over key blocks: splitting the keys into 1..8
// blocks in any order and merging gives the one-block result; -inf is safe.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "attention/cpu/kernels.h"
#include "attention/merge.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"

namespace ringattn::testing {
namespace {

TEST(MergeRow, NegInfIsNoContributionAndNaNIsNeverDropped) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  RowMerge m = MergeRow(-INFINITY, -INFINITY);
  EXPECT_EQ(m.kind, MergeKind::kZero);
  EXPECT_EQ(m.lse, -INFINITY);
  EXPECT_EQ(MergeValue(m, nan, nan), 0.0f);
  m = MergeRow(-INFINITY, 1.5f);
  EXPECT_EQ(m.kind, MergeKind::kTake);
  EXPECT_EQ(m.lse, 1.5f);
  EXPECT_EQ(MergeValue(m, 7.0f, 2.0f), 2.0f);
  m = MergeRow(1.5f, -INFINITY);
  EXPECT_EQ(m.kind, MergeKind::kKeep);
  EXPECT_EQ(MergeValue(m, 7.0f, nan), 7.0f);  // a partial that saw nothing
  m = MergeRow(0.0f, 0.0f);
  EXPECT_FLOAT_EQ(m.lse, std::log(2.0f));
  EXPECT_FLOAT_EQ(m.w_a, 0.5f);
  EXPECT_FLOAT_EQ(MergeValue(m, 1.0f, 3.0f), 2.0f);
  // A NaN lse (a NaN or Inf at a visible position) makes the row NaN,
  // whatever the other side holds -- -inf included.
  for (float other : {-INFINITY, 0.0f, 80.0f, INFINITY}) {
    for (const RowMerge& n : {MergeRow(nan, other), MergeRow(other, nan)}) {
      EXPECT_EQ(n.kind, MergeKind::kNaN);
      EXPECT_TRUE(std::isnan(n.lse));
      EXPECT_TRUE(std::isnan(MergeValue(n, 1.0f, 1.0f)));
    }
  }
  // A weight that underflows still multiplies: 0 * NaN stays NaN, as in
  // the one-device kernel's P V.
  m = MergeRow(0.0f, -200.0f);
  EXPECT_EQ(m.w_b, 0.0f);
  EXPECT_TRUE(std::isnan(MergeValue(m, 1.0f, nan)));
}

class MergeSplitTest : public ::testing::TestWithParam<int> {};

// Keys split into n contiguous blocks, computed separately (each block sees
// its global positions) and merged in a shuffled order.
TEST_P(MergeSplitTest, SplitKeysMergeToOneBlock) {
  const int blocks = GetParam();
  Case c;
  c.seqlen_q = 77;
  c.seqlen_k = 301;
  c.heads = 4;
  c.heads_k = 2;
  c.head_dim = 32;
  c.mask = Mask{true, 200, -1};
  c.q_pos = PosKind::kOffset;  // queries at 38.. so early key blocks are partly visible
  const Problem pr = MakeProblem(c, 31 + blocks);
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);

  const int64_t n_out = c.seqlen_q * c.heads * c.head_dim, n_lse = c.heads * c.seqlen_q;
  std::vector<float> acc_out(n_out, 0.0f), acc_lse(n_lse, -INFINITY);
  std::vector<int> order(blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(blocks));
  for (int blk : order) {
    const int64_t j0 = c.seqlen_k * blk / blocks, j1 = c.seqlen_k * (blk + 1) / blocks;
    AttnParams p = pr.Params();
    const int64_t row = c.heads_k * c.head_dim;
    p.k = pr.k.data() + j0 * row;
    p.v = pr.v.data() + j0 * row;
    p.seqlen_k = j1 - j0;
    p.k_pos = PositionMap::Contiguous(pr.kmap.Global(j0), j1 - j0);
    std::vector<float> out(n_out, NAN), lse(n_lse, NAN);
    p.out = out.data();
    p.out_stride = TensorStrides::Contiguous(c.seqlen_q, c.heads, c.head_dim);
    p.lse = lse.data();
    p.lse_batch_stride = n_lse;
    p.lse_head_stride = c.seqlen_q;
    ASSERT_TRUE(cpu::Forward(p, 2).ok());
    MergePartial(acc_out.data(), acc_lse.data(), out.data(), lse.data(), 1, c.seqlen_q, c.heads,
                 c.head_dim, 2);
  }
  std::vector<float> out_n, lse_n;
  NaiveForward(pr, &out_n, &lse_n);
  EXPECT_LE(MaxError(acc_out, out_ref), Tolerance(MaxError(out_n, out_ref), DType::kFloat32));
  EXPECT_LE(MaxError(acc_lse, lse_ref), Tolerance(MaxError(lse_n, lse_ref), DType::kFloat32));
}

INSTANTIATE_TEST_SUITE_P(Blocks, MergeSplitTest, ::testing::Range(1, 9));

}  // namespace
}  // namespace ringattn::testing
