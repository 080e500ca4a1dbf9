// The CUDA kernels' tile bookkeeping (attention/cuda/device.cuh), compiled
// for the host through the emulated PTX layer, against the CPU's
// definitions. It runs in CI without a GPU: the emulator (cuda_emu_check)
// is too slow for CI, and these functions decide which tiles a kernel
// computes and which it masks.
//   - TileRange (KeyTiles, QueryTiles) against the sweep it replaced (the
//     items some point may see, found by a scan, and Mask::Classify on each
//     of their tiles, empty ones skipped): the same tiles, the same partial
//     and tail flags, for every mask kind and position layout (contiguous,
//     offset, zigzag-like segments, striped);
//   - VisibleRange against PosInterval and against a scan of the
//     positions, including the INT64 bounds of an open side.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/cuda/device.cuh"
#include "attention/mask.h"
#include "attention/params.h"
#include "gtest/gtest.h"

namespace ringattn::cuda::detail {
namespace {

struct Step {
  int t;
  bool partial, tail;
  bool operator==(const Step&) const = default;
};

std::string Describe(const std::vector<Step>& v) {
  std::string s;
  for (const Step& x : v) {
    s += std::to_string(x.t) + (x.partial ? "p" : "") + (x.tail ? "t" : "") + " ";
  }
  return s;
}

// Positions of one side: contiguous from an offset, two contiguous pieces
// far apart (a zigzag shard), or striped.
PositionMap RandomMap(std::mt19937& rng, int64_t len) {
  std::uniform_int_distribution<int> kind(0, 2);
  const int64_t base = std::uniform_int_distribution<int64_t>(0, 200)(rng);
  PositionMap m;
  switch (kind(rng)) {
    case 0:
      m.AddRange(base, len);
      break;
    case 1: {
      const int64_t a = std::uniform_int_distribution<int64_t>(0, len)(rng);
      m.AddRange(base, a);
      m.AddRange(base + a + std::uniform_int_distribution<int64_t>(0, 300)(rng), len - a);
      break;
    }
    default: {
      const int64_t stripe = std::uniform_int_distribution<int64_t>(1, 4)(rng);
      const int64_t world = std::uniform_int_distribution<int64_t>(1, 4)(rng);
      m.AddStrided(base, len, stripe, stripe * world);
      break;
    }
  }
  return m;
}

Mask RandomMask(std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 4);
  std::uniform_int_distribution<int64_t> w(0, 150);
  switch (kind(rng)) {
    case 0: return Mask{false, -1, -1};
    case 1: return Mask{true, -1, -1};
    case 2: return Mask{false, w(rng), w(rng)};
    case 3: return Mask{true, w(rng), -1};
    default: return Mask{false, -1, w(rng)};
  }
}

// What the kernels swept before TileRange: the items [begin, end) whose
// position some point of [x_min, x_max] may see (found here by a scan),
// then Mask::Classify on each tile that holds one of them, empty ones
// skipped. `keys`: the side is the keys and [x_min, x_max] the CTA's query
// positions; otherwise the side is the queries and [x_min, x_max] the
// CTA's keys. (Mask::Classify alone would also keep a tile whose positions
// straddle the visible window with none inside it: never computed.)
std::vector<Step> Expected(const Mask& m, const PositionMap& pos, int64_t len, int tile,
                           bool keys, int64_t x_min, int64_t x_max) {
  const bool has_lo = keys ? m.HasLeft() : m.HasRight();
  const bool has_hi = keys ? m.HasRight() : m.HasLeft();
  const int64_t lo = keys ? m.window_left : m.RightOffset();
  const int64_t hi = keys ? m.RightOffset() : m.window_left;
  int64_t begin = len, end = 0;
  for (int64_t i = 0; i < len; ++i) {
    const int64_t y = pos.Global(i);
    if ((has_lo && y < x_min - lo) || (has_hi && y > x_max + hi)) continue;
    begin = std::min(begin, i);
    end = i + 1;
  }
  std::vector<Step> out;
  if (begin >= end) return out;
  for (int64_t t = begin / tile; t * tile < end; ++t) {
    const int64_t a = t * tile, n = std::min<int64_t>(tile, len - a);
    const int64_t first = pos.Global(a), last = pos.Global(a + n - 1);
    const TileClass c = keys ? m.Classify(x_min, x_max, first, last)
                             : m.Classify(first, last, x_min, x_max);
    if (c == TileClass::kEmpty) continue;
    out.push_back({static_cast<int>(t), c == TileClass::kPartial, n < tile});
  }
  return out;
}

template <int kTile>
std::vector<Step> Swept(const TileRange<kTile>& r, int64_t len) {
  std::vector<Step> out;
  if (r.empty()) return out;
  for (TileStep st = r.At(r.t_begin, len); st.t >= 0; st = r.At(st.t + 1, len)) {
    out.push_back({st.t, st.partial, st.tail});
  }
  return out;
}

template <int kTile>
void CheckTileRanges(uint32_t seed, int cases) {
  std::mt19937 rng(seed);
  for (int i = 0; i < cases; ++i) {
    AttnParams p;
    p.mask = RandomMask(rng);
    p.seqlen_q = std::uniform_int_distribution<int64_t>(1, 300)(rng);
    p.seqlen_k = std::uniform_int_distribution<int64_t>(1, 300)(rng);
    p.q_pos = RandomMap(rng, p.seqlen_q);
    p.k_pos = RandomMap(rng, p.seqlen_k);
    // A CTA's rows on the other side: a random run of local indices.
    auto run = [&](const PositionMap& m, int64_t len, int64_t* lo, int64_t* hi) {
      const int64_t a = std::uniform_int_distribution<int64_t>(0, len - 1)(rng);
      const int64_t b = std::uniform_int_distribution<int64_t>(a, len - 1)(rng);
      *lo = m.Global(a);
      *hi = m.Global(b);
    };
    int64_t q_min, q_max, k_min, k_max;
    run(p.q_pos, p.seqlen_q, &q_min, &q_max);
    run(p.k_pos, p.seqlen_k, &k_min, &k_max);
    const std::string what = "case " + std::to_string(i) + " tile " + std::to_string(kTile) +
                             " mask causal=" + std::to_string(p.mask.causal) + " left=" +
                             std::to_string(p.mask.window_left) + " right=" +
                             std::to_string(p.mask.window_right);

    const std::vector<Step> want_k = Expected(p.mask, p.k_pos, p.seqlen_k, kTile, true, q_min, q_max);
    const std::vector<Step> got_k = Swept(KeyTiles<kTile>(p, q_min, q_max), p.seqlen_k);
    ASSERT_EQ(Describe(got_k), Describe(want_k)) << "key tiles, " << what;

    const std::vector<Step> want_q =
        Expected(p.mask, p.q_pos, p.seqlen_q, kTile, false, k_min, k_max);
    const std::vector<Step> got_q = Swept(QueryTiles<kTile>(p, k_min, k_max), p.seqlen_q);
    ASSERT_EQ(Describe(got_q), Describe(want_q)) << "query tiles, " << what;
  }
}

TEST(CudaTiles, TileRangeSweepsWhatMaskClassifyDid) {
  CheckTileRanges<16>(1, 3000);
  CheckTileRanges<32>(2, 3000);
  CheckTileRanges<64>(3, 3000);
}

// An empty side (no item seen) sweeps nothing.
TEST(CudaTiles, NothingSeenSweepsNoTile) {
  AttnParams p;
  p.mask = Mask{true, -1, -1};
  p.seqlen_k = 100;
  p.k_pos = PositionMap::Contiguous(1000, 100);  // every key after every query
  const TileRange<64> r = KeyTiles<64>(p, 0, 999);
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(Swept(r, p.seqlen_k).empty());
}

TEST(CudaTiles, VisibleRangeMatchesTheBinarySearchesAndAScan) {
  std::mt19937 rng(7);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int i = 0; i < 20000; ++i) {
    const int n = std::uniform_int_distribution<int>(1, 64)(rng);
    std::vector<int64_t> pos(n);
    const bool consecutive = rng() % 2 == 0;
    int64_t x = std::uniform_int_distribution<int64_t>(-100, 100)(rng);
    for (int c = 0; c < n; ++c) {
      pos[c] = x;
      x += consecutive ? 1 : std::uniform_int_distribution<int64_t>(1, 3)(rng);
    }
    auto bound = [&]() {
      switch (rng() % 6) {
        case 0: return kMin;
        case 1: return kMax;
        default: return std::uniform_int_distribution<int64_t>(pos[0] - 5, pos[n - 1] + 5)(rng);
      }
    };
    const int64_t lo = bound(), hi = bound();
    int b = 0, e = 0, rb = 0, re = 0;
    VisibleRange(pos.data(), n, lo, hi, &b, &e);
    PosInterval(pos.data(), n, lo, hi, &rb, &re);
    ASSERT_EQ(b, rb) << "n=" << n << " lo=" << lo << " hi=" << hi;
    ASSERT_EQ(e, re) << "n=" << n << " lo=" << lo << " hi=" << hi;
    // And the meaning: exactly the columns whose position lies in [lo, hi].
    for (int c = 0; c < n; ++c) {
      ASSERT_EQ(c >= b && c < e, pos[c] >= lo && pos[c] <= hi) << "column " << c;
    }
  }
}

}  // namespace
}  // namespace ringattn::cuda::detail
