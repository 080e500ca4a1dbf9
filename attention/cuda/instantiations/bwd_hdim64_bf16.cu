// Backward kernels at head dim 64, bf16 inputs, softcap off and on: the
// main kernel (dK, dV; dQ with atomics) and the deterministic dQ pass.
#include "attention/cuda/bwd_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_BACKWARD(DType::kBFloat16, 64);
}  // namespace ringattn::cuda::internal
