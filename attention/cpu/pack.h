// Helpers shared by the CPU forward and backward: strided, typed row loads
// and stores, the expansion of position maps, and tile transposes.
#pragma once

#include <unistd.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attention/dtype.h"
#include "attention/mask.h"
#include "attention/params.h"

namespace ringattn::cpu {

inline int64_t Offset(const TensorStrides& s, int64_t b, int64_t i, int64_t h) {
  return b * s.batch + i * s.seq + h * s.head;
}

// dst[0..n) <- mul * src row (dtype) at element offset `off`.
inline void LoadRow(const void* base, DType t, int64_t off, int64_t n, float mul, float* dst) {
  if (t == DType::kFloat32) {
    const float* src = static_cast<const float*>(base) + off;
    if (mul == 1.0f) {
      std::memcpy(dst, src, n * sizeof(float));
    } else {
      for (int64_t d = 0; d < n; ++d) dst[d] = src[d] * mul;
    }
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(base) + off;
    for (int64_t d = 0; d < n; ++d) dst[d] = BF16ToFloat(src[d]) * mul;
  }
}

inline void StoreRow(void* base, DType t, int64_t off, int64_t n, const float* src) {
  if (t == DType::kFloat32) {
    std::memcpy(static_cast<float*>(base) + off, src, n * sizeof(float));
  } else {
    uint16_t* dst = static_cast<uint16_t*>(base) + off;
    for (int64_t d = 0; d < n; ++d) dst[d] = FloatToBF16(src[d]);
  }
}

// Whether no x is NaN or +-Inf (all exponent bits set). An OR of bit tests,
// which the compiler vectorizes (a float sum would be added lane by lane).
inline bool AllFinite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t d = 0; d < n; ++d) {
    uint32_t u;
    std::memcpy(&u, x + d, sizeof(u));
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Global positions of local rows [0, n), padded to `padded` entries with the
// last position (padding rows are never visible: callers mask them).
inline std::vector<int64_t> ExpandPositions(const PositionMap& m, int64_t n, int64_t padded) {
  std::vector<int64_t> pos(padded);
  for (int64_t i = 0; i < n; ++i) pos[i] = m.Global(i);
  for (int64_t i = n; i < padded; ++i) pos[i] = n > 0 ? pos[n - 1] : 0;
  return pos;
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The per-core L2 size, which the kernels' passes are sized to (1 MiB where
// the system does not say). Only speed depends on it, never a result.
inline int64_t L2CacheBytes() {
  static const int64_t bytes = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? static_cast<int64_t>(v) : int64_t{1} << 20;
  }();
  return bytes;
}

#ifdef __AVX2__
// One 8 x 8 block in registers: unpack pairs of rows, shuffle quads, swap
// 128-bit halves (eight loads, 24 shuffles, eight stores).
inline void Transpose8x8(const float* s, int64_t ls, float* d, int64_t ld) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(d + i * ld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(d + (i + 4) * ld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
#endif

// dst[c][r] = src[r][c] for a rows x cols block (row-major both).
inline void Transpose(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
                      int64_t ld_dst) {
  constexpr int64_t kB = 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kB)
    for (int64_t c0 = 0; c0 < cols; c0 += kB) {
#ifdef __AVX2__
      if (r0 + kB <= rows && c0 + kB <= cols) {
        Transpose8x8(src + r0 * ld_src + c0, ld_src, dst + c0 * ld_dst + r0, ld_dst);
        continue;
      }
#endif
      for (int64_t r = r0; r < std::min(rows, r0 + kB); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kB); ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

// Key tile [j0, j0 + n) of (b, hk), n <= kn: K and V rows into k_rows and
// v_rows ([kn][D], zero past n) and K^T into k_t ([D][kn]). Returns whether
// any K or V value is non-finite (the kernels' partial tiles then take their
// NaN-safe paths). Shared by the forward's and the backward's packing.
inline bool PackKeyTile(const AttnParams& p, int64_t b, int64_t hk, int64_t j0, int64_t n,
                        int64_t kn, float* k_rows, float* v_rows, float* k_t) {
  const int64_t D = p.head_dim;
  for (int64_t j = 0; j < n; ++j) {
    LoadRow(p.k, p.dtype, Offset(p.k_stride, b, j0 + j, hk), D, 1.0f, k_rows + j * D);
    LoadRow(p.v, p.dtype, Offset(p.v_stride, b, j0 + j, hk), D, 1.0f, v_rows + j * D);
  }
  std::fill(k_rows + n * D, k_rows + kn * D, 0.0f);
  std::fill(v_rows + n * D, v_rows + kn * D, 0.0f);
  Transpose(k_rows, kn, D, D, k_t, kn);
  return !AllFinite(k_rows, n * D) || !AllFinite(v_rows, n * D);
}

}  // namespace ringattn::cpu
