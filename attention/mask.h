// The mask, by GLOBAL token position: which keys a query may see. This
// header is the one place that knows mask geometry; the CPU and CUDA
// kernels, the ring plan, the FLOP counts and the eval all ask the Mask.
// Also the map from a shard's local rows to global positions.
//
// Rules today, ANDed: causal, a sliding window (left, right) with flash-attn
// semantics (-1 = unbounded), packed documents (cu_seqlens: a query sees
// only keys of its own document), prefix-LM (the first P tokens see each
// other whatever the right edge), attention sinks (a second interval) and
// block masks (bits per pair of token blocks, not an interval rule).
//
// The contract every user relies on: the visible keys of the query at
// position q (before the block mask) are ONE interval KeyBounds(q) = [lo(q), hi(q)] whose ends never
// decrease as q grows, that holds q itself when it is not empty, and
// symmetrically QueryBounds(k) for the queries that see the key at position
// k. Monotone bounds make the tile classification exact from two corner
// evaluations, let a CTA find its visible tiles with binary searches, and
// let a kernel row find its visible columns with two compares. Documents
// and prefix-LM are such rules: with them
//   lo(q) = max(doc_start(q), q - left)
//   hi(q) = min(doc_end(q) - 1, max(q + right, P - 1))
// so they changed KeyBounds, QueryBounds and ToString here and nothing in
// the kernels, the plan or the ring. Adding a kind of mask:
//   - a token rule that keeps one monotone interval per row changes these
//     functions and nothing else;
//   - a block rule (block-sparse, `blocks`) leaves the intervals alone and
//     answers in Classify (a tile over off blocks only is kEmpty, one over
//     mixed blocks kPartial) and in BlockOn, which a partial tile's rows
//     consult beside their interval;
//   - a rule with a second interval (sink tokens) splits the mask into two
//     parts, each one interval (MainPart, SinkPart).
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
// causal additionally caps hi(i) at i, prefix-LM lifts hi(i) to at least
// prefix - 1, and documents clip [lo(i), hi(i)] to i's document. A plain
// value: compared, copied into AttnParams and onto the device as it is.
//
// Documents are a VIEW: cu_seqlens[0..num_docs] = [0, e1, ..., S] (flash-
// attn's cu_seqlens, non-decreasing, empty documents allowed) in memory the
// maker of the Mask owns. RingAttention::Create copies them, so a caller's
// array need only live through Create; a kernel call reads them for its
// duration (device memory for the CUDA kernels: the CUDA backend uploads
// them). The block mask's bits are a view the same way.
struct Mask {
  bool causal = false;
  int64_t window_left = -1;
  int64_t window_right = -1;
  int64_t prefix = 0;                   // prefix-LM: 0 = off
  const int64_t* cu_seqlens = nullptr;  // [num_docs + 1]; null = one document
  int64_t num_docs = 0;
  // Attention sinks (StreamingLLM): keys [0, sink) are visible to every
  // query of their document up to its right edge, whatever the left window.
  // A second interval per row: the kernels run the mask as two parts,
  // MainPart() (one interval, the rules above) and SinkPart() (the keys
  // only the sink adds), and merge the two partial results exactly as the
  // ring merges blocks. sink_part marks the second part.
  int64_t sink = 0;
  bool sink_part = false;
  // Block-sparse: the queries of block qb (positions [qb * block_size,
  // (qb + 1) * block_size)) may see the keys of block kb in head h iff
  // blocks[(h * block_rows + qb) * block_cols + kb] != 0, ANDed with the
  // rules above. block_heads is 1 (every head) or the number of query
  // heads; kernels take one head's slice with ForHead. A view, like
  // cu_seqlens: Create copies it, the CUDA backend uploads it once.
  const uint8_t* blocks = nullptr;
  int64_t block_size = 0, block_heads = 0, block_rows = 0, block_cols = 0;

