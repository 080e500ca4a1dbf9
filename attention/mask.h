// The mask, by GLOBAL token position: which keys a query may see. This
// header is the one place that knows mask geometry; the CPU and CUDA
// kernels, the ring plan, the FLOP counts and the eval all ask the Mask.
// Also the map from a shard's local rows to global positions.
//
// Variants today: no mask, causal, sliding window (left, right) with
// flash-attn semantics (-1 = unbounded), and causal combined with a window.
//
// The contract every user relies on: the visible keys of the query at
// position q are ONE interval KeyBounds(q) = [lo(q), hi(q)] whose ends never
// decrease as q grows, and symmetrically QueryBounds(k) for the queries that
// see the key at position k. Monotone bounds make the tile classification
// exact from two corner evaluations, let a CTA find its visible tiles with
// binary searches, and let a kernel row find its visible columns with two
// compares. Adding a kind of mask:
//   - a token rule that keeps one monotone interval per row (packed
//     documents: lo(q) = max(doc_start(q), q - left), hi(q) = min(doc_end(q)
//     - 1, q + right)) changes KeyBounds, QueryBounds and Visible here, the
//     float64 reference, and nothing else;
//   - a block rule (block-sparse) also answers in Classify (an off block is
//     kEmpty, a block it does not cover whole is kPartial) and Visible;
//   - a rule with a second interval (sink tokens) adds a second bounds pair
//     and the kernels' interval code learns to take two.
// The ring, its plan and the strategies see only Mask values and these
// functions, so none of them changes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "attention/hd.h"

namespace ringattn {

// The positions [lo, hi] (both included); empty when lo > hi. An unbounded
// end is kMinPos / kMaxPos.
struct PosRange {
  static constexpr int64_t kMinPos = std::numeric_limits<int64_t>::min();
  static constexpr int64_t kMaxPos = std::numeric_limits<int64_t>::max();
  int64_t lo = kMinPos;
  int64_t hi = kMaxPos;
  RINGATTN_HD bool Empty() const { return lo > hi; }
  RINGATTN_HD bool Contains(int64_t x) const { return lo <= x && x <= hi; }
};

enum class TileClass : uint8_t { kEmpty, kFull, kPartial };

// Query at global position i sees key j iff lo(i) <= j <= hi(i) where
//   lo(i) = i - window_left            (unbounded when window_left < 0)
//   hi(i) = i + window_right           (unbounded when window_right < 0)
// and causal additionally caps hi(i) at i. A plain value: compared, copied
// into AttnParams and onto the device as it is.
struct Mask {
  bool causal = false;
  int64_t window_left = -1;
  int64_t window_right = -1;

  static Mask None() { return Mask{}; }
  static Mask Causal() { return Mask{true, -1, -1}; }
  static Mask Window(int64_t left, int64_t right, bool causal = false) {
    return Mask{causal, left, right};
  }

  RINGATTN_HD bool HasLeft() const { return window_left >= 0; }
  RINGATTN_HD bool HasRight() const { return causal || window_right >= 0; }
  // Offset of the right edge: hi(i) = i + RightOffset() when HasRight().
  RINGATTN_HD int64_t RightOffset() const {
    if (!causal) return window_right;
    return window_right < 0 ? 0 : std::min<int64_t>(window_right, 0);
  }
  // Every query sees every key.
  RINGATTN_HD bool IsNone() const { return !HasLeft() && !HasRight(); }

  // The keys the query at position q >= 0 sees. Both ends are
  // non-decreasing in q. A window reaching past int64 is unbounded there
  // (saturated to kMaxPos), never wrapped.
  RINGATTN_HD PosRange KeyBounds(int64_t q) const {
    return PosRange{HasLeft() ? q - window_left : PosRange::kMinPos,
                    HasRight() ? SaturatingAdd(q, RightOffset()) : PosRange::kMaxPos};
  }
  // The queries that see the key at position k >= 0. Both ends are
  // non-decreasing in k.
  RINGATTN_HD PosRange QueryBounds(int64_t k) const {
    return PosRange{HasRight() ? k - RightOffset() : PosRange::kMinPos,
                    HasLeft() ? SaturatingAdd(k, window_left) : PosRange::kMaxPos};
  }
  RINGATTN_HD bool Visible(int64_t q, int64_t k) const { return KeyBounds(q).Contains(k); }

