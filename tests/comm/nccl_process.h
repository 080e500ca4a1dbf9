// One rank per process over NCCL, for the multigpu tests (nccl_comm_test,
// nccl_ring_test) run by tools/multigpu_ci.sh under mpirun -np N: why the
// tests cannot run in this process (they skip with that reason).
#pragma once

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "comm/nccl/nccl_comm.h"
#include "tests/comm/process_bootstrap.h"

namespace ringattn::comm {

inline bool OneRankSmoke() {
  const char* v = std::getenv("RINGATTN_NCCL_TEST_ONE_RANK");
  return v != nullptr && std::string(v) == "1";
}

// Why the multi-GPU tests cannot run in this process ("" when they can).
inline std::string SkipReason() {
  if (!NcclBuilt()) return "NCCL not built";
  const int gpus = VisibleGpuCount();
  const int world = LaunchedSize();
  if (world == 1 && gpus >= 1 && OneRankSmoke()) return "";
  if (gpus < 1 || (world == 1 && gpus < 2)) return absl::StrCat("needs 2 GPUs: found ", gpus);
  if (world == 1) {
    return absl::StrCat("needs one process per GPU: run it under mpirun -np N (2 <= N <= ", gpus,
                        ")");
  }
  return "";
}

}  // namespace ringattn::comm
