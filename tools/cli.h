// Small helpers shared by the command-line tools (the mask flags are in
// mask_flags.h): flag names with dashes, whether --ranks was given, and the
// world of communicators a tool's --comm and --ranks ask for.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/world.h"

namespace ringattn::tools {

// Lets users write --head-dim for the flag head_dim: rewrites dashes in flag
// NAMES (never in values) to underscores, in place. Stops at "--".
inline void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (a[0] != '-' || a[1] != '-') continue;
    if (a[2] == '\0') break;
    for (char* p = a + 2; *p != '\0' && *p != '='; ++p)
      if (*p == '-') *p = '_';
  }
}

// Whether argv sets --ranks (or -ranks), for MakeWorld; call before flags
// are parsed.
inline bool RanksFlagGiven(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    for (const char* p : {"--ranks", "-ranks"}) {
      const std::string f = p;
      if (a == f || a.rfind(f + "=", 0) == 0) return true;
    }
  }
  return false;
}

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
