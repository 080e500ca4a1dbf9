// The `ucx` backend of a build without UCX: links, answers Unimplemented.
#include "absl/status/status.h"
#include "comm/ucx/ucx_comm.h"

namespace ringattn::comm {

bool UcxBuilt() { return false; }

absl::StatusOr<std::unique_ptr<Communicator>> CreateUcxCommunicator(Bootstrap*, const UcxOptions&) {
  return absl::UnimplementedError(
      "--comm ucx: this build has no UCX (install libucx-dev and reconfigure with "
      "RINGATTN_UCX=AUTO or ON)");
}

std::string UcxDescription() { return "UCX: not built"; }

}  // namespace ringattn::comm
