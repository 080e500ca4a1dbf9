// Device-side building blocks shared by the CUDA attention kernels:
//   - the PTX wrappers (ptx.cuh);
//   - the XOR-swizzled shared-memory layout of [rows][cols] 16-bit tiles;
//   - tile loaders (cp.async, rows outside the predicate zero-filled);
//   - global positions (PositionMap) and the liveness of a key row.
//
// Fragment layouts of mma.m16n8k16 (lane = 4 * g + t):
//   A 16x16: a0 = (row g,   cols 2t, 2t+1)   a1 = (row g+8, cols 2t, 2t+1)
//            a2 = (row g,   cols 2t+8, +9)   a3 = (row g+8, cols 2t+8, +9)
//   B 16x8:  b0 = (k rows 2t, 2t+1, col g)   b1 = (k rows 2t+8, 2t+9, col g)
//   C 16x8:  c0, c1 = (row g, cols 2t, 2t+1) c2, c3 = (row g+8, same cols)
// so the accumulators of two adjacent n8 tiles, packed to 16-bit pairs, are
// the A fragment of the next product (P and dS never go through memory).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention/cuda/ptx.cuh"
#include "attention/dtype.h"
#include "attention/mask.h"
#include "attention/params.h"

namespace ringattn::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ------------------------------------------------------ shared layout

// Element offset of the 8-element chunk holding column `col` (a multiple of
// 8) of row `row` in a [rows][kCols] 16-bit tile. The 16-byte chunk index
// is XORed with row % 8, so the 8 rows an ldmatrix reads at one column, and
// the 8 chunks a cp.async phase writes in one row, fall in distinct bank
// groups. A 32-column tile (4 chunks, two rows per 128 bytes) XORs with
// (row / 2) % 4 for the same effect.
template <int kCols>
RA_DEVICE int Swz(int row, int col) {
  static_assert(kCols % 64 == 0 || kCols == 32, "rows of 4 or of whole 8-chunk groups");
  if constexpr (kCols == 32) return row * kCols + ((((col >> 3) ^ ((row >> 1) & 3))) << 3);
  return row * kCols + ((((col >> 3) ^ (row & 7))) << 3);
}

// How the loaders below split a [kRows][kCols] 16-bit tile over kThreads
// threads: in iteration `it` a thread copies 16-byte chunk tid + it *
// kThreads, so it keeps its column and moves kRowStep rows per iteration.
// A load's `ok` bits (RowBits, FirstRows) are indexed by `it`.
template <int kRows, int kCols, int kThreads>
struct TileChunks {
  static constexpr int kChunksPerRow = kCols / 8;
  static constexpr int kIters = kRows * kChunksPerRow / kThreads;
  static constexpr int kRowStep = kThreads / kChunksPerRow;
  static_assert(kRows * kChunksPerRow % kThreads == 0, "even split");
  static_assert(kThreads % kChunksPerRow == 0, "each thread keeps its column");
  static_assert(kIters <= 32, "one bit of `ok` per iteration");
  // Row and column of chunk c = tid + it * kThreads.
  RA_DEVICE static int Row(int c) { return c / kChunksPerRow; }
  RA_DEVICE static int Col(int c) { return (c % kChunksPerRow) * 8; }
};
constexpr uint32_t kAllRows = ~0u;

// Bit `it`: whether this thread's row of iteration `it` passes pred. The
// loop is not unrolled, so an expensive predicate (KeyLive) is inlined
// once, not once per iteration of the unrolled loader.
template <int kRows, int kCols, int kThreads, class Pred>
RA_DEVICE uint32_t RowBits(int tid, Pred pred) {
  using C = TileChunks<kRows, kCols, kThreads>;
  uint32_t bits = 0;
#pragma unroll 1
  for (int it = 0; it < C::kIters; ++it) {
    if (pred(C::Row(tid + it * kThreads))) bits |= 1u << it;
  }
  return bits;
}

// The first `rows` rows of a tile as `ok` bits (a compare per iteration,
// unrolled: cheaper than RowBits' loop).
template <int kRows, int kCols, int kThreads>
RA_DEVICE uint32_t FirstRows(int tid, int rows) {
  using C = TileChunks<kRows, kCols, kThreads>;
  uint32_t bits = 0;
#pragma unroll
  for (int it = 0; it < C::kIters; ++it) {
    if (C::Row(tid + it * kThreads) < rows) bits |= 1u << it;
  }
  return bits;
}

