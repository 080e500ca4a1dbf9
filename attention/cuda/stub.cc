// The CUDA attention API when the CUDA toolkit was not found at build time:
// everything links, DeviceAvailable() is false and every call answers
// Unimplemented, so callers and tests need no #ifdef.
#include "attention/cuda/kernels.h"

namespace ringattn::cuda {
namespace {

absl::Status NotBuilt() {
  return absl::UnimplementedError("ringattn was built without CUDA (RINGATTN_CUDA not found)");
}

}  // namespace

bool DeviceAvailable() { return false; }
int DeviceComputeCapability() { return 0; }
absl::Status CheckParams(const AttnParams&, bool) { return NotBuilt(); }
absl::Status Forward(const AttnParams&, void*) { return NotBuilt(); }
absl::Status Backward(const AttnParams&, bool, void*) { return NotBuilt(); }
absl::Status MergePartial(float*, float*, const float*, const float*, int64_t, int64_t, int64_t,
                          int64_t, void*) {
  return NotBuilt();
}
absl::Status RowDot(const void*, TensorStrides, DType, const void*, TensorStrides, DType, float*,
                    int64_t, int64_t, int64_t, int64_t, void*) {
  return NotBuilt();
}

}  // namespace ringattn::cuda
