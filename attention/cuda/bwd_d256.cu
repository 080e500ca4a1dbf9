// Backward kernels at head dim 256 (bf16 and fp16 inputs, each with and
// without softcap; the main kernel and the deterministic dQ pass): a
// translation unit of their own, like fwd_d256.cu.
#include "attention/cuda/bwd_launch.cuh"

namespace ringattn::cuda::internal {

template CudaResult LaunchBackward<DType::kBFloat16, 256>(const AttnParams&, bool, cudaStream_t);
template CudaResult LaunchBackward<DType::kFloat16, 256>(const AttnParams&, bool, cudaStream_t);

}  // namespace ringattn::cuda::internal
