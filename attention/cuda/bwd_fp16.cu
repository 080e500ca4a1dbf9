// Backward kernels, fp16 inputs: D in {64, 128}, each with and without
// softcap; the main kernel (dK, dV, atomic dQ) and the deterministic dQ pass.
#include "attention/cuda/bwd_launch.cuh"

namespace ringattn::cuda::internal {

template CudaResult LaunchBackward<DType::kFloat16, 64>(const AttnParams&, bool, cudaStream_t);
template CudaResult LaunchBackward<DType::kFloat16, 128>(const AttnParams&, bool, cudaStream_t);

}  // namespace ringattn::cuda::internal
