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
#include "attention/reference.h"
#include "gtest/gtest.h"

namespace ringattn {
namespace {

// Every position the tests ask about lies below this (the documents' end).
constexpr int64_t kSeq = 200;

// Random document boundaries [0, ..., kSeq]: tiny, empty and long documents.
// The masks view them, so they live as long as the test binary.
const std::vector<int64_t>& RandomDocuments(std::mt19937_64& rng) {
  static std::vector<std::vector<int64_t>> pool;
  std::uniform_int_distribution<int64_t> step(0, 30);
  std::vector<int64_t> b{0};
  while (b.back() < kSeq) b.push_back(std::min(kSeq, b.back() + step(rng)));
  pool.reserve(100000);  // references into the pool stay valid
  pool.push_back(std::move(b));
  return pool.back();
}

Mask RandomMask(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 5), extra(0, 3);
  std::uniform_int_distribution<int64_t> w(0, 40);
  Mask m;
  switch (kind(rng)) {
    case 0: m = Mask::None(); break;
    case 1: m = Mask::Causal(); break;
    case 2: m = Mask::Window(w(rng), w(rng)); break;
    case 3: m = Mask::Window(w(rng), -1, /*causal=*/true); break;
    case 4: m = Mask::Window(-1, w(rng)); break;             // right only
    default: m = Mask::Window(w(rng), w(rng), true); break;  // causal caps the right
  }
  const int e = extra(rng);
  if ((e & 1) && m.HasRight()) m.prefix = w(rng);
  if (kind(rng) < 2 && m.HasLeft()) m.sink = w(rng) / 4 + 1;
  if (e & 2) {
    const std::vector<int64_t>& docs = RandomDocuments(rng);
    m = m.WithDocuments(docs.data(), static_cast<int64_t>(docs.size()));
  }
  return m;
}

// Each part of a mask (the main interval, and with a sink the keys only the
// sink adds) on its own, and the whole against the rules' definition.
TEST(Mask, BoundsAreVisibleFromBothSidesAndMonotone) {
  std::mt19937_64 rng(1);
  int sinks = 0;
  for (int trial = 0; trial < 800; ++trial) {
    const Mask whole = RandomMask(rng);
    sinks += whole.HasSink();
    for (const Mask& m : {whole.MainPart(), whole.SinkPart()}) {
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
          ASSERT_EQ(kb.Contains(y), ReferenceVisible(m, x, y)) << "query " << x << " key " << y;
          ASSERT_EQ(qb.Contains(y), ReferenceVisible(m, y, x)) << "key " << x << " query " << y;
          if (!m.sink_part && !kb.Empty()) {
            ASSERT_TRUE(kb.Contains(x)) << "a row's interval holds the row";
          }
        }
      }
    }
    for (int64_t x = 0; x < 120; ++x)
      for (int64_t y = 0; y < 120; ++y) {
        ASSERT_EQ(whole.Visible(x, y), ReferenceVisible(whole, x, y)) << whole.ToString();
      }
  }
  EXPECT_GT(sinks, 50) << "the random masks include sinks";
}

TEST(Mask, ClassifyIsNeverWrongAndExactOnContiguousTiles) {
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<int64_t> pos(0, 150), len(1, 40);
  for (int trial = 0; trial < 20000; ++trial) {
    // A sink's second interval does not hold its row, so the union of the
    // rows' sink intervals may have gaps: exact for the main part, never
    // wrong for the whole.
    const Mask whole = RandomMask(rng);
    const Mask m = whole.MainPart();
    const int64_t q0 = pos(rng), q1 = q0 + len(rng) - 1, k0 = pos(rng), k1 = k0 + len(rng) - 1;
    int64_t seen = 0, pairs = 0, seen_whole = 0;
    for (int64_t q = q0; q <= q1; ++q)
      for (int64_t k = k0; k <= k1; ++k) seen += m.Visible(q, k), seen_whole += whole.Visible(q, k), ++pairs;
    const TileClass want = seen == 0 ? TileClass::kEmpty
                           : seen == pairs ? TileClass::kFull
                                           : TileClass::kPartial;
    ASSERT_EQ(static_cast<int>(m.Classify(q0, q1, k0, k1)), static_cast<int>(want))
        << m.ToString() << " q [" << q0 << ", " << q1 << "] k [" << k0 << ", " << k1 << "]";
    const TileClass c = whole.Classify(q0, q1, k0, k1);
    if (c == TileClass::kEmpty) { ASSERT_EQ(seen_whole, 0) << whole.ToString(); }
    if (c == TileClass::kFull) { ASSERT_EQ(seen_whole, pairs) << whole.ToString(); }
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
    if (c == TileClass::kEmpty) { ASSERT_EQ(seen, 0) << m.ToString(); }
    if (c == TileClass::kFull) { ASSERT_EQ(seen, static_cast<int64_t>(q.size() * k.size())); }
  }
}

