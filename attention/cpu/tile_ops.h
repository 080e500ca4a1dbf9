// The vector work of the CPU kernels between their GEMMs, one tile at a
// time: the forward's online softmax and the backward's P and dS. One
// algorithm (tile_ops_impl.h) is compiled for three instruction sets, each
// in a translation unit of its own: AVX-512 (tile_ops_avx512.cc, built with
// AVX-512 flags), AVX2 (tile_ops.cc, the build's -march) and scalar C++.
// The build targets x86-64-v3 so that it runs on any AVX2 machine; the
// AVX-512 set runs where the CPU has it, chosen at run time (ChooseTileOps).
//
// This header is included by the AVX-512 unit, so it defines no function:
// an inline function compiled there with AVX-512 could be the copy the
// linker keeps for the whole program, and fault on an AVX2-only CPU.
#pragma once

#include <cstdint>

namespace ringattn::cpu {

// Above this growth of a row's running max (in log2 units, so a factor of
// 2^8) the forward rescales the row's output and sum; below it the row keeps
// its stale max and its exponentials grow to at most 2^8: no overflow, the
// same relative rounding, and no rescaling once the max has settled.
inline constexpr float kLazyRescaleLog2 = 8.0f;

struct TileOps {
  const char* isa;  // "avx512", "avx2", "scalar"

  // s[r][j] <- cap * tanh(s[r][j]) over count contiguous values; t (if not
  // null) receives tanh(s). (Scores of padding rows and columns are 0 and
  // stay 0.)
  void (*softcap)(float* s, float* t, int64_t count, float cap);

  // The forward's online softmax over a tile of base-2 scores s [rows][ld]
  // whose first n columns are keys (masked ones -inf) and the rest padding.
  // Per row r: m[r] is the running max (the subtrahend), l[r] the running
  // sum, o [rows][d] the unnormalised output. When the tile's max exceeds
  // m[r] by more than kLazyRescaleLog2 (or m[r] is -inf), m[r] takes it and
  // o[r] and l[r] are rescaled; then s[r][j] <- exp2(s[r][j] - m[r]) for
  // j < n, 0 for j >= n, and l[r] += their sum (in a fixed order). -inf
  // scores give exactly 0 and NaN stays NaN.
  void (*online_softmax)(float* s, int64_t rows, int64_t n, int64_t ld, float* m, float* l,
                         float* o, int64_t d);

  // The backward, in the transposed score domain: for each key row j <
  // rows and query column i < cols (both [rows][cols] contiguous):
  //   p[j][i] <- exp2(p[j][i] - lse2[i])                  (p holds S^T)
  //   ds[j][i] <- p * (ds[j][i] - dsum[i]) * scale        (ds holds dP^T)
  //               [* (1 - t[j][i]^2) when t is not null: the softcap]
  void (*probs_and_grads)(float* p, float* ds, const float* t, const float* lse2,
                          const float* dsum, int64_t rows, int64_t cols, float scale);
};

// The three sets. In a build without the AVX-512 unit kAvx512TileOps.isa is
// null, and so is kAvx2TileOps.isa in a build below AVX2 (ChooseTileOps in
// kernels.h picks among those present).
extern const TileOps kAvx512TileOps;
extern const TileOps kAvx2TileOps;
extern const TileOps kScalarTileOps;

// Whether this CPU (and OS) runs AVX-512 F/DQ/BW/VL code.
bool CpuHasAvx512();

}  // namespace ringattn::cpu