  static Mask None() { return Mask{}; }
  static Mask Causal() { return Mask{true, -1, -1}; }
  static Mask Window(int64_t left, int64_t right, bool causal = false) {
    return Mask{causal, left, right};
  }
  // Causal, with the first `p` tokens seeing each other bidirectionally.
  static Mask PrefixLM(int64_t p) { return Mask{true, -1, -1, p}; }
  // StreamingLLM: `n` sink tokens and a causal window of `left` keys.
  static Mask Sink(int64_t n, int64_t left) {
    Mask m{true, left, -1};
    m.sink = n;
    return m;
  }
  // The two parts of a mask with a sink (see `sink`); without one, MainPart
  // is the mask itself and SinkPart sees nothing.
  RINGATTN_HD Mask MainPart() const {
    Mask m = *this;
    m.sink = 0;
    m.sink_part = false;
    return m;
  }
  RINGATTN_HD Mask SinkPart() const {
    Mask m = *this;
    m.sink_part = true;
    return m;
  }
  // Whether the kernels must run this mask as its two parts.
  RINGATTN_HD bool HasSink() const { return sink > 0 && !sink_part; }
  // This mask, within the documents bounds[0..n) (n = num_docs + 1 entries).
  // n = 0 (no array) is no documents; n = 1 is refused by ValidateMask.
  Mask WithDocuments(const int64_t* bounds, int64_t n) const {
    Mask m = *this;
    m.cu_seqlens = n > 0 ? bounds : nullptr;
    m.num_docs = n > 0 ? n - 1 : 0;
    return m;
  }

  // This mask, ANDed with the block mask bits[heads][rows][cols] over blocks
  // of `size` tokens (heads 1: the same for every head).
  Mask WithBlocks(const uint8_t* bits, int64_t heads, int64_t rows, int64_t cols,
                  int64_t size) const {
    Mask m = *this;
    m.blocks = bits;
    m.block_heads = bits != nullptr ? heads : 0;
    m.block_rows = bits != nullptr ? rows : 0;
    m.block_cols = bits != nullptr ? cols : 0;
    m.block_size = bits != nullptr ? size : 0;
    return m;
  }
  RINGATTN_HD bool HasBlocks() const { return blocks != nullptr; }
  // The mask of query head h: one head's slice of a per-head block mask.
  RINGATTN_HD Mask ForHead(int64_t h) const {
    Mask m = *this;
    if (block_heads > 1) {
      m.blocks += h * block_rows * block_cols;
      m.block_heads = 1;
    }
    return m;
  }
  // The mask of query heads [h, h + n): their slice of a per-head block
  // mask (unchanged for a mask shared by every head).
  Mask ForHeads(int64_t h, int64_t n) const {
    Mask m = *this;
    if (block_heads > 1) {
      m.blocks += h * block_rows * block_cols;
      m.block_heads = n;
    }
    return m;
  }
  // Whether the block pair of positions (q, k) is on (in some head, for a
  // per-head mask not yet narrowed by ForHead); true without a block mask.
  RINGATTN_HD bool BlockOn(int64_t q, int64_t k) const {
    if (!HasBlocks()) return true;
    const int64_t at = (q / block_size) * block_cols + k / block_size;
    for (int64_t h = 0; h < block_heads; ++h) {
      if (blocks[h * block_rows * block_cols + at]) return true;
    }
    return false;
  }
  // Over the block pairs that positions [q_min, q_max] x [k_min, k_max]
  // touch: kEmpty when all are off, kFull when all are on, else kPartial
  // (kFull without a block mask).
  RINGATTN_HD TileClass BlockClass(int64_t q_min, int64_t q_max, int64_t k_min,
                                   int64_t k_max) const {
    if (!HasBlocks()) return TileClass::kFull;
    const int64_t qb0 = q_min / block_size, qb1 = q_max / block_size;
    const int64_t kb0 = k_min / block_size, kb1 = k_max / block_size;
    bool any_on = false, any_off = false;
    for (int64_t qb = qb0; qb <= qb1; ++qb)
      for (int64_t kb = kb0; kb <= kb1; ++kb) {
        bool on = false;
        for (int64_t h = 0; h < block_heads && !on; ++h) {
          on = blocks[(h * block_rows + qb) * block_cols + kb] != 0;
        }
        any_on = any_on || on;
        any_off = any_off || !on;
        if (any_on && any_off) return TileClass::kPartial;
      }
    return any_on ? TileClass::kFull : TileClass::kEmpty;
  }