// Loads [kRows][kCols] 16-bit tiles from two sources with the same rows
// (K and V, or Q and dO). Row r of source x starts at gx + r * stride_x
// (elements). The rows whose bit in `ok` is clear are zero-filled; ok =
// kAllRows loads every row with no predicate work. The global pointers
// move by a row step (not recomputed from the row, which kept more 64-bit
// offsets alive across the main loop); pointers to rows past the end are
// formed but never read (0 bytes).
template <int kRows, int kCols, int kThreads>
RA_DEVICE void LoadTiles2(uint16_t* sa, const uint16_t* ga, int64_t stride_a, uint16_t* sb,
                          const uint16_t* gb, int64_t stride_b, int tid, uint32_t ok) {
  using C = TileChunks<kRows, kCols, kThreads>;
  const int r0 = C::Row(tid), col = C::Col(tid);
  const uint16_t* pa = ga + r0 * stride_a + col;
  const uint16_t* pb = gb + r0 * stride_b + col;
#pragma unroll
  for (int it = 0; it < C::kIters; ++it) {
    const bool live = (ok >> it) & 1u;
    const int off = Swz<kCols>(r0 + it * C::kRowStep, col);
    CpAsync16(SmemAddr(sa + off), live ? pa : ga, live);
    CpAsync16(SmemAddr(sb + off), live ? pb : gb, live);
    if (it + 1 < C::kIters) {
      pa += C::kRowStep * stride_a;
      pb += C::kRowStep * stride_b;
    }
  }
}

// One source (the forward's Q, once per CTA).
template <int kRows, int kCols, int kThreads>
RA_DEVICE void LoadTile(uint16_t* s, const uint16_t* g, int64_t stride, int tid, uint32_t ok) {
  using C = TileChunks<kRows, kCols, kThreads>;
#pragma unroll
  for (int it = 0; it < C::kIters; ++it) {
    const int r = C::Row(tid + it * kThreads), col = C::Col(tid + it * kThreads);
    const bool live = (ok >> it) & 1u;
    CpAsync16(SmemAddr(s + Swz<kCols>(r, col)), live ? g + r * stride + col : g, live);
  }
}

// ------------------------------------------------------ positions

// The striped case of GlobalPos, out of line: its division is a long
// instruction sequence that would otherwise be inlined at every use. The
// offset o and the stripe are below 2^31 (CheckParams bounds the sequence),
// so the division is a 32-bit one, a third of a 64-bit one's code.
RA_DEVICE_NOINLINE int64_t StripedPos(int64_t global_begin, int64_t o, int64_t stripe,
                                      int64_t period) {
  const uint32_t uo = static_cast<uint32_t>(o), us = static_cast<uint32_t>(stripe);
  const uint32_t q = uo / us;
  return global_begin + int64_t{q} * period + (uo - q * us);
}

// PositionMap::Global, with stripe 1 (contiguous ranges) inline.
RA_DEVICE int64_t GlobalPos(const PositionMap& m, int64_t local) {
  int s = 0;
  while (s + 1 < m.num_segments && local >= m.seg[s + 1].local_begin) ++s;
  const PositionMap::Segment& g = m.seg[s];
  const int64_t o = local - g.local_begin;
  if (g.stripe == 1) return g.global_begin + o * g.period;
  return StripedPos(g.global_begin, o, g.stripe, g.period);
}

