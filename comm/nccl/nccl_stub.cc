// The `nccl` backend of a build without CUDA or NCCL: links, answers
// Unimplemented.
#include "absl/status/status.h"
#include "comm/nccl/nccl_comm.h"

namespace ringattn::comm {

bool NcclBuilt() { return false; }

absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateNcclCommunicator(Bootstrap*,
                                                                         const NcclOptions&) {
  return absl::UnimplementedError(
      "--comm nccl: this build has no NCCL backend (it needs the CUDA Toolkit and nccl.h; "
      "reconfigure with RINGATTN_CUDA and RINGATTN_NCCL AUTO or ON)");
}

int VisibleGpuCount() { return 0; }

std::string NcclDescription() { return "NCCL: not built"; }

}  // namespace ringattn::comm
