// The Hopper forward kernel's entry point and launcher (host side of
// fwd_sm90_kernel.cuh): the tensor maps of q, k and v encoded for the
// driver, shared memory opted in, the grid laid out as the sm_80 forward's
// (query tiles reversed, heads, batch) with 3 warpgroups per CTA. Included
// by the instantiations/fwd_sm90_hdim<D>_<dtype>.cu files, which are built
// for sm_90a alone (attention/CMakeLists.txt); kernels.cc launches them
// on compute capability 9.0 (see ForwardPath there).
#pragma once

#include "attention/cuda/fwd_sm90_kernel.cuh"
#include "attention/cuda/launch.h"

namespace ringattn::cuda::detail {

template <class Tr, DType kT, bool kCap>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    ForwardSm90Kernel(const __grid_constant__ FwdSm90Params prm) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) char smem[];
  ForwardSm90Body<Tr, kT, kCap>(prm, smem);
#elif defined(__CUDA_ARCH__)
  __trap();  // built for an architecture without wgmma: fail loudly, never return nothing
#endif
}

}  // namespace ringattn::cuda::detail

namespace ringattn::cuda::internal {

template <DType kT, int kD, bool kCap>
CudaResult LaunchForwardSm90(const AttnParams& p, cudaStream_t stream) {
  using Tr = FwdSm90Traits<kD>;
  detail::FwdSm90Params prm;
  prm.p = p;
  TileMapShape q, k, v;
  detail::FwdSm90MapShapes<Tr>(p, &q, &k, &v);
  for (auto [shape, map] : {std::pair{&q, &prm.q_map}, {&k, &prm.k_map}, {&v, &prm.v_map}}) {
    const CudaResult r = EncodeTileMap(*shape, kT, map);
    if (!r.ok()) return r;
  }
  auto* kernel = &detail::ForwardSm90Kernel<Tr, kT, kCap>;
  RINGATTN_CUDA_TRY(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(prm);
  return RINGATTN_CUDA_RESULT(cudaGetLastError(), "ForwardSm90Kernel");
}

}  // namespace ringattn::cuda::internal

// The explicit instantiations of one instantiations/fwd_sm90_hdim<D>_<dtype>.cu.
#define RINGATTN_INSTANTIATE_FORWARD_SM90(kT, kD)                                        \
  template CudaResult LaunchForwardSm90<kT, kD, false>(const AttnParams&, cudaStream_t); \
  template CudaResult LaunchForwardSm90<kT, kD, true>(const AttnParams&, cudaStream_t)
