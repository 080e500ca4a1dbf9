// Forward kernels at head dim 128, fp16 inputs, softcap off and on.
#include "attention/cuda/fwd_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD(DType::kFloat16, 128);
}  // namespace ringattn::cuda::internal
