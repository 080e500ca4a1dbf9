// The CUDA KernelBackend when CUDA was not found at build time: the factory
// links and answers Unimplemented, so the ring and the tools need no #ifdef.
#include "runtime/backend.h"

namespace ringattn {

bool CudaBackendBuilt() { return false; }

absl::StatusOr<std::unique_ptr<KernelBackend>> MakeCudaBackend(int, bool) {
  return absl::UnimplementedError(
      "the cuda backend is not built: ringattn was built without CUDA (RINGATTN_CUDA not found)");
}

}  // namespace ringattn
