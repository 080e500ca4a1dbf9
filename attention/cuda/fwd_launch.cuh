// Forward kernel entry points and their launchers (host side of
// fwd_kernel.cuh): dynamic shared memory above 48 KB is opted into per
// kernel, the grid is laid out, and the launch is checked. Included by the
// instantiations/fwd_hdim<D>_<dtype>.cu files, which instantiate the
// launchers (dispatch.h picks one).
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

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

template <DType kT, int kD, bool kCap>
CudaResult LaunchForward(const AttnParams& p, cudaStream_t stream) {
  using Tr = FwdTraits<kD>;
  auto* kernel = &detail::ForwardKernel<Tr, kT, kCap>;
  RINGATTN_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "ForwardKernel");
}

}  // namespace ringattn::cuda::internal

// The explicit instantiations of one instantiations/fwd_hdim<D>_<dtype>.cu
// (inside namespace ringattn::cuda::internal): every variant dispatch.h
// may pick for that dtype and head dim, softcap off and on.
#define RINGATTN_INSTANTIATE_FORWARD(kT, kD)                                         \
  template CudaResult LaunchForward<kT, kD, false>(const AttnParams&, cudaStream_t); \
  template CudaResult LaunchForward<kT, kD, true>(const AttnParams&, cudaStream_t)
