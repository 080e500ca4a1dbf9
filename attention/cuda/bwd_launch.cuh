// Backward kernel entry points and their launchers (host side of
// bwd_kernel.cuh): dynamic shared memory above 48 KB is opted into per
// kernel, the grids are laid out, and the launches are checked. Included by
// the instantiations/bwd_hdim<D>_<dtype>.cu files, which instantiate the
// launchers (dispatch.h picks one).
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

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

// The main kernel adds dQ with atomics unless kDeterministic, which runs
// the dQ pass after it instead.
template <DType kT, int kD, bool kCap, bool kDeterministic>
CudaResult LaunchBackward(const AttnParams& p, cudaStream_t stream) {
  using Tr = BwdTraits<kD>;
  auto* kernel = &detail::BackwardKernel<Tr, kT, kCap>;
  RINGATTN_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                  static_cast<unsigned>(p.num_heads_k), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, /*compute_dq=*/!kDeterministic);
  const CudaResult r = RINGATTN_CUDA_RESULT(cudaGetLastError(), "BackwardKernel");
  if constexpr (!kDeterministic) {
    return r;
  } else {
    if (!r.ok()) return r;
    using TrQ = BwdDqTraits<kD>;
    auto* dq_kernel = &detail::BackwardDqKernel<TrQ, kT, kCap>;
    RINGATTN_CUDA_TRY(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           TrQ::kSmemBytes));
    const dim3 grid_q(static_cast<unsigned>((p.seqlen_q + TrQ::kBlockM - 1) / TrQ::kBlockM),
                      static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
    dq_kernel<<<grid_q, TrQ::kThreads, TrQ::kSmemBytes, stream>>>(p);
    return RINGATTN_CUDA_RESULT(cudaGetLastError(), "BackwardDqKernel");
  }
}

}  // namespace ringattn::cuda::internal

// The explicit instantiations of one instantiations/bwd_hdim<D>_<dtype>.cu
// (inside namespace ringattn::cuda::internal): every variant dispatch.h
// may pick for that dtype and head dim, softcap off and on x atomic and
// deterministic dQ.
#define RINGATTN_INSTANTIATE_BACKWARD(kT, kD)                                                \
  template CudaResult LaunchBackward<kT, kD, false, false>(const AttnParams&, cudaStream_t); \
  template CudaResult LaunchBackward<kT, kD, false, true>(const AttnParams&, cudaStream_t);  \
  template CudaResult LaunchBackward<kT, kD, true, false>(const AttnParams&, cudaStream_t);  \
  template CudaResult LaunchBackward<kT, kD, true, true>(const AttnParams&, cudaStream_t)