// First local index r in [lo, hi) with GlobalPos(r) >= value, else hi
// (positions increase with the local index).
RA_DEVICE int64_t LowerBoundPos(const PositionMap& m, int64_t lo, int64_t hi, int64_t value) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (GlobalPos(m, mid) < value) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Whether some query row r in [r_begin, r_end) of some query head in
// [h0, h1) sees the key at position kp: the first row at or after the key's
// QueryBounds.lo must also lie at or before its hi, and with a block mask
// one of the rows in between must lie in a block whose pair with kp's block
// is on (one binary search per query block the rows span). Keys that no row
// sees are zero-filled in shared memory, so that NaN or Inf stored at a
// masked-out key never reaches an output (0 * NaN = NaN in mma).
RA_DEVICE bool KeyLive(const Mask& m, const PositionMap& q, int64_t r_begin, int64_t r_end,
                       int64_t kp, int64_t h0, int64_t h1) {
  if (m.IsNone()) return true;
  const PosRange seen_by = m.QueryBounds(kp);
  int64_t r = r_begin;
  if (seen_by.lo != PosRange::kMinPos) r = LowerBoundPos(q, r_begin, r_end, seen_by.lo);
  if (r >= r_end) return false;
  if (seen_by.hi != PosRange::kMaxPos && GlobalPos(q, r) > seen_by.hi) return false;
  if (!m.HasBlocks()) return true;
  const int64_t last =
      seen_by.hi == PosRange::kMaxPos ? r_end : LowerBoundPos(q, r, r_end, seen_by.hi + 1);
  while (r < last) {
    const int64_t qp = GlobalPos(q, r);
    for (int64_t h = h0; h < h1; ++h) {
      if (m.ForHead(h).BlockOn(qp, kp)) return true;
    }
    r = LowerBoundPos(q, r, last, (qp / m.block_size + 1) * m.block_size);  // the next block
  }
  return false;
}



// The local columns [*begin, *end) among [0, n) whose increasing positions
// pos[c] lie in [lo, hi]: the visible keys of one query row in a tile (or
// the visible queries of one key row), so a partial tile's mask costs two
// integer compares per element.
RA_DEVICE void PosInterval(const int64_t* pos, int n, int64_t lo, int64_t hi, int* begin,
                           int* end) {
  int a = 0, z = n;
  while (a < z) {
    const int mid = (a + z) >> 1;
    if (pos[mid] < lo) {
      a = mid + 1;
    } else {
      z = mid;
    }
  }
  int c = a;
  z = n;
  while (c < z) {
    const int mid = (c + z) >> 1;
    if (pos[mid] <= hi) {
      c = mid + 1;
    } else {
      z = mid;
    }
  }
  *begin = a;
  *end = c;
}

// PosInterval in O(1) when the n >= 1 positions are consecutive (pos[c] =
// pos[0] + c; the map is strictly increasing, so pos[n-1] - pos[0] == n - 1
// says so): tiles of contiguous shards and of zigzag chunks. Otherwise the
// binary searches (striped shards).
RA_DEVICE void VisibleRange(const int64_t* pos, int n, int64_t lo, int64_t hi, int* begin,
                            int* end) {
  const int64_t first = pos[0], last = pos[n - 1];
  if (last - first != n - 1) {
    PosInterval(pos, n, lo, hi, begin, end);
    return;
  }
  // Compared before subtracting: lo and hi may be INT64_MIN / INT64_MAX.
  const int b = lo <= first ? 0 : lo > last ? n : static_cast<int>(lo - first);
  const int e = hi >= last ? n : hi < first ? 0 : static_cast<int>(hi - first + 1);
  *begin = b;
  *end = e < b ? b : e;
}

// Stores two adjacent fp32 values of an output row as out_dtype.
RA_DEVICE void StorePair(void* row, DType t, int col, float x, float y) {
  if (t == DType::kFloat32) {
    *reinterpret_cast<float2*>(static_cast<float*>(row) + col) = make_float2(x, y);
  } else if (t == DType::kBFloat16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(row) + col) =
        __floats2bfloat162_rn(x, y);
  } else {
    *reinterpret_cast<__half2*>(static_cast<__half*>(row) + col) = __floats2half2_rn(x, y);
  }
}

// One element of a 16-bit or fp32 tensor as float.
RA_DEVICE float LoadAsFloat(const void* base, DType t, int64_t off) {
  if (t == DType::kFloat32) return static_cast<const float*>(base)[off];
  if (t == DType::kBFloat16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[off]);
  return __half2float(static_cast<const __half*>(base)[off]);
}

// Stores one element of a 16-bit or fp32 tensor, rounded to nearest even.
RA_DEVICE void StoreFromFloat(void* base, DType t, int64_t off, float x) {
  if (t == DType::kFloat32) {
    static_cast<float*>(base)[off] = x;
  } else if (t == DType::kBFloat16) {
    static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(x);
  } else {
    static_cast<__half*>(base)[off] = __float2half_rn(x);
  }
}

