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

// Loads [kRows][kCols] 16-bit tiles from two sources with the same row
// predicate (K and V, or Q and dO). Row r of source x starts at
// gx + r * stride_x (elements). Rows with !pred(r) are zero-filled.
template <int kRows, int kCols, int kThreads, class Pred>
RA_DEVICE void LoadTiles2(uint16_t* sa, const uint16_t* ga, int64_t stride_a, uint16_t* sb,
                          const uint16_t* gb, int64_t stride_b, int tid, Pred pred) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kIters = kRows * kChunksPerRow / kThreads;
  static_assert(kRows * kChunksPerRow % kThreads == 0, "even split");
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = tid + it * kThreads;
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const bool ok = pred(r);
    const int off = Swz<kCols>(r, col);
    CpAsync16(SmemAddr(sa + off), ok ? ga + r * stride_a + col : ga, ok);
    CpAsync16(SmemAddr(sb + off), ok ? gb + r * stride_b + col : gb, ok);
  }
}

template <int kRows, int kCols, int kThreads, class Pred>
RA_DEVICE void LoadTile(uint16_t* s, const uint16_t* g, int64_t stride, int tid, Pred pred) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kIters = kRows * kChunksPerRow / kThreads;
  static_assert(kRows * kChunksPerRow % kThreads == 0, "even split");
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = tid + it * kThreads;
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const bool ok = pred(r);
    CpAsync16(SmemAddr(s + Swz<kCols>(r, col)), ok ? g + r * stride + col : g, ok);
  }
}

// ------------------------------------------------------ positions

// The striped case of GlobalPos, out of line: its 64-bit division is a
// long instruction sequence that would otherwise be inlined at every use.
RA_DEVICE_NOINLINE inline int64_t StripedPos(int64_t global_begin, int64_t o, int64_t stripe,
                                             int64_t period) {
  return global_begin + (o / stripe) * period + (o % stripe);
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

// Whether some query row r in [r_begin, r_end) sees the key at position kp:
// the first row at or after kp - right must also lie at or before kp + left.
// Keys that no row sees are zero-filled in shared memory, so that NaN or Inf
// stored at a masked-out key never reaches an output (0 * NaN = NaN in mma).
RA_DEVICE bool KeyLive(const Mask& m, const PositionMap& q, int64_t r_begin, int64_t r_end,
                       int64_t kp) {
  if (m.IsNone()) return true;
  int64_t r = r_begin;
  if (m.HasRight()) r = LowerBoundPos(q, r_begin, r_end, kp - m.RightOffset());
  if (r >= r_end) return false;
  if (m.HasLeft()) return GlobalPos(q, r) <= kp + m.window_left;
  return true;
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

// Visible key positions [*lo, *hi] of the query at position qp.
RA_DEVICE void KeyBounds(const Mask& m, int64_t qp, int64_t* lo, int64_t* hi) {
  *lo = m.HasLeft() ? qp - m.window_left : INT64_MIN;
  *hi = m.HasRight() ? qp + m.RightOffset() : INT64_MAX;
}

// Visible query positions [*lo, *hi] of the key at position kp.
RA_DEVICE void QueryBounds(const Mask& m, int64_t kp, int64_t* lo, int64_t* hi) {
  *lo = m.HasRight() ? kp - m.RightOffset() : INT64_MIN;
  *hi = m.HasLeft() ? kp + m.window_left : INT64_MAX;
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

// Next key or query tile of a CTA's sweep that is not empty; t < 0: none.
struct TileStep {
  int64_t t = -1;
  int g = 0;             // backward: the query head within the GQA group
  bool partial = false;  // per-element mask inside the tile
  bool tail = false;     // the tile runs past the end of the sequence
  RA_DEVICE bool masked() const { return partial || tail; }
};

}  // namespace ringattn::cuda::detail
