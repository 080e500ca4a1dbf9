// Memory-bound helper kernels, one warp per (batch, row, head):
//   MergeKernel   acc <- merge(acc, part) of partial (out, lse) pairs, fp32,
//                 the same math as attention/merge.h (safe for lse = -inf);
//   RowDotKernel  dsum = rowsum(dout * out), the backward pre-pass (dout
//                 and out fp32, bf16 or fp16 with any bshd strides), written
//                 [B, H, S] like cpu::RowDot.
#include <cmath>

#include "attention/cuda/device.cuh"
#include "attention/cuda/launch.h"
#include "attention/merge.h"

namespace ringattn::cuda::detail {
namespace {

constexpr int kRowWarps = 8;  // rows (warps) per CTA

// acc_out, part_out [B, S, H, D]; acc_lse, part_lse [B, H, S]; contiguous.
__global__ void __launch_bounds__(32 * kRowWarps)
    MergeKernel(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                int64_t S, int64_t H, int64_t D, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
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

__global__ void __launch_bounds__(32 * kRowWarps)
    RowDotKernel(const void* dout, TensorStrides ds, DType dout_dtype, const void* out,
                 TensorStrides os, DType out_dtype, float* dsum, int64_t S, int64_t H, int64_t D,
                 int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
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

dim3 RowGrid(int64_t rows) {
  return dim3(static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps));
}

}  // namespace
}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

CudaResult LaunchMergePartial(float* acc_out, float* acc_lse, const float* part_out,
                              const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                              int64_t head_dim, cudaStream_t stream) {
  const int64_t rows = batch * seqlen * heads;
  if (rows == 0) return {};
  detail::MergeKernel<<<detail::RowGrid(rows), 32 * detail::kRowWarps, 0, stream>>>(
      acc_out, acc_lse, part_out, part_lse, seqlen, heads, head_dim, rows);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "MergeKernel");
}

CudaResult LaunchRowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype,
                        const void* out, TensorStrides out_stride, DType out_dtype, float* dsum,
                        int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
                        cudaStream_t stream) {
  const int64_t rows = batch * seqlen * heads;
  if (rows == 0) return {};
  detail::RowDotKernel<<<detail::RowGrid(rows), 32 * detail::kRowWarps, 0, stream>>>(
      dout, dout_stride, dout_dtype, out, out_stride, out_dtype, dsum, seqlen, heads, head_dim,
      rows);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "RowDotKernel");
}

}  // namespace ringattn::cuda::internal