// Next key or query tile of a CTA's sweep that is not empty; t < 0: none.
struct TileStep {
  int t = -1;  // tile index (sequences are shorter than 2^31: kernels.cc)
  int g = 0;             // backward: the query head within the GQA group
  bool partial = false;  // per-element mask inside the tile
  bool tail = false;     // the tile runs past the end of the sequence
  RA_DEVICE bool masked() const { return partial || tail; }
};

// The tiles of one side (keys, or queries) that a CTA owning the other
// side's positions [x_min, x_max] sweeps, from the mask's bounds of its two
// corners (Mask::KeyBounds for the keys of queries, QueryBounds for the
// queries of keys): `at_min` = bounds(x_min), `at_max` = bounds(x_max).
// The bounds never decrease with x and positions increase with the index,
// so the items some point sees lie in [at_min.lo, at_max.hi] -- the tiles
// holding them are one range [t_begin, t_end) -- and the items EVERY point
// sees are [at_max.lo, at_min.hi], one range [full_begin, full_end): a tile
// inside it is unmasked. Four binary searches per CTA, then O(1) per tile
// (Mask::Classify would read two positions per tile).
template <int kTile>
struct TileRange {
  // Tile indices fit in 32 bits: the dispatch refuses sequences of 2^31
  // items or more (and 32-bit loop state keeps registers for the mma).
  int t_begin = 0, t_end = 0;    // the tiles with a seen item
  int ft_begin = 0, ft_end = 0;  // the tiles whose items all points see

  // `bounds(x)`: the mask's bounds of point x (Mask::KeyBounds or
  // QueryBounds), evaluated where each search needs it.
  template <class Bounds>
  RA_DEVICE TileRange(const PositionMap& pos, int64_t len, Bounds bounds, int64_t x_min,
                      int64_t x_max) {
    int64_t begin = 0, end = len;
    const int64_t lo_min = bounds(x_min).lo;
    const bool has_lo = lo_min != PosRange::kMinPos;
    if (has_lo) begin = LowerBoundPos(pos, 0, len, lo_min);
    const int64_t hi_max = bounds(x_max).hi;
    const bool has_hi = hi_max != PosRange::kMaxPos;
    if (has_hi) end = LowerBoundPos(pos, begin, len, hi_max + 1);
    if (begin >= end) return;  // nothing seen: no tiles
    t_begin = static_cast<int>(begin / kTile);
    t_end = static_cast<int>((end + kTile - 1) / kTile);
    // Items [full_begin, full_end) are seen by every point; a tile is
    // unmasked when it lies inside (the last, short tile too).
    const int64_t full_begin = has_lo ? LowerBoundPos(pos, begin, end, bounds(x_max).lo) : 0;
    const int64_t full_end = has_hi ? LowerBoundPos(pos, begin, end, bounds(x_min).hi + 1) : len;
    ft_begin = static_cast<int>((full_begin + kTile - 1) / kTile);
    ft_end = static_cast<int>(full_end == len ? (len + kTile - 1) / kTile : full_end / kTile);
  }

  RA_DEVICE bool empty() const { return t_begin >= t_end; }

  // Tile t (t_begin <= t), or none (st.t < 0) past the end; `len` items on
  // this side (a parameter, not a member: one 64-bit value fewer alive
  // across the kernels' main loops, where AttnParams already holds it).
  RA_DEVICE TileStep At(int t, int64_t len) const {
    TileStep st;
    if (t >= t_end) return st;
    st.t = t;
    st.partial = t < ft_begin || t >= ft_end;
    st.tail = len - int64_t{t} * kTile < kTile;
    return st;
  }
};

// TileRange::At(t, len), and with a block mask (`blocks`) the first tile
// from t on that is not empty by `block_class(t)` (the Mask::BlockClass of
// tile t against the CTA's positions); a tile over mixed blocks is
// partial. Without one, At itself.
template <class Range, class BlockClassOf>
RA_DEVICE TileStep NextTile(const Range& range, int t, int64_t len, bool blocks,
                            BlockClassOf block_class) {
  TileStep st = range.At(t, len);
  if (!blocks) return st;
  for (; st.t >= 0; st = range.At(st.t + 1, len)) {
    const TileClass c = block_class(st.t);
    if (c == TileClass::kEmpty) continue;
    st.partial = st.partial || c == TileClass::kPartial;
    return st;
  }
  return st;
}