  // The tile whose query positions lie in [q_min, q_max] and key positions
  // in [k_min, k_max]: kEmpty when no pair can be visible (skipped), kFull
  // when every pair is (no mask work), else kPartial. Exact for contiguous
  // positions, conservative (partial instead of full or empty) for
  // interleaved ones, never wrong: by monotonicity the union of the rows'
  // intervals lies in [lo(q_min), hi(q_max)] and their intersection is
  // [lo(q_max), hi(q_min)].
  RINGATTN_HD TileClass Classify(int64_t q_min, int64_t q_max, int64_t k_min,
                                 int64_t k_max) const {
    if (k_min > KeyBounds(q_max).hi || k_max < KeyBounds(q_min).lo) return TileClass::kEmpty;
    const bool full = KeyBounds(q_max).lo <= k_min && k_max <= KeyBounds(q_min).hi;
    return full ? TileClass::kFull : TileClass::kPartial;
  }

  // "none", "causal", "window(L,R)", "causal+window(L,R)": for tools and
  // error messages (host only).
  std::string ToString() const;

 private:
  // x + y for x, y >= 0, kMaxPos where it would overflow.
  RINGATTN_HD static int64_t SaturatingAdd(int64_t x, int64_t y) {
    return y > PosRange::kMaxPos - x ? PosRange::kMaxPos : x + y;
  }
};

RINGATTN_HD inline bool operator==(const Mask& a, const Mask& b) {
  return a.causal == b.causal && a.window_left == b.window_left &&
         a.window_right == b.window_right;
}

// The half-open local interval [*begin, *end) of the increasing positions
// pos[0..n) that lie in `r`: a query row's visible keys in a tile (or a key
// row's visible queries). Host side; the CUDA kernels have their own O(1)
// form for consecutive positions (cuda/device.cuh, VisibleRange).
inline void LocalInterval(const PosRange& r, const int64_t* pos, int64_t n, int64_t* begin,
                          int64_t* end) {
  const int64_t* first = r.lo == PosRange::kMinPos ? pos : std::lower_bound(pos, pos + n, r.lo);
  const int64_t* last =
      r.hi == PosRange::kMaxPos ? pos + n : std::upper_bound(first, pos + n, r.hi);
  *begin = first - pos;
  *end = std::max(first, last) - pos;
}

// Local index -> global position. Up to kMaxSegments segments in increasing
// local and global order; segment s covers local [local_begin, local_begin +
// length) and maps local offset o to
//   global_begin + (o / stripe) * period + (o % stripe).
// A contiguous range has stripe == period (any value >= 1, we use 1); a
// striped shard has period = stripe * world. The map is strictly increasing,
// which the tile classifier and the per-row visible interval rely on.
struct PositionMap {
  static constexpr int kMaxSegments = 4;
  struct Segment {
    int64_t local_begin = 0;
    int64_t length = 0;
    int64_t global_begin = 0;
    int64_t stripe = 1;
    int64_t period = 1;
  };
  int num_segments = 0;
  Segment seg[kMaxSegments];

  static PositionMap Contiguous(int64_t global_begin, int64_t length) {
    PositionMap m;
    m.AddRange(global_begin, length);
    return m;
  }
  // Appends a contiguous range at the end of the local index space.
  void AddRange(int64_t global_begin, int64_t length) {
    AddStrided(global_begin, length, 1, 1);
  }
  void AddStrided(int64_t global_begin, int64_t length, int64_t stripe, int64_t period) {
    if (length <= 0 || num_segments >= kMaxSegments) return;
    const int64_t local_begin = Length();
    seg[num_segments++] = Segment{local_begin, length, global_begin, stripe, period};
  }
  RINGATTN_HD int64_t Length() const {
    return num_segments == 0 ? 0 : seg[num_segments - 1].local_begin + seg[num_segments - 1].length;
  }
  RINGATTN_HD int64_t Global(int64_t local) const {
    int s = 0;
    while (s + 1 < num_segments && local >= seg[s + 1].local_begin) ++s;
    const Segment& g = seg[s];
    const int64_t o = local - g.local_begin;
    return g.global_begin + (o / g.stripe) * g.period + (o % g.stripe);
  }
};

}  // namespace ringattn
