// Hopper (sm_90a) forward kernels at head dim 64, fp16 inputs, softcap off and on.
#include "attention/cuda/fwd_sm90_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD_SM90(DType::kFloat16, 64);
}  // namespace ringattn::cuda::internal