// Mask::BlockClass of `kTile` items from tile t of positions `pos` (len
// items) against positions [x_min, x_max] of the other side, in head h;
// tile_is_query says which side the tile is.
template <int kTile>
RA_DEVICE TileClass TileBlockClass(const Mask& m, int64_t h, const PositionMap& pos, int64_t len,
                                   int t, int64_t x_min, int64_t x_max, bool tile_is_query) {
  const int64_t first = int64_t{t} * kTile;
  const int64_t last = (len - first < kTile ? len : first + kTile) - 1;
  const int64_t a = GlobalPos(pos, first), z = GlobalPos(pos, last);
  const Mask hm = m.ForHead(h);
  return tile_is_query ? hm.BlockClass(a, z, x_min, x_max) : hm.BlockClass(x_min, x_max, a, z);
}

// The next key tile from t on that a CTA owning query positions [q_min,
// q_max] of head h sweeps (`tiles` = KeyTiles<kTile>), skipping tiles whose
// block pairs are all off: the forward kernels' and the dQ pass's step.
template <int kTile>
RA_DEVICE TileStep NextKeyTile(const AttnParams& p, const TileRange<kTile>& tiles, int t,
                               int64_t h, int64_t q_min, int64_t q_max) {
  return NextTile(tiles, t, p.seqlen_k, p.mask.HasBlocks(), [&](int x) {
    return TileBlockClass<kTile>(p.mask, h, p.k_pos, p.seqlen_k, x, q_min, q_max,
                                 /*tile_is_query=*/false);
  });
}

// The key tiles that query positions [q_min, q_max] may see.
template <int kTile>
RA_DEVICE TileRange<kTile> KeyTiles(const AttnParams& p, int64_t q_min, int64_t q_max) {
  return TileRange<kTile>(
      p.k_pos, p.seqlen_k, [&](int64_t q) { return p.mask.KeyBounds(q); }, q_min, q_max);
}

// The query tiles that may see key positions [k_min, k_max].
template <int kTile>
RA_DEVICE TileRange<kTile> QueryTiles(const AttnParams& p, int64_t k_min, int64_t k_max) {
  return TileRange<kTile>(
      p.q_pos, p.seqlen_q, [&](int64_t k) { return p.mask.QueryBounds(k); }, k_min, k_max);
}

// Loads key tile `st` for a CTA owning query rows [i0, i0 + rows) of query
// head h (the forward, the deterministic dQ pass): K and V into sk, sv,
// zero-filling keys past the end and, in a partial tile, the keys no row of
// the CTA sees; a masked tile also gets its keys' positions in kpos.
template <int kN, int kD, int kThreads>
RA_DEVICE void LoadKeyTile(const AttnParams& p, const TileStep& st, const uint16_t* k_head,
                           const uint16_t* v_head, int64_t i0, int rows, int64_t h, uint16_t* sk,
                           uint16_t* sv, int64_t* kpos, int tid) {
  const int64_t j0 = int64_t{st.t} * kN;
  const int n = static_cast<int>(p.seqlen_k - j0 < kN ? p.seqlen_k - j0 : kN);
  uint32_t ok = kAllRows;
  if (st.partial) {
    ok = RowBits<kN, kD, kThreads>(tid, [&](int r) {
      return r < n &&
             KeyLive(p.mask, p.q_pos, i0, i0 + rows, GlobalPos(p.k_pos, j0 + r), h, h + 1);
    });
  } else if (st.tail) {
    ok = FirstRows<kN, kD, kThreads>(tid, n);
  }
  LoadTiles2<kN, kD, kThreads>(sk, k_head + j0 * p.k_stride.seq, p.k_stride.seq, sv,
                               v_head + j0 * p.v_stride.seq, p.v_stride.seq, tid, ok);
  if (st.masked()) {
    for (int r = tid; r < n; r += kThreads) kpos[r] = GlobalPos(p.k_pos, j0 + r);
  }
}

}  // namespace ringattn::cuda::detail