  RINGATTN_HD bool HasLeft() const { return window_left >= 0; }
  RINGATTN_HD bool HasRight() const { return causal || window_right >= 0; }
  RINGATTN_HD bool HasDocuments() const { return num_docs > 0; }
  // Offset of the right edge: hi(i) = i + RightOffset() when HasRight().
  RINGATTN_HD int64_t RightOffset() const {
    if (!causal) return window_right;
    return window_right < 0 ? 0 : std::min<int64_t>(window_right, 0);
  }
  // Every query sees every key.
  RINGATTN_HD bool IsNone() const {
    return !HasLeft() && !HasRight() && !HasDocuments() && !HasBlocks();
  }

  // The document of position x: [cu_seqlens[d], cu_seqlens[d + 1]), the
  // last non-empty one starting at or before x (binary search).
  RINGATTN_HD PosRange Document(int64_t x) const {
    int64_t a = 0, z = num_docs;  // the last d in [0, num_docs) with bounds[d] <= x
    while (z - a > 1) {
      const int64_t mid = a + (z - a) / 2;
      if (cu_seqlens[mid] <= x) {
        a = mid;
      } else {
        z = mid;
      }
    }
    return PosRange{cu_seqlens[a], cu_seqlens[a + 1] - 1};
  }

  // The keys the query at position q >= 0 sees. Both ends are
  // non-decreasing in q. A window reaching past int64 is unbounded there
  // (saturated to kMaxPos), never wrapped.
  // With a sink (HasSink), the main interval; SinkBounds gives the second.
  RINGATTN_HD PosRange KeyBounds(int64_t q) const {
    return sink_part ? SinkBounds(q) : MainBounds(q);
  }
  // The queries that see the key at position k >= 0. Both ends are
  // non-decreasing in k. With a sink (HasSink), through the main rules.
  RINGATTN_HD PosRange QueryBounds(int64_t k) const {
    if (sink_part) {
      // Keys below the sink, seen by the queries of their document whose
      // right edge reaches them and whose window has left them behind.
      if (k >= sink || !HasLeft()) return Nothing();
      PosRange r{SaturatingAdd(SaturatingAdd(k, window_left), 1), kMaxPosMinus1};
      if (HasDocuments()) r = Clip(r, Document(k));
      return r;
    }
    PosRange r{HasRight() && k >= prefix ? k - RightOffset() : PosRange::kMinPos,
               HasLeft() ? SaturatingAdd(k, window_left) : PosRange::kMaxPos};
    if (HasDocuments()) r = Clip(r, Document(k));
    return r;
  }
  RINGATTN_HD bool Visible(int64_t q, int64_t k) const {
    return (KeyBounds(q).Contains(k) || (HasSink() && SinkBounds(q).Contains(k))) &&
           BlockOn(q, k);
  }
  // How many keys in [0, seqlen) the query at q sees (both parts of a sink;
  // with a per-head block mask, summed over its heads).
  RINGATTN_HD int64_t VisibleKeys(int64_t q, int64_t seqlen) const {
    if (HasBlocks() && block_heads > 1) {
      int64_t sum = 0;
      for (int64_t h = 0; h < block_heads; ++h) sum += ForHead(h).VisibleKeys(q, seqlen);
      return sum;
    }
    auto count = [this, q, seqlen](const PosRange& r) {
      const int64_t lo = std::max<int64_t>(0, r.lo), hi = std::min(seqlen - 1, r.hi);
      if (hi < lo) return int64_t{0};
      if (!HasBlocks()) return hi - lo + 1;
      int64_t n = 0;  // the on blocks' share of [lo, hi]
      const uint8_t* row = blocks + (q / block_size) * block_cols;
      for (int64_t kb = lo / block_size; kb <= hi / block_size; ++kb) {
        if (row[kb]) {
          n += std::min(hi, (kb + 1) * block_size - 1) - std::max(lo, kb * block_size) + 1;
        }
      }
      return n;
    };
    return count(KeyBounds(q)) + (HasSink() ? count(SinkBounds(q)) : 0);
  }
  // The sink keys that the main interval of the query at q leaves out:
  // [doc_start(q), min(sink - 1, lo(q) - 1, hi(q))] (empty without a sink
  // or a left edge). Both ends non-decreasing in q.
  RINGATTN_HD PosRange SinkBounds(int64_t q) const {
    if (sink <= 0 || !HasLeft()) return Nothing();
    const PosRange m = MainBounds(q);
    PosRange r{HasDocuments() ? Document(q).lo : 0, std::min(sink - 1, m.hi)};
    if (m.lo != PosRange::kMinPos) r.hi = std::min(r.hi, m.lo - 1);
    return r;
  }

