// The world of communicators a tool's --comm and --ranks ask for, shared by
// the command-line tools (the command line itself is parsed by flags.h, the
// mask flags are in mask_flags.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/world.h"

namespace ringattn::tools {

// The world of `--comm comm_name`: `ranks` local ranks (local,
// cuda-local, on GPU `device`), or this process's rank of the launch (ucx,
// nccl), whose size an explicit --ranks must match. `device_memory`: the
// ring's buffers are device memory (--backend cuda; ucx stages them).
// Errors name the flag.
inline absl::StatusOr<std::unique_ptr<comm::World>> MakeWorld(const std::string& comm_name,
                                                              int ranks, bool ranks_given,
                                                              bool device_memory, int device = -1) {
  comm::WorldOptions o;
  o.backend = comm_name;
  const bool local = comm_name == "local" || comm_name == "cuda-local";
  if (local && ranks < 1) return ArgError("--ranks", ">= 1", ranks);
  o.ranks = local || ranks_given ? ranks : 0;
  o.device = device;
  o.device_memory = device_memory;
  absl::StatusOr<std::unique_ptr<comm::World>> world = comm::World::Create(o);
  if (!world.ok()) {
    const absl::Status& s = world.status();
    return absl::Status(s.code(), absl::StrCat("--comm ", comm_name, ": ", s.message()));
  }
  return world;
}

}  // namespace ringattn::tools
