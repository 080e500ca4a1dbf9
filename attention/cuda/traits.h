// Compile-time tile shapes of the CUDA attention kernels, readable by the
// host dispatch (shared-memory sizes, grid sizes) without a CUDA compiler.
//
//   FwdTraits<D>    forward: a CTA owns kBlockM query rows (each warp
//                   16 * kMTiles of them) and streams kBlockN-key tiles of K
//                   and V through a kStages-deep cp.async ring.
//   BwdTraits<D>    backward: a CTA owns kBlockN keys (16 per group of
//                   kDSplit warps, which split dK/dV along D) and streams
//                   kBlockM-query tiles of Q, dO, lse, dsum.
//   BwdDqTraits<D>  deterministic dQ: a CTA owns kBlockM query rows and
//                   streams key tiles, like the forward.
// Shared memory is laid out as the byte offsets below; every 16-bit tile is
// [rows][D] with the 16-byte chunks XOR-swizzled by (row % 8).
#pragma once

#include <cstdint>
#include <type_traits>

namespace ringattn::cuda {

// The head dims the kernels are built for. WithHeadDim(d, f, otherwise)
// returns f.template operator()<D>() for d == D among them, otherwise():
// the one place that maps a run-time head dim to the instantiated kernels
// (dispatch, shared-memory sizes, the bench, the emulator).
constexpr bool HeadDimBuilt(int64_t d) { return d == 64 || d == 128 || d == 256; }

template <class F, class G>
auto WithHeadDim(int64_t d, F&& f, G&& otherwise) {
  switch (d) {
    case 64: return f.template operator()<64>();
    case 128: return f.template operator()<128>();
    case 256: return f.template operator()<256>();
    default: return otherwise();
  }
}

// FwdConfig is the family of forward tile shapes; FwdTraits<D> names the
// one the library launches (`cuda_tune --tune` times the others: the
// cuda_tune target, bench/cuda_attn_bench.cu built with RINGATTN_TUNE).
template <int kHeadDim, int kWarps_, int kMTiles_, int kBlockN_, bool kQInRegs_, int kMinBlocks_ = 1>
struct FwdConfig {
  static constexpr int kD = kHeadDim;
  static constexpr int kWarps = kWarps_;
  static constexpr int kMTiles = kMTiles_;  // m16 row tiles per warp
  static constexpr int kBlockM = 16 * kMTiles * kWarps;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kStages = 2;
  static constexpr bool kQInRegs = kQInRegs_;  // Q fragments loaded once per CTA
  static constexpr int kMinBlocks = kMinBlocks_;  // __launch_bounds__ CTAs per SM

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

// The launched forward shapes, chosen by `cuda_tune --tune` on an H100
// (bf16, S=8192; docs/PERF.md): D=64: 4 warps of 32 rows over 64-key
// tiles, Q fragments in registers; D=128: 8 warps of 32 rows (256 query
// rows per CTA) over 64-key tiles, Q read from shared memory each tile:
// two m16 tiles per warp halve the K/V fragment loads per mma, which
// matters more than the few spilled registers (280 B). D=256 (not tuned on
// a GPU yet): 8 warps of 16 rows over 32-key tiles, Q in shared memory --
// the output accumulator alone is 128 registers per thread, and the
// 130 KB of shared memory fit an A100 (163 KB per block) as well.
template <int kHeadDim>
using FwdTraits = std::conditional_t<
    kHeadDim <= 64, FwdConfig<kHeadDim, 4, 2, 64, true>,
    std::conditional_t<kHeadDim <= 128, FwdConfig<kHeadDim, 8, 2, 64, false>,
                       FwdConfig<kHeadDim, 8, 1, 32, false>>>;

template <int kHeadDim, int kWarps_, int kBlockM_, int kMinBlocks_ = 1, int kDSplit_ = 1>
struct BwdConfig {
  static constexpr int kD = kHeadDim;
  static constexpr int kWarps = kWarps_;
  static constexpr int kMinBlocks = kMinBlocks_;
  // kDSplit warps share 16 keys: each computes their S^T and dP^T (the
  // work is repeated) and owns kD / kDSplit columns of their dK and dV, so
  // that the accumulators fit in registers at large head dims.
  static constexpr int kDSplit = kDSplit_;
  static constexpr int kKeyWarps = kWarps / kDSplit;        // warps with distinct keys
  static constexpr int kDPart = kD / kDSplit;               // dK/dV columns per warp
  static constexpr int kBlockN = 16 * kKeyWarps;            // keys per CTA, 16 per key warp
  static constexpr int kBlockM = kBlockM_;  // queries per inner tile
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
  static_assert(kWarps % kDSplit == 0 && kD % kDSplit == 0 && kDPart % 16 == 0,
                "dK/dV columns split evenly");
  static_assert(kD % kDqColGroups == 0, "dQ columns split evenly");
  static_assert(kBlockM % 64 == 0 || kBlockM == 32, "dS^T rows fit the swizzle");
  static_assert(kWarps % kDqRowGroups == 0, "dQ warp grid");
  static_assert(kDqCols % kDqChunk == 0 && kDqChunk % 16 == 0, "dQ chunks");
  static_assert((kBlockN * kD / 8) % kThreads == 0, "K/V tiles split evenly over threads");
  static_assert((kBlockM * kD / 8) % kThreads == 0, "Q/dO tiles split evenly over threads");
  static_assert(kBlockM <= kThreads, "one thread per query row loads lse/dsum");
  static_assert(kBlockN <= kThreads, "one thread per key row computes its position");
};

// The launched backward shapes (same sweep): 8 warps of 16 keys (128 keys
// per CTA); 128 (D=64) or 64 (D=128) queries per inner tile. D=256 (not
// tuned on a GPU yet): pairs of warps share 16 keys and split dK/dV into
// two halves of 128 columns (16 keys x 256 columns of dK and dV would be
// 256 accumulator registers per thread), so 64 keys per CTA, and 32
// queries per inner tile (134 KB of shared memory, within an A100's).
template <int kHeadDim>
using BwdTraits = std::conditional_t<
    kHeadDim <= 64, BwdConfig<kHeadDim, 8, 128>,
    std::conditional_t<kHeadDim <= 128, BwdConfig<kHeadDim, 8, 64>,
                       BwdConfig<kHeadDim, 8, 32, 1, 2>>>;

// The deterministic dQ pass: kWarps warps of 16 query rows over kBlockN-key
// tiles. BwdDqTraits<D> names the launched one (D=256: 16-key tiles spill
// about 60 B, 32-key tiles about 290 B; not timed on a GPU yet).
template <int kHeadDim, int kWarps_, int kBlockN_>
struct BwdDqConfig {
  static constexpr int kD = kHeadDim;
  static constexpr int kWarps = kWarps_;
  static constexpr int kBlockM = 16 * kWarps;  // 16 query rows per warp
  static constexpr int kBlockN = kBlockN_;
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

template <int kHeadDim>
using BwdDqTraits =
    BwdDqConfig<kHeadDim, 4, kHeadDim <= 64 ? 64 : kHeadDim <= 128 ? 32 : 16>;

// The Hopper forward (fwd_sm90_kernel.cuh, sm_90a): one producer warpgroup
// (TMA loads, key positions, zeroing the V rows of keys no query of the CTA
// sees) and kConsumers consumer warpgroups of 64 query rows each, which
// run both GEMMs with wgmma and the softmax in registers. K and V tiles of
// kBlockN keys pass through a kStages-deep ring of shared memory, each tile
// as kD / 64 panels of [rows][64] (128-byte swizzle, 1024-byte aligned).
// setmaxnreg moves registers from the producer to the consumers inside the
// CTA's own pool: __launch_bounds__(384, 1) gives every thread 168 at entry
// (65536 / 384 rounded down to a multiple of 8), so the pool is 384 * 168 =
// 64512, and 128 * kProducerRegs + 256 * kConsumerRegs must fit in it, or
// the last .inc waits forever (CUTLASS's and FA3's 24/240 and 40/232 fill it
// exactly).
template <int kHeadDim>
struct FwdSm90Traits {
  static constexpr int kD = kHeadDim;
  static constexpr int kPanels = kD / 64;
  static constexpr int kConsumers = 2;
  static constexpr int kBlockM = 64 * kConsumers;
  // D=256: the output accumulator alone is 128 registers per thread.
  static constexpr int kBlockN = kD <= 128 ? 128 : 64;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kStages = 2;
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  // The output accumulator in wgmma chunks of at most 128 columns.
  static constexpr int kOChunkN = kD < 128 ? kD : 128;
  static constexpr int kOChunks = kD / kOChunkN;

