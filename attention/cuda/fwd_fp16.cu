// Forward kernels, fp16 inputs: D in {64, 128}, each with and without softcap.
#include "attention/cuda/fwd_launch.cuh"

namespace ringattn::cuda::internal {

template CudaResult LaunchForward<DType::kFloat16, 64>(const AttnParams&, cudaStream_t);
template CudaResult LaunchForward<DType::kFloat16, 128>(const AttnParams&, cudaStream_t);

}  // namespace ringattn::cuda::internal
