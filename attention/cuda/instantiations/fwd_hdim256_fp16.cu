// Forward kernels at head dim 256, fp16 inputs, softcap off and on.
#include "attention/cuda/fwd_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD(DType::kFloat16, 256);
}  // namespace ringattn::cuda::internal
