// One rank per process, for the tests run under a launcher (mpirun -np N):
// the launched world size and the process's bootstrap (MPI under mpirun),
// shared by ucx_comm_test, nccl_comm_test and nccl_ring_test.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/bootstrap/bootstrap.h"

namespace ringattn::comm {

inline int LaunchedSize() {
  absl::StatusOr<LaunchInfo> info = DetectLaunch();
  return info.ok() && info->launched ? info->size : 1;
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
