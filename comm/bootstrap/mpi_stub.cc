// The MPI bootstrap of a build without MPI: links, answers Unimplemented.
#include "absl/status/status.h"
#include "comm/bootstrap/bootstrap.h"

namespace ringattn::comm {

bool MpiBootstrapBuilt() { return false; }
void SkipMpiFinalizeAtExit() {}

absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap(absl::Duration) {
  return absl::UnimplementedError(
      "MPI bootstrap: this build has no MPI (install libopenmpi-dev and reconfigure with "
      "RINGATTN_MPI=AUTO or ON); use the file store (RINGATTN_STORE_DIR)");
}

}  // namespace ringattn::comm