  // The tile whose query positions lie in [q_min, q_max] and key positions
  // in [k_min, k_max]: kEmpty when no pair can be visible (skipped), kFull
  // when every pair is (no mask work), else kPartial. Exact for contiguous
  // positions, conservative (partial instead of full or empty) for
  // interleaved ones, never wrong: by monotonicity the union of the rows'
  // intervals lies in [lo(q_min), hi(q_max)] and their intersection is
  // [lo(q_max), hi(q_min)].
  // With a sink (HasSink), of the union of the two parts; with a block
  // mask, ANDed with BlockClass.
  RINGATTN_HD TileClass Classify(int64_t q_min, int64_t q_max, int64_t k_min,
                                 int64_t k_max) const {
    const TileClass c = IntervalClass(q_min, q_max, k_min, k_max);
    if (c == TileClass::kEmpty || !HasBlocks()) return c;
    const TileClass b = BlockClass(q_min, q_max, k_min, k_max);
    return b == TileClass::kFull ? c : b;
  }

  // Classify without the block mask.
  RINGATTN_HD TileClass IntervalClass(int64_t q_min, int64_t q_max, int64_t k_min,
                                      int64_t k_max) const {
    if (HasSink()) {
      const TileClass a = MainPart().IntervalClass(q_min, q_max, k_min, k_max);
      const TileClass b = SinkPart().IntervalClass(q_min, q_max, k_min, k_max);
      if (a == TileClass::kEmpty && b == TileClass::kEmpty) return TileClass::kEmpty;
      return a == TileClass::kFull ? TileClass::kFull : TileClass::kPartial;
    }
    if (k_min > KeyBounds(q_max).hi || k_max < KeyBounds(q_min).lo) return TileClass::kEmpty;
    const bool full = KeyBounds(q_max).lo <= k_min && k_max <= KeyBounds(q_min).hi;
    return full ? TileClass::kFull : TileClass::kPartial;
  }

  // "none", "causal", "window(L,R)", "causal+window(L,R)", with "+prefix(P)",
  // "+sink(N)" and "+docs(N)" appended: for tools and error messages (host
  // only).
  std::string ToString() const;

 private:
  // An empty range whose ends still never decrease after any other range
  // (positions stay below 2^48, so kMaxPos - 1 is "unbounded" above).
  static constexpr int64_t kMaxPosMinus1 = PosRange::kMaxPos - 1;
  RINGATTN_HD static PosRange Nothing() { return PosRange{PosRange::kMaxPos, kMaxPosMinus1}; }

  // The one-interval rules: window, causal, prefix-LM, documents.
  RINGATTN_HD PosRange MainBounds(int64_t q) const {
    PosRange r{HasLeft() ? q - window_left : PosRange::kMinPos,
               HasRight() ? SaturatingAdd(q, RightOffset()) : PosRange::kMaxPos};
    if (prefix > 0 && HasRight()) r.hi = std::max<int64_t>(r.hi, prefix - 1);
    if (HasDocuments()) r = Clip(r, Document(q));
    return r;
  }
  // x + y for x, y >= 0, kMaxPos where it would overflow.
  RINGATTN_HD static int64_t SaturatingAdd(int64_t x, int64_t y) {
    return y > PosRange::kMaxPos - x ? PosRange::kMaxPos : x + y;
  }
  RINGATTN_HD static PosRange Clip(PosRange r, PosRange doc) {
    return PosRange{std::max(r.lo, doc.lo), std::min(r.hi, doc.hi)};
  }
};

