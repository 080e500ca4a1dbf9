// Layouts partition any sequence exactly; shard/gather round-trip; the ring
// plan skips steps and ends early exactly where the mask allows.
#include <algorithm>
#include <numeric>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "runtime/layout.h"
#include "runtime/plan.h"

namespace ringattn {
namespace {

class LayoutTest : public ::testing::TestWithParam<std::tuple<Sharding, int64_t, int>> {};

TEST_P(LayoutTest, PartitionsTheSequence) {
  const auto [kind, seqlen, world] = GetParam();
  auto layout = Layout::Create(kind, seqlen, world, kind == Sharding::kStriped ? 3 : 1);
  ASSERT_TRUE(layout.ok());
  std::vector<int> seen(seqlen, 0);
  int64_t min_len = seqlen, max_len = 0;
  for (int r = 0; r < world; ++r) {
    const std::vector<int64_t> pos = layout->Positions(r);
    EXPECT_EQ(static_cast<int64_t>(pos.size()), layout->ShardLength(r));
    EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
    for (int64_t p : pos) {
      ASSERT_GE(p, 0);
      ASSERT_LT(p, seqlen);
      ++seen[p];
    }
    min_len = std::min<int64_t>(min_len, pos.size());
    max_len = std::max<int64_t>(max_len, pos.size());
  }
  for (int64_t i = 0; i < seqlen; ++i) EXPECT_EQ(seen[i], 1) << "position " << i;
  // Balanced up to the remainder (zigzag: two chunks; striped: one stripe).
  const int64_t slack = kind == Sharding::kZigzag ? 2 : kind == Sharding::kStriped ? 3 : 1;
  EXPECT_LE(max_len - min_len, slack);
}

TEST_P(LayoutTest, ShardAndGatherRoundTrip) {
  const auto [kind, seqlen, world] = GetParam();
  auto layout = Layout::Create(kind, seqlen, world, 2);
  ASSERT_TRUE(layout.ok());
  const int64_t batch = 2, row = 3;
  std::vector<float> full(batch * seqlen * row), back(full.size(), -1.0f);
  std::iota(full.begin(), full.end(), 0.0f);
  for (int r = 0; r < world; ++r) {
    std::vector<float> shard(batch * layout->ShardLength(r) * row);
    layout->ShardRows(full.data(), r, batch, row * 4, shard.data());
    layout->GatherRows(shard.data(), r, batch, row * 4, back.data());
  }
  EXPECT_EQ(full, back);
}

INSTANTIATE_TEST_SUITE_P(
    All, LayoutTest,
    ::testing::Combine(::testing::Values(Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped),
                       ::testing::Values(0, 1, 5, 17, 100, 1001),
                       ::testing::Values(1, 2, 3, 4, 5, 7, 8)));

TEST(Layout, RejectsBadArguments) {
  EXPECT_FALSE(Layout::Create(Sharding::kContiguous, -1, 2).ok());
  EXPECT_FALSE(Layout::Create(Sharding::kContiguous, 10, 0).ok());
  EXPECT_FALSE(Layout::Create(Sharding::kStriped, 10, 2, 0).ok());
  EXPECT_FALSE(ParseSharding("diagonal").ok());
  EXPECT_EQ(*ParseSharding("zigzag"), Sharding::kZigzag);
}

// Strides and lengths at the int64 limits: a stripe longer than the
// sequence is one stripe (no overflow in stripe * W), and lengths whose
// positions could overflow are refused.
TEST(Layout, Int64LimitsAreSafe) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  auto huge = Layout::Create(Sharding::kStriped, 100, 4, kMax);
  auto whole = Layout::Create(Sharding::kStriped, 100, 4, 100);
  ASSERT_TRUE(huge.ok() && whole.ok());
  for (int r = 0; r < 4; ++r) EXPECT_EQ(huge->Positions(r), whole->Positions(r)) << r;
  EXPECT_EQ(huge->ShardLength(0), 100);
  auto too_long = Layout::Create(Sharding::kZigzag, kMax, 4);
  ASSERT_FALSE(too_long.ok());
  EXPECT_TRUE(absl::StrContains(too_long.status().message(), "seqlen")) << too_long.status();
}

TEST(Layout, ZigzagHoldsMirroredChunks) {
  auto layout = Layout::Create(Sharding::kZigzag, 16, 4);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->Positions(0), (std::vector<int64_t>{0, 1, 14, 15}));
  EXPECT_EQ(layout->Positions(3), (std::vector<int64_t>{6, 7, 8, 9}));
}

// Causal work per rank: zigzag and striped are balanced, contiguous is not.
TEST(Layout, CausalWorkIsBalancedByZigzagAndStriped) {
  const int64_t seqlen = 4099;
  const int world = 4;
  for (Sharding kind : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
    auto layout = Layout::Create(kind, seqlen, world, 1);
    ASSERT_TRUE(layout.ok());
    std::vector<double> work;
    for (int r = 0; r < world; ++r) {
      double pairs = 0;
      for (int64_t p : layout->Positions(r)) pairs += p + 1;  // causal: keys 0..p
      work.push_back(pairs);
    }
    const double ratio = *std::max_element(work.begin(), work.end()) /
                         *std::min_element(work.begin(), work.end());
    if (kind == Sharding::kContiguous) {
      EXPECT_GT(ratio, 3.0);
    } else {
      EXPECT_LT(ratio, 1.01) << ShardingName(kind);
    }
  }
}

TEST(RingPlan, WindowEndsTheRingEarly) {
  auto layout = Layout::Create(Sharding::kContiguous, 1000, 4);
  ASSERT_TRUE(layout.ok());
  const Mask window{false, 10, 0};  // each query sees at most 10 keys back
  for (int r = 0; r < 4; ++r) {
    RingPlan plan(*layout, window, r);
    EXPECT_EQ(plan.NumSteps(), 2);  // own block, then the left neighbour's
    EXPECT_TRUE(plan.HasWork(0));
    EXPECT_EQ(plan.HasWork(1), r > 0);  // rank 0's left neighbour is the end
  }
  const Mask none{};
  EXPECT_EQ(RingPlan(*layout, none, 0).NumSteps(), 4);
}

TEST(RingPlan, CausalContiguousSkipsFutureBlocks) {
  auto layout = Layout::Create(Sharding::kContiguous, 64, 4);
  ASSERT_TRUE(layout.ok());
  const Mask causal{true, -1, -1};
  for (int r = 0; r < 4; ++r) {
    RingPlan plan(*layout, causal, r);
    for (int t = 0; t < plan.NumSteps(); ++t) EXPECT_EQ(plan.HasWork(t), t <= r) << r << " " << t;
  }
}

TEST(RingPlan, VisiblePairs) {
  EXPECT_EQ(VisiblePairs(10, Mask{}), 100);
  EXPECT_EQ(VisiblePairs(10, Mask{true, -1, -1}), 55);
  EXPECT_EQ(VisiblePairs(10, Mask{false, 1, 1}), 28);
}

}  // namespace
}  // namespace ringattn
