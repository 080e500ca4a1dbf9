// Forward kernels at head dim 256 (bf16 and fp16 inputs, each with and
// without softcap): a translation unit of their own, so that a parallel
// build compiles them beside the D=64/128 families.
#include "attention/cuda/fwd_launch.cuh"

namespace ringattn::cuda::internal {

template CudaResult LaunchForward<DType::kBFloat16, 256>(const AttnParams&, cudaStream_t);
template CudaResult LaunchForward<DType::kFloat16, 256>(const AttnParams&, cudaStream_t);

}  // namespace ringattn::cuda::internal
