// Masks by GLOBAL token position, the map from a shard's local rows to
// global positions, and the classification of a q-tile x k-tile as empty
// (skipped), full (no mask work) or partial (per-element mask).
//
// Variants: no mask, causal, sliding window (left, right) with flash-attn
// semantics (-1 = unbounded), and causal combined with a window.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "attention/hd.h"

namespace ringattn {

// Query at global position i sees key j iff lo(i) <= j <= hi(i) where
//   lo(i) = i - window_left            (unbounded when window_left < 0)
//   hi(i) = i + window_right           (unbounded when window_right < 0)
// and causal additionally caps hi(i) at i.
struct Mask {
  bool causal = false;
  int64_t window_left = -1;
  int64_t window_right = -1;

  RINGATTN_HD bool HasLeft() const { return window_left >= 0; }
  RINGATTN_HD bool HasRight() const { return causal || window_right >= 0; }
  // Offset of the right edge: hi(i) = i + RightOffset() when HasRight().
  RINGATTN_HD int64_t RightOffset() const {
    if (!causal) return window_right;
    return window_right < 0 ? 0 : std::min<int64_t>(window_right, 0);
  }
  RINGATTN_HD bool IsNone() const { return !HasLeft() && !HasRight(); }

  RINGATTN_HD bool Visible(int64_t qi, int64_t kj) const {
    if (HasLeft() && kj < qi - window_left) return false;
    if (HasRight() && kj > qi + RightOffset()) return false;
    return true;
  }
};

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

enum class TileClass : uint8_t { kEmpty, kFull, kPartial };

// Classifies the tile whose query positions lie in [q_min, q_max] and key
// positions in [k_min, k_max]. Exact for contiguous positions, conservative
// (partial instead of full/empty) for interleaved ones, never wrong.
RINGATTN_HD inline TileClass ClassifyTile(const Mask& m, int64_t q_min, int64_t q_max, int64_t k_min,
                              int64_t k_max) {
  if (m.HasRight() && k_min > q_max + m.RightOffset()) return TileClass::kEmpty;
  if (m.HasLeft() && k_max < q_min - m.window_left) return TileClass::kEmpty;
  const bool right_ok = !m.HasRight() || k_max <= q_min + m.RightOffset();
  const bool left_ok = !m.HasLeft() || k_min >= q_max - m.window_left;
  return right_ok && left_ok ? TileClass::kFull : TileClass::kPartial;
}

// Visible keys of query position qi among keys with increasing positions
// kpos[0..n): the half-open local interval [*begin, *end).
inline void VisibleInterval(const Mask& m, int64_t qi, const int64_t* kpos, int64_t n,
                            int64_t* begin, int64_t* end) {
  const int64_t* first = kpos;
  const int64_t* last = kpos + n;
  if (m.HasLeft()) first = std::lower_bound(kpos, last, qi - m.window_left);
  if (m.HasRight()) last = std::upper_bound(first, last, qi + m.RightOffset());
  *begin = first - kpos;
  *end = std::max(first, last) - kpos;
}

}  // namespace ringattn
