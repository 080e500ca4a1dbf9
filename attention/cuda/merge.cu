// The memory-bound row kernels: thin launches of the bodies in merge.cuh.
#include "attention/cuda/launch.h"
#include "attention/cuda/merge.cuh"

namespace ringattn::cuda::detail {
namespace {

__global__ void __launch_bounds__(32 * kRowWarps)
    MergeKernel(float* acc_out, float* acc_lse, const float* part_out, const float* part_lse,
                int64_t S, int64_t H, int64_t D, int64_t rows) {
  MergeBody(acc_out, acc_lse, part_out, part_lse, S, H, D, rows);
}

__global__ void __launch_bounds__(32 * kRowWarps)
    MergeStoreKernel(const float* a_out, const float* a_lse, const float* b_out,
                     const float* b_lse, void* out, TensorStrides os, DType out_dtype, float* lse,
                     int64_t lse_b, int64_t lse_h, int64_t S, int64_t H, int64_t D, int64_t rows) {
  MergeStoreBody(a_out, a_lse, b_out, b_lse, out, os, out_dtype, lse, lse_b, lse_h, S, H, D, rows);
}

__global__ void __launch_bounds__(32 * kRowWarps)
    RowDotKernel(const void* dout, TensorStrides ds, DType dout_dtype, const void* out,
                 TensorStrides os, DType out_dtype, float* dsum, int64_t S, int64_t H, int64_t D,
                 int64_t rows) {
  RowDotBody(dout, ds, dout_dtype, out, os, out_dtype, dsum, S, H, D, rows);
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

CudaResult LaunchMergeStore(const float* a_out, const float* a_lse, const float* b_out,
                            const float* b_lse, void* out, TensorStrides out_stride,
                            DType out_dtype, float* lse, int64_t lse_batch_stride,
                            int64_t lse_head_stride, int64_t batch, int64_t seqlen, int64_t heads,
                            int64_t head_dim, cudaStream_t stream) {
  const int64_t rows = batch * seqlen * heads;
  if (rows == 0) return {};
  detail::MergeStoreKernel<<<detail::RowGrid(rows), 32 * detail::kRowWarps, 0, stream>>>(
      a_out, a_lse, b_out, b_lse, out, out_stride, out_dtype, lse, lse_batch_stride,
      lse_head_stride, seqlen, heads, head_dim, rows);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "MergeStoreKernel");
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