  static constexpr int kQBytes = kBlockM * kD * 2;
  static constexpr int kTileBytes = kBlockN * kD * 2;  // one K or V tile
  static constexpr int KOffset(int s) { return kQBytes + s * 2 * kTileBytes; }
  static constexpr int VOffset(int s) { return KOffset(s) + kTileBytes; }
  static constexpr int kPosOffset = kQBytes + kStages * 2 * kTileBytes;  // int64 key positions
  static constexpr int kBlkOffset = kPosOffset + kStages * kBlockN * 8;  // int32 key blocks
  static constexpr int kBarOffset = kBlkOffset + kStages * kBlockN * 4;
  static constexpr int kBarriers = 1 + 4 * kStages;  // q; k, v, v ready, empty per stage
  // + 1024: the kernel aligns the dynamic shared memory's base itself.
  static constexpr int kSmemBytes = kBarOffset + 8 * kBarriers + 1024;

  static_assert(kD % 64 == 0, "whole 64-element panels");
  static_assert(kBlockN <= 128, "one producer thread per key row");
  static_assert(kQBytes % 1024 == 0 && kTileBytes % 1024 == 0, "panels stay 1024-byte aligned");
  static constexpr int kEntryRegs = (65536 / kThreads) & ~7;
  static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <= kThreads * kEntryRegs,
                "the registers setmaxnreg hands out must come from the CTA's own pool");
};

}  // namespace ringattn::cuda