TEST(Mask, LocalIntervalIsTheRowsVisibleColumns) {
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int64_t> start(0, 100), stride(1, 5), count(0, 30), x(0, 200);
  for (int trial = 0; trial < 20000; ++trial) {
    const Mask whole = RandomMask(rng);
    std::vector<int64_t> pos;
    for (int64_t i = 0, s = start(rng), d = stride(rng), n = count(rng); i < n; ++i)
      pos.push_back(s + i * d);
    const int64_t q = x(rng);
    for (const Mask& m : {whole.MainPart(), whole.SinkPart()}) {  // the kernels' parts
      int64_t b = -1, e = -1;
      LocalInterval(m.KeyBounds(q), pos.data(), static_cast<int64_t>(pos.size()), &b, &e);
      ASSERT_LE(b, e);
      for (int64_t c = 0; c < static_cast<int64_t>(pos.size()); ++c) {
        ASSERT_EQ(c >= b && c < e, m.Visible(q, pos[c])) << m.ToString() << " q " << q;
      }
    }
  }
}

// A random block mask over [0, kSeq) in blocks of 1..40 tokens, the same
// for every head or one per head (3 heads), about half on.
Mask RandomBlocks(std::mt19937_64& rng, Mask m) {
  static std::vector<std::vector<uint8_t>> pool;
  pool.reserve(100000);
  const int64_t size = std::uniform_int_distribution<int64_t>(1, 40)(rng);
  const int64_t heads = rng() % 2 ? 3 : 1, n = (kSeq + size - 1) / size;
  std::vector<uint8_t> bits(heads * n * n);
  for (uint8_t& b : bits) b = rng() % 2;
  pool.push_back(std::move(bits));
  return m.WithBlocks(pool.back().data(), heads, n, n, size);
}

// Block masks leave the intervals alone: Visible and VisibleKeys of each
// head agree with the rules' definition; a mask not narrowed to a head
// answers for the union of the heads.
TEST(Mask, BlockMasksAgreeWithTheRules) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const Mask all = RandomBlocks(rng, RandomMask(rng));
    SCOPED_TRACE(all.ToString());
    for (int64_t x = 0; x < kSeq; x += 3) {
      int64_t union_keys = 0;
      for (int64_t h = 0; h < all.block_heads; ++h) {
        const Mask m = all.ForHead(h);
        int64_t keys = 0;
        for (int64_t y = 0; y < kSeq; ++y) {
          const bool want = ReferenceVisible(all, x, y, h);
          ASSERT_EQ(m.Visible(x, y), want) << "head " << h << " query " << x << " key " << y;
          keys += want;
        }
        ASSERT_EQ(m.VisibleKeys(x, kSeq), keys) << "head " << h << " query " << x;
        union_keys += keys;
      }
      ASSERT_EQ(all.VisibleKeys(x, kSeq), union_keys) << "summed over the heads";
    }
  }
}

