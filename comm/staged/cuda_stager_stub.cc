// MakeCudaStager without CUDA at build time.
#include "comm/staged/staged_comm.h"

namespace ringattn::comm {

int CudaDeviceCount() { return 0; }

absl::StatusOr<std::unique_ptr<Stager>> MakeCudaStager(int) {
  return absl::UnimplementedError(
      "staging device memory needs CUDA, and this build has none (RINGATTN_CUDA=OFF or no nvcc)");
}

}  // namespace ringattn::comm
