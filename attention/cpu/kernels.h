// CPU flash attention over one query block x one key block (see params.h
// for the tensors). Block-wise, exact, O(S * D) memory, multi-threaded with
// OpenMP over `num_threads` threads. Results are bitwise reproducible for a
// given thread count.
//
// Forward writes out (out_dtype) and lse. Backward ADDS into the fp32
// dq/dk/dv accumulators, using the global lse and dsum = rowsum(dO * O).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/cpu/tile_ops.h"
#include "attention/params.h"

namespace ringattn::cpu {

// Compile-time tile sizes, queries x keys per tile, chosen by measurement
// (docs/PERF.md): a 64-key K^T panel (D x 64 fp32) stays in L1 across a
// 128-query tile.
struct ForwardTraits {
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 64;
  static_assert(kBlockM % 8 == 0 && kBlockN % 8 == 0, "tiles are whole AVX2 vectors");
};
struct BackwardTraits {
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 64;
  static_assert(kBlockM % 8 == 0 && kBlockN % 8 == 0, "tiles are whole AVX2 vectors");
};

// The vector code between the GEMMs (tile_ops.h), from RINGATTN_CPU_ISA:
//   auto (unset)  AVX-512 where the CPU has it, else AVX2 (the build's
//                 x86-64-v3), else scalar;
//   avx512, avx2  that set, or Unimplemented where the CPU or the build
//                 lacks it;
//   scalar        the portable C++ loops.
// Any other value is InvalidArgument naming the variable. Results are
// bitwise reproducible for a given set and thread count; across sets they
// differ in the last bits (the order of the sums).
absl::StatusOr<const TileOps*> ChooseTileOps();

// Checks what the kernels rely on (non-null pointers, positive sizes,
// H % Hkv == 0, fp32/bf16 storage, position maps that cover the sequences).
absl::Status CheckParams(const AttnParams& p, bool backward);

// A mask with a sink (Mask::HasSink) runs as its two parts: the forward
// merges their partial results in fp32 scratch, the backward adds both
// parts' gradients; a block without sink keys runs the main part alone.
absl::Status Forward(const AttnParams& p, int num_threads);
absl::Status Backward(const AttnParams& p, int num_threads);

// dsum[b, h, i] = sum_d dout[b, i, h, d] * out[b, i, h, d] in fp32: the
// backward pre-pass. dsum is contiguous [B, H, S].
void RowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype, const void* out,
            TensorStrides out_stride, DType out_dtype, float* dsum, int64_t batch,
            int64_t seqlen, int64_t heads, int64_t head_dim, int num_threads);

}  // namespace ringattn::cpu