TEST(Mask, BlockClassifyIsNeverWrongAndExactWithoutOtherRules) {
  std::mt19937_64 rng(8);
  std::uniform_int_distribution<int64_t> pos(0, 150), len(1, 40), stride(1, 5);
  for (int trial = 0; trial < 20000; ++trial) {
    const bool plain = trial % 2 == 0;  // blocks alone: Classify is exact
    const Mask all = RandomBlocks(rng, plain ? Mask::None() : RandomMask(rng));
    const Mask m = all.ForHead(rng() % all.block_heads);
    const int64_t dq = plain ? 1 : stride(rng), dk = plain ? 1 : stride(rng);
    const int64_t q0 = pos(rng), q1 = q0 + (len(rng) - 1) * dq;
    const int64_t k0 = pos(rng), k1 = k0 + (len(rng) - 1) * dk;
    if (q1 >= kSeq || k1 >= kSeq) continue;
    int64_t seen = 0, pairs = 0;
    for (int64_t q = q0; q <= q1; q += dq)
      for (int64_t k = k0; k <= k1; k += dk) seen += m.Visible(q, k), ++pairs;
    const TileClass c = m.Classify(q0, q1, k0, k1);
    SCOPED_TRACE(m.ToString());
    if (c == TileClass::kEmpty) { ASSERT_EQ(seen, 0); }
    if (c == TileClass::kFull) { ASSERT_EQ(seen, pairs); }
    if (plain) {
      const TileClass want = seen == 0 ? TileClass::kEmpty
                             : seen == pairs ? TileClass::kFull
                                             : TileClass::kPartial;
      ASSERT_EQ(static_cast<int>(c), static_cast<int>(want));
    }
    // Not narrowed to a head: empty only when every head's tile is.
    if (all.Classify(q0, q1, k0, k1) == TileClass::kEmpty) {
      for (int64_t h = 0; h < all.block_heads; ++h) {
        ASSERT_EQ(static_cast<int>(all.ForHead(h).Classify(q0, q1, k0, k1)),
                  static_cast<int>(TileClass::kEmpty));
      }
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
  const int64_t docs[] = {0, 3, 3, 10};
  const Mask packed = Mask::PrefixLM(2).WithDocuments(docs, 4);
  EXPECT_EQ(packed.ToString(), "causal+prefix(2)+docs(3)");
  EXPECT_FALSE(Mask::None().WithDocuments(docs, 4).IsNone());
  EXPECT_TRUE(Mask::None().WithDocuments(docs, 1).IsNone()) << "one boundary: no documents";
  const int64_t same[] = {0, 3, 3, 10}, moved[] = {0, 3, 4, 10};
  EXPECT_EQ(packed, Mask::PrefixLM(2).WithDocuments(same, 4)) << "compared by content";
  EXPECT_FALSE(packed == Mask::PrefixLM(2).WithDocuments(moved, 4));
  const uint8_t bits[] = {1, 0, 2, 1}, same_bits[] = {1, 0, 1, 1}, other_bits[] = {1, 1, 1, 1};
  const Mask blocky = Mask::Causal().WithBlocks(bits, 1, 2, 2, 128);
  EXPECT_EQ(blocky.ToString(), "causal+blocks(2x2/128, 75.0% on)");
  EXPECT_FALSE(Mask::None().WithBlocks(bits, 1, 2, 2, 128).IsNone());
  EXPECT_EQ(blocky, Mask::Causal().WithBlocks(same_bits, 1, 2, 2, 128)) << "any nonzero is on";
  EXPECT_FALSE(blocky == Mask::Causal().WithBlocks(other_bits, 1, 2, 2, 128));
  EXPECT_FALSE(blocky == Mask::Causal().WithBlocks(bits, 1, 2, 2, 64));
  EXPECT_FALSE(blocky == Mask::Causal());
}

// StreamingLLM's sink + window by hand: the sink keys stay visible after
// the window has passed them, never beyond the right edge or the document.
TEST(Mask, SinkByHand) {
  const Mask m = Mask::Sink(4, 10);  // causal, keys q-10..q and 0..3
  EXPECT_TRUE(m.Visible(100, 2));
  EXPECT_TRUE(m.Visible(100, 95));
  EXPECT_FALSE(m.Visible(100, 50));
  EXPECT_FALSE(m.Visible(2, 3)) << "causal: not a later sink key";
  EXPECT_EQ(m.SinkBounds(100).lo, 0);
  EXPECT_EQ(m.SinkBounds(100).hi, 3);
  EXPECT_TRUE(m.SinkBounds(10).Empty()) << "0..3 are inside the window of 10";
  EXPECT_EQ(m.SinkBounds(12).hi, 1) << "2 and 3 are inside the window of 12";
  EXPECT_EQ(m.SinkBounds(15).hi, 3);
  EXPECT_EQ(m.SinkPart().QueryBounds(2).lo, 13);
  EXPECT_EQ(m.Classify(100, 120, 0, 3), TileClass::kPartial);
  EXPECT_EQ(m.Classify(100, 120, 20, 60), TileClass::kEmpty);
  EXPECT_EQ(m.ToString(), "causal+window(10,-1)+sink(4)");
  const int64_t docs[] = {0, 50, 200};
  const Mask packed = m.WithDocuments(docs, 3);
  EXPECT_FALSE(packed.Visible(100, 2)) << "the sink is in another document";
  EXPECT_TRUE(packed.Visible(30, 2));
}

// Packed documents by hand: a query sees its own document only (an empty
// document holds nothing), prefix-LM lifts the causal edge inside [0, P).
TEST(Mask, DocumentsAndPrefixByHand) {
  const int64_t docs[] = {0, 4, 4, 9, 12};  // [0,4) [4,4) [4,9) [9,12)
  const Mask causal = Mask::Causal().WithDocuments(docs, 5);
  EXPECT_EQ(causal.KeyBounds(0).lo, 0);
  EXPECT_EQ(causal.KeyBounds(3).hi, 3);
  EXPECT_EQ(causal.KeyBounds(4).lo, 4);
  EXPECT_EQ(causal.KeyBounds(8).lo, 4);
  EXPECT_EQ(causal.KeyBounds(9).lo, 9);
  EXPECT_EQ(causal.QueryBounds(5).hi, 8);
  EXPECT_EQ(causal.QueryBounds(11).hi, 11);
  EXPECT_EQ(causal.Classify(0, 3, 4, 8), TileClass::kEmpty);
  EXPECT_EQ(causal.Classify(9, 11, 0, 8), TileClass::kEmpty);
  const Mask none = Mask::None().WithDocuments(docs, 5);
  EXPECT_EQ(none.KeyBounds(2).hi, 3);
  EXPECT_EQ(none.Classify(4, 8, 4, 8), TileClass::kFull);
  const Mask prefix = Mask::PrefixLM(3);
  EXPECT_TRUE(prefix.Visible(0, 2));
  EXPECT_FALSE(prefix.Visible(0, 3));
  EXPECT_TRUE(prefix.Visible(5, 2));
  EXPECT_FALSE(prefix.Visible(5, 6));
  EXPECT_EQ(prefix.QueryBounds(1).lo, PosRange::kMinPos);
  EXPECT_EQ(prefix.QueryBounds(3).lo, 3);
}

}  // namespace
}  // namespace ringattn
