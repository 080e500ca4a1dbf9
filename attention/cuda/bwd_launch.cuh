// Backward kernel entry points and their launchers (host side of
// bwd_kernel.cuh): dynamic shared memory above 48 KB is opted into per
// kernel, the grid is laid out, and the launch is checked. Included by the
// bwd_<dtype>.cu files, which instantiate the launchers.
#pragma once

#include "attention/cuda/bwd_kernel.cuh"
#include "attention/cuda/launch.h"

namespace ringattn::cuda::detail {

template <class Tr, DType kT, bool kCap>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks)
    BackwardKernel(const __grid_constant__ AttnParams p, bool compute_dq) {
  extern __shared__ __align__(128) char smem[];
  BackwardBody<Tr, kT, kCap>(p, compute_dq, smem);
}

template <class Tr, DType kT, bool kCap>
__global__ void __launch_bounds__(Tr::kThreads)
    BackwardDqKernel(const __grid_constant__ AttnParams p) {
  extern __shared__ __align__(128) char smem[];
  BackwardDqBody<Tr, kT, kCap>(p, smem);
}

template <DType kT, int kD, bool kCap>
CudaResult LaunchBackwardImpl(const AttnParams& p, bool deterministic, cudaStream_t stream) {
  using Tr = BwdTraits<kD>;
  auto* kernel = &BackwardKernel<Tr, kT, kCap>;
  RINGATTN_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                  static_cast<unsigned>(p.num_heads_k), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, !deterministic);
  const CudaResult r = RINGATTN_CUDA_RESULT(cudaGetLastError(), "BackwardKernel");
  if (!r.ok() || !deterministic) return r;

  using TrQ = BwdDqTraits<kD>;
  auto* dq_kernel = &BackwardDqKernel<TrQ, kT, kCap>;
  RINGATTN_CUDA_TRY(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         TrQ::kSmemBytes));
  const dim3 grid_q(static_cast<unsigned>((p.seqlen_q + TrQ::kBlockM - 1) / TrQ::kBlockM),
                    static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  dq_kernel<<<grid_q, TrQ::kThreads, TrQ::kSmemBytes, stream>>>(p);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "BackwardDqKernel");
}

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

template <DType kT, int kD>
CudaResult LaunchBackward(const AttnParams& p, bool deterministic, cudaStream_t stream) {
  return p.softcap > 0.0f ? detail::LaunchBackwardImpl<kT, kD, true>(p, deterministic, stream)
                          : detail::LaunchBackwardImpl<kT, kD, false>(p, deterministic, stream);
}

}  // namespace ringattn::cuda::internal
