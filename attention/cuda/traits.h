// Compile-time tile shapes of the CUDA attention kernels, readable by the
// host dispatch (shared-memory sizes, grid sizes) without a CUDA compiler.
//
//   FwdTraits<D>    forward: a CTA owns kBlockM query rows (each warp
//                   16 * kMTiles of them) and streams kBlockN-key tiles of K
//                   and V through a kStages-deep cp.async ring.
//   BwdTraits<D>    backward: a CTA owns kBlockN keys (each warp 16) and
//                   streams kBlockM-query tiles of Q, dO, lse, dsum.
//   BwdDqTraits<D>  deterministic dQ: a CTA owns kBlockM query rows and
//                   streams key tiles, like the forward.
// Shared memory is laid out as the byte offsets below; every 16-bit tile is
// [rows][D] with the 16-byte chunks XOR-swizzled by (row % 8).
#pragma once

#include <cstdint>

namespace ringattn::cuda {

template <int kHeadDim>
struct FwdTraits {
  static constexpr int kD = kHeadDim;
  // 128 query rows per CTA either way. D=64: 4 warps of 32 rows (each K/V
  // fragment feeds two mma) over 32-key tiles; D=128: 8 warps of 16 rows
  // over 64-key tiles, since 32 rows x 128 dims of O alone would take half
  // the register file. Both fit in 255 registers without spills (ptxas -v).
  static constexpr int kWarps = kHeadDim <= 64 ? 4 : 8;
  static constexpr int kMTiles = kHeadDim <= 64 ? 2 : 1;  // m16 row tiles per warp
  static constexpr int kBlockM = 16 * kMTiles * kWarps;
  static constexpr int kBlockN = kHeadDim <= 64 ? 32 : 64;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStages = 2;
  static constexpr bool kQInRegs = true;  // Q fragments loaded once per CTA

  static constexpr int kQBytes = kBlockM * kD * 2;
  static constexpr int kTileBytes = kBlockN * kD * 2;  // one K or V tile
  static constexpr int kPosBytes = kBlockN * 8;        // key positions
  static constexpr int kStageBytes = 2 * kTileBytes + kPosBytes;
  static constexpr int kQPosBytes = kBlockM * 8;  // query positions
  static constexpr int kSmemBytes = kQBytes + kStages * kStageBytes + kQPosBytes;

  static_assert(kD % 64 == 0, "rows are whole 8-chunk swizzle groups");
  static_assert(kBlockN % 16 == 0 && kBlockM % 16 == 0, "whole mma tiles");
  static_assert((kBlockN * kD / 8) % kThreads == 0, "K/V tiles split evenly over threads");
  static_assert((kBlockM * kD / 8) % kThreads == 0, "Q tile splits evenly over threads");
  static_assert(kStages == 2, "the loop alternates two stages");
};

template <int kHeadDim>
struct BwdTraits {
  static constexpr int kD = kHeadDim;
  static constexpr int kWarps = 4;
  static constexpr int kBlockN = 16 * kWarps;               // keys per CTA, 16 per warp
  static constexpr int kBlockM = kHeadDim <= 64 ? 64 : 32;  // queries per inner tile
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStages = 2;
  // dQ = dS K is split over the warps as row groups x column groups.
  static constexpr int kDqRowGroups = kBlockM / 16;
  static constexpr int kDqColGroups = kWarps / kDqRowGroups;
  static constexpr int kDqCols = kD / kDqColGroups;
  static constexpr int kDqChunk = kDqCols < 32 ? kDqCols : 32;  // accumulated at a time

  static constexpr int kKVBytes = kBlockN * kD * 2;
  static constexpr int kKPosBytes = kBlockN * 8;
  static constexpr int kDsBytes = kBlockN * kBlockM * 2;  // dS^T [keys][queries]
  static constexpr int kQTileBytes = kBlockM * kD * 2;    // Q or dO
  static constexpr int kQStageBytes = 2 * kQTileBytes + kBlockM * (4 + 4 + 8);
  static constexpr int kFixedBytes = 2 * kKVBytes + kKPosBytes + kDsBytes;
  static constexpr int kSmemBytes = kFixedBytes + kStages * kQStageBytes;

  static_assert(kD % 64 == 0, "rows are whole 8-chunk swizzle groups");
  static_assert(kBlockM % 64 == 0 || kBlockM == 32, "dS^T rows fit the swizzle");
  static_assert(kWarps % kDqRowGroups == 0, "dQ warp grid");
  static_assert(kDqCols % kDqChunk == 0 && kDqChunk % 16 == 0, "dQ chunks");
  static_assert((kBlockN * kD / 8) % kThreads == 0, "K/V tiles split evenly over threads");
  static_assert((kBlockM * kD / 8) % kThreads == 0, "Q/dO tiles split evenly over threads");
  static_assert(kBlockM <= kThreads, "one thread per query row loads lse/dsum");
  static_assert(kBlockN <= kThreads, "one thread per key row computes its position");
};

template <int kHeadDim>
struct BwdDqTraits {
  static constexpr int kD = kHeadDim;
  static constexpr int kWarps = 4;
  static constexpr int kBlockM = 16 * kWarps;  // 16 query rows per warp
  static constexpr int kBlockN = kHeadDim <= 64 ? 64 : 32;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStages = 2;

  static constexpr int kQTileBytes = kBlockM * kD * 2;  // Q or dO
  static constexpr int kTileBytes = kBlockN * kD * 2;   // K or V
  static constexpr int kPosBytes = kBlockN * 8;
  static constexpr int kStageBytes = 2 * kTileBytes + kPosBytes;
  static constexpr int kSmemBytes = 2 * kQTileBytes + kStages * kStageBytes;

  static_assert(kD % 64 == 0, "rows are whole 8-chunk swizzle groups");
  static_assert((kBlockN * kD / 8) % kThreads == 0, "K/V tiles split evenly over threads");
  static_assert((kBlockM * kD / 8) % kThreads == 0, "Q/dO tiles split evenly over threads");
};

}  // namespace ringattn::cuda
