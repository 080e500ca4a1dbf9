// Backward kernels at head dim 64, fp16 inputs, softcap off and on: the
// main kernel (dK, dV; dQ with atomics) and the deterministic dQ pass.
#include "attention/cuda/bwd_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_BACKWARD(DType::kFloat16, 64);
}  // namespace ringattn::cuda::internal
