// Hopper (sm_90a) forward kernels at head dim 256, bf16 inputs, softcap off and on.
#include "attention/cuda/fwd_sm90_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD_SM90(DType::kBFloat16, 256);
}  // namespace ringattn::cuda::internal
