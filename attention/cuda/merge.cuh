// The bodies of the memory-bound row kernels (merge.cu launches them; the
// CPU emulator, tests/attention/cuda_emu_check.cc, runs them too). One warp
// per (batch, row, head) row r = (b * S + i) * H + h, kRowWarps rows per CTA:
//   MergeBody       acc <- merge(acc, part) of partial (out, lse) pairs, fp32,
//                   the same math as attention/merge.h (safe for lse = -inf);
//   MergeStoreBody  out <- merge(a, b) of two fp32 partials, stored in the
//                   output's dtype and strides (a sink mask's two parts into
//                   a 16-bit or strided output, rounded once);
//   RowDotBody      dsum = rowsum(dout * out), the backward pre-pass (dout
//                   and out fp32, bf16 or fp16 with any bshd strides),
//                   written [B, H, S] like cpu::RowDot.
#pragma once

#include <cstdint>

#include "attention/cuda/device.cuh"
#include "attention/merge.h"

namespace ringattn::cuda::detail {

constexpr int kRowWarps = 8;  // rows (warps) per CTA

// This warp's row; rows >= `rows` have nothing to do.
RA_DEVICE int64_t WarpRow() {
  return static_cast<int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
}

// acc_out, part_out [B, S, H, D]; acc_lse, part_lse [B, H, S]; contiguous.
RA_DEVICE void MergeBody(float* acc_out, float* acc_lse, const float* part_out,
                         const float* part_lse, int64_t S, int64_t H, int64_t D, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const int64_t h = r % H, i = (r / H) % S, b = r / (H * S);
  const int64_t li = (b * H + h) * S + i;
  const RowMerge m = MergeRow(acc_lse[li], part_lse[li]);
  float* o = acc_out + r * D;
  const float* po = part_out + r * D;
  if (m.kind != MergeKind::kKeep) {
    for (int64_t d = lane; d < D; d += 32) o[d] = MergeValue(m, o[d], po[d]);
  }
  __syncwarp();  // every lane has read acc_lse before lane 0 replaces it
  if (lane == 0) acc_lse[li] = m.lse;
}

// a_out, b_out [B, S, H, D] and a_lse, b_lse [B, H, S] contiguous fp32; out
// with strides `os` in out_dtype, lse [B, H, S] with strides (lse_b, lse_h, 1).
RA_DEVICE void MergeStoreBody(const float* a_out, const float* a_lse, const float* b_out,
                              const float* b_lse, void* out, TensorStrides os, DType out_dtype,
                              float* lse, int64_t lse_b, int64_t lse_h, int64_t S, int64_t H,
                              int64_t D, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const int64_t h = r % H, i = (r / H) % S, b = r / (H * S);
  const int64_t li = (b * H + h) * S + i;
  const RowMerge m = MergeRow(a_lse[li], b_lse[li]);
  const int64_t o_off = b * os.batch + i * os.seq + h * os.head;
  for (int64_t d = lane; d < D; d += 32) {
    StoreFromFloat(out, out_dtype, o_off + d, MergeValue(m, a_out[r * D + d], b_out[r * D + d]));
  }
  if (lane == 0) lse[b * lse_b + h * lse_h + i] = m.lse;
}

RA_DEVICE void RowDotBody(const void* dout, TensorStrides ds, DType dout_dtype, const void* out,
                          TensorStrides os, DType out_dtype, float* dsum, int64_t S, int64_t H,
                          int64_t D, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = WarpRow();
  if (r >= rows) return;
  const int64_t h = r % H, i = (r / H) % S, b = r / (H * S);
  const int64_t d_off = b * ds.batch + i * ds.seq + h * ds.head;
  const int64_t o_off = b * os.batch + i * os.seq + h * os.head;
  float acc = 0.0f;
  for (int64_t d = lane; d < D; d += 32) {
    acc += LoadAsFloat(dout, dout_dtype, d_off + d) * LoadAsFloat(out, out_dtype, o_off + d);
  }
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) acc += ShflXor(acc, m);
  if (lane == 0) dsum[(b * H + h) * S + i] = acc;
}

}  // namespace ringattn::cuda::detail
