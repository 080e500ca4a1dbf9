// cuda-local when CUDA was not found at build time: links, answers
// Unimplemented (see cuda_local.h).
#include "comm/local/cuda_local.h"

namespace ringattn::comm {

bool CudaLocalBuilt() { return false; }

absl::StatusOr<std::unique_ptr<LocalWorld>> CreateCudaLocalWorld(int, LocalWorldOptions, int) {
  return absl::UnimplementedError(
      "the cuda-local communicator is not built: ringattn was built without CUDA (RINGATTN_CUDA "
      "not found)");
}

}  // namespace ringattn::comm