RINGATTN_HD inline bool operator==(const Mask& a, const Mask& b) {
  if (a.causal != b.causal || a.window_left != b.window_left ||
      a.window_right != b.window_right || a.prefix != b.prefix || a.num_docs != b.num_docs ||
      a.sink != b.sink || a.sink_part != b.sink_part) {
    return false;
  }
  for (int64_t d = 0; d <= a.num_docs && a.num_docs > 0; ++d) {
    if (a.cu_seqlens[d] != b.cu_seqlens[d]) return false;
  }
  if (a.HasBlocks() != b.HasBlocks()) return false;
  if (!a.HasBlocks()) return true;
  if (a.block_size != b.block_size || a.block_heads != b.block_heads ||
      a.block_rows != b.block_rows || a.block_cols != b.block_cols) {
    return false;
  }
  for (int64_t x = 0; x < a.block_heads * a.block_rows * a.block_cols; ++x) {
    if ((a.blocks[x] != 0) != (b.blocks[x] != 0)) return false;
  }
  return true;
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

// Local index -> global position. Segments in increasing local and global
// order; segment s covers local [local_begin, local_begin + length) and maps
// local offset o to
//   global_begin + (o / stripe) * period + (o % stripe).
// A contiguous range has stripe == period (any value >= 1, we use 1); a
// striped shard has period = stripe * world. The map is strictly increasing,
// which the tile classifier and the per-row visible interval rely on.
// Up to kMaxSegments segments live in the map (a plain value the CUDA
// kernels copy); more (the balanced sharding of packed documents) live in
// `many`, owned by the Layout that made the map, host only.
struct PositionMap {
  static constexpr int kMaxSegments = 4;
  struct Segment {
    int64_t local_begin = 0;
    int64_t length = 0;
    int64_t global_begin = 0;
    int64_t stripe = 1;
    int64_t period = 1;
  };
  int64_t num_segments = 0;
  Segment seg[kMaxSegments];
  const Segment* many = nullptr;  // when num_segments > kMaxSegments

  static PositionMap Contiguous(int64_t global_begin, int64_t length) {
    PositionMap m;
    m.AddRange(global_begin, length);
    return m;
  }
  // The map of `n` contiguous ranges (local order = global order), held
  // inline when they fit, else viewing `ranges`, which must outlive it.
  static PositionMap OfSegments(const Segment* ranges, int64_t n) {
    PositionMap m;
    if (n > kMaxSegments) {
      m.many = ranges;
      m.num_segments = n;
    } else {
      for (int64_t s = 0; s < n; ++s) m.seg[m.num_segments++] = ranges[s];
    }
    return m;
  }
  // Appends a contiguous range at the end of the local index space (at
  // most kMaxSegments inline segments; further ones are dropped).
  void AddRange(int64_t global_begin, int64_t length) {
    AddStrided(global_begin, length, 1, 1);
  }
  void AddStrided(int64_t global_begin, int64_t length, int64_t stripe, int64_t period) {
    if (length <= 0 || num_segments >= kMaxSegments || many != nullptr) return;
    const int64_t local_begin = Length();
    seg[num_segments++] = Segment{local_begin, length, global_begin, stripe, period};
  }
  RINGATTN_HD const Segment* Segments() const { return many != nullptr ? many : seg; }
  RINGATTN_HD int64_t Length() const {
    const Segment* s = Segments();
    return num_segments == 0 ? 0 : s[num_segments - 1].local_begin + s[num_segments - 1].length;
  }
  RINGATTN_HD int64_t Global(int64_t local) const {
    const Segment* s = Segments();
    int64_t a = 0, z = num_segments;  // the last segment starting at or before `local`
    while (z - a > 1) {
      const int64_t mid = a + (z - a) / 2;
      if (s[mid].local_begin <= local) {
        a = mid;
      } else {
        z = mid;
      }
    }
    const Segment& g = s[a];
    const int64_t o = local - g.local_begin;
    return g.global_begin + (o / g.stripe) * g.period + (o % g.stripe);
  }
};

}  // namespace ringattn
