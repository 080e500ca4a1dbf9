// The Mask's contract (attention/mask.h), which every kernel, the ring plan
// and the eval rely on, checked against the token rule Visible on random
// masks and positions: KeyBounds and QueryBounds are the same relation seen
// from either side and never decrease; Classify is never wrong and exact on
// contiguous tiles; LocalInterval finds a row's visible columns. A new kind
// of mask joins RandomMask here and must pass the same checks.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "attention/mask.h"
#include "gtest/gtest.h"

namespace ringattn {
namespace {

Mask RandomMask(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_int_distribution<int64_t> w(0, 40);
  switch (kind(rng)) {
    case 0: return Mask::None();
    case 1: return Mask::Causal();
    case 2: return Mask::Window(w(rng), w(rng));
    case 3: return Mask::Window(w(rng), -1, /*causal=*/true);
    case 4: return Mask::Window(-1, w(rng));               // right only
    default: return Mask::Window(w(rng), w(rng), true);    // causal caps the right
  }
}

TEST(Mask, BoundsAreVisibleFromBothSidesAndMonotone) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 500; ++trial) {
    const Mask m = RandomMask(rng);
    SCOPED_TRACE(m.ToString());
    PosRange prev_k = m.KeyBounds(0), prev_q = m.QueryBounds(0);
    for (int64_t x = 0; x < 120; ++x) {
      const PosRange kb = m.KeyBounds(x), qb = m.QueryBounds(x);
      ASSERT_LE(prev_k.lo, kb.lo);
      ASSERT_LE(prev_k.hi, kb.hi);
      ASSERT_LE(prev_q.lo, qb.lo);
      ASSERT_LE(prev_q.hi, qb.hi);
      prev_k = kb;
      prev_q = qb;
      for (int64_t y = 0; y < 120; ++y) {
        ASSERT_EQ(kb.Contains(y), m.Visible(x, y)) << "query " << x << " key " << y;
        ASSERT_EQ(qb.Contains(y), m.Visible(y, x)) << "key " << x << " query " << y;
      }
    }
  }
}

TEST(Mask, ClassifyIsNeverWrongAndExactOnContiguousTiles) {
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int64_t> pos(0, 150), len(1, 40);
  for (int trial = 0; trial < 20000; ++trial) {
    const Mask m = RandomMask(rng);
    const int64_t q0 = pos(rng), q1 = q0 + len(rng) - 1, k0 = pos(rng), k1 = k0 + len(rng) - 1;
    int64_t seen = 0, pairs = 0;
    for (int64_t q = q0; q <= q1; ++q)
      for (int64_t k = k0; k <= k1; ++k) seen += m.Visible(q, k), ++pairs;
    const TileClass want = seen == 0 ? TileClass::kEmpty
                           : seen == pairs ? TileClass::kFull
                                           : TileClass::kPartial;
    ASSERT_EQ(static_cast<int>(m.Classify(q0, q1, k0, k1)), static_cast<int>(want))
        << m.ToString() << " q [" << q0 << ", " << q1 << "] k [" << k0 << ", " << k1 << "]";
  }
}

TEST(Mask, ClassifyIsConservativeOnInterleavedTiles) {
  // Striped positions: the corners bound the tile, but not every position
  // between them is in it. Empty and full must still be true.
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> start(0, 100), stride(1, 7), count(1, 12);
  for (int trial = 0; trial < 20000; ++trial) {
    const Mask m = RandomMask(rng);
    std::vector<int64_t> q, k;
    for (int64_t i = 0, s = start(rng), d = stride(rng), n = count(rng); i < n; ++i)
      q.push_back(s + i * d);
    for (int64_t i = 0, s = start(rng), d = stride(rng), n = count(rng); i < n; ++i)
      k.push_back(s + i * d);
    int64_t seen = 0;
    for (int64_t a : q)
      for (int64_t b : k) seen += m.Visible(a, b);
    const TileClass c = m.Classify(q.front(), q.back(), k.front(), k.back());
    if (c == TileClass::kEmpty) ASSERT_EQ(seen, 0) << m.ToString();
    if (c == TileClass::kFull) ASSERT_EQ(seen, static_cast<int64_t>(q.size() * k.size()));
  }
}

TEST(Mask, LocalIntervalIsTheRowsVisibleColumns) {
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int64_t> start(0, 100), stride(1, 5), count(0, 30), x(0, 200);
  for (int trial = 0; trial < 20000; ++trial) {
    const Mask m = RandomMask(rng);
    std::vector<int64_t> pos;
    for (int64_t i = 0, s = start(rng), d = stride(rng), n = count(rng); i < n; ++i)
      pos.push_back(s + i * d);
    const int64_t q = x(rng);
    int64_t b = -1, e = -1;
    LocalInterval(m.KeyBounds(q), pos.data(), static_cast<int64_t>(pos.size()), &b, &e);
    ASSERT_LE(b, e);
    for (int64_t c = 0; c < static_cast<int64_t>(pos.size()); ++c) {
      ASSERT_EQ(c >= b && c < e, m.Visible(q, pos[c])) << m.ToString() << " q " << q;
    }
  }
}

// Windows at the int64 limits saturate: a right (or left) edge beyond int64
// is unbounded, never a wrapped negative position.
TEST(Mask, WindowsAtTheInt64LimitsSaturate) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const Mask right = Mask::Window(0, kMax);
  const Mask left = Mask::Window(kMax, 0);
  for (int64_t q : {int64_t{0}, int64_t{5}, int64_t{1} << 40, kMax - 3}) {
    EXPECT_EQ(right.KeyBounds(q).hi, PosRange::kMaxPos) << q;
    EXPECT_EQ(right.KeyBounds(q).lo, q);
    EXPECT_TRUE(right.Visible(q, q + 1 < q ? q : q + 1));
    EXPECT_FALSE(right.Visible(q, q - 1 < 0 ? -1 : q - 1));
    EXPECT_EQ(left.QueryBounds(q).hi, PosRange::kMaxPos) << q;
    EXPECT_TRUE(left.Visible(q, 0));
  }
  // Tiles: a key far right of every query is still visible, not masked out.
  EXPECT_EQ(right.Classify(10, 20, kMax - 10, kMax - 1), TileClass::kFull);
  EXPECT_EQ(right.Classify(10, 20, 0, 5), TileClass::kEmpty);
  EXPECT_EQ(Mask::Window(kMax, kMax).Classify(0, kMax - 1, 0, kMax - 1), TileClass::kFull);
  EXPECT_EQ(Mask::Window(kMax, -1, true).Classify(kMax - 5, kMax - 1, 0, 3), TileClass::kFull);
}

TEST(Mask, NamesTheKinds) {
  EXPECT_EQ(Mask::None().ToString(), "none");
  EXPECT_EQ(Mask::Causal().ToString(), "causal");
  EXPECT_EQ(Mask::Window(5, 3).ToString(), "window(5,3)");
  EXPECT_EQ(Mask::Window(7, -1, true).ToString(), "causal+window(7,-1)");
  EXPECT_TRUE(Mask::None().IsNone());
  EXPECT_FALSE(Mask::Window(-1, 0).IsNone());
  EXPECT_EQ(Mask::Window(4, 2, true), (Mask{true, 4, 2}));
}

}  // namespace
}  // namespace ringattn
