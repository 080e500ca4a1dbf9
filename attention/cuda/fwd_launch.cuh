// Forward kernel entry points and their launchers (host side of
// fwd_kernel.cuh): dynamic shared memory above 48 KB is opted into per
// kernel, the grid is laid out, and the launch is checked. Included by the
// fwd_<dtype>.cu files, which instantiate the launchers.
#pragma once

#include "attention/cuda/fwd_kernel.cuh"
#include "attention/cuda/launch.h"

namespace ringattn::cuda::detail {

template <class Tr, DType kT, bool kCap>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks)
    ForwardKernel(const __grid_constant__ AttnParams p) {
  extern __shared__ __align__(128) char smem[];
  ForwardBody<Tr, kT, kCap>(p, smem);
}

template <DType kT, int kD, bool kCap>
CudaResult LaunchForwardImpl(const AttnParams& p, cudaStream_t stream) {
  using Tr = FwdTraits<kD>;
  auto* kernel = &ForwardKernel<Tr, kT, kCap>;
  RINGATTN_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "ForwardKernel");
}

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

template <DType kT, int kD>
CudaResult LaunchForward(const AttnParams& p, cudaStream_t stream) {
  return p.softcap > 0.0f ? detail::LaunchForwardImpl<kT, kD, true>(p, stream)
                          : detail::LaunchForwardImpl<kT, kD, false>(p, stream);
}

}  // namespace ringattn::cuda::internal
