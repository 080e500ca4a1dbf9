// One rank per process over NCCL, for the multigpu tests (nccl_comm_test,
// nccl_ring_test) run by tools/multigpu_ci.sh under mpirun -np N: the
// launched world size, why the tests cannot run in this process (they
// skip with that reason), and the process's bootstrap.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/nccl/nccl_comm.h"

namespace ringattn::comm {

inline int LaunchedSize() {
  absl::StatusOr<LaunchInfo> info = DetectLaunch();
  return info.ok() && info->launched ? info->size : 1;
}

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

// The process's bootstrap (MPI under mpirun), made on first use and kept.
inline Bootstrap* ProcessBootstrap() {
  static Bootstrap* bootstrap = [] {
    absl::StatusOr<std::unique_ptr<Bootstrap>> made =
        CreateBootstrapFromEnvironment(absl::Seconds(60));
    if (!made.ok()) {
      std::fprintf(stderr, "bootstrap: %s\n", made.status().ToString().c_str());
      std::exit(2);
    }
    return made->release();
  }();
  return bootstrap;
}

}  // namespace ringattn::comm
