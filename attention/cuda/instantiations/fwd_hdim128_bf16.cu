// Forward kernels at head dim 128, bf16 inputs, softcap off and on.
#include "attention/cuda/fwd_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD(DType::kBFloat16, 128);
}  // namespace ringattn::cuda::internal
