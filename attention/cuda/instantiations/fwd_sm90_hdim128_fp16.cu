// Hopper (sm_90a) forward kernels at head dim 128, fp16 inputs, softcap off and on.
#include "attention/cuda/fwd_sm90_launch.cuh"

namespace ringattn::cuda::internal {
RINGATTN_INSTANTIATE_FORWARD_SM90(DType::kFloat16, 128);
}  // namespace ringattn::cuda::internal
