// The launch environment: which rank of how many this process is, its
// local rank on its host, its job, and which GPU it takes -- read from the
// one list of launcher variables that every part of ringattn uses (the
// bootstrap, the nccl communicator, the world factory):
//
//   launcher   rank / world size                   local rank
//   ringattn   RINGATTN_RANK / RINGATTN_WORLD_SIZE  RINGATTN_LOCAL_RANK
//   torchrun   RANK / WORLD_SIZE                    LOCAL_RANK
//   OpenMPI    OMPI_COMM_WORLD_RANK / _SIZE         OMPI_COMM_WORLD_LOCAL_RANK
//   MPICH      PMI_RANK / PMI_SIZE                  MPI_LOCALRANKID, PMI_LOCAL_RANK
//   Slurm      SLURM_PROCID / SLURM_NTASKS          SLURM_LOCALID
//
// The first launcher whose rank pair is set wins (torchrun before Slurm:
// torchrun under srun runs several ranks per Slurm task), and the local
// rank comes from that launcher's own variable where it has one, else from
// the first of the others that is set. The GPU: RINGATTN_DEVICE, else the
// local rank modulo the GPUs this process sees.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ringattn::comm {

struct LaunchInfo {
  bool launched = false;  // some launcher (or RINGATTN_RANK) set a rank
  int rank = 0;
  int size = 1;
  int local_rank = -1;        // -1: no launcher says
  std::string job_id;         // RINGATTN_JOB_ID, else the launcher's (Slurm, PMIx, OpenMPI)
  std::string source;         // which variables: "RINGATTN_RANK/RINGATTN_WORLD_SIZE", ...
  bool under_mpirun = false;  // OMPI_COMM_WORLD_* or PMI_* present (MPI can bootstrap)
};

// Reads the environment. Garbage (not a number, negative, rank >= size,
// only one of a pair) is an InvalidArgument naming the variable.
absl::StatusOr<LaunchInfo> DetectLaunch();

// The GPU of this process among the `visible` ones: RINGATTN_DEVICE when
// set (an InvalidArgument naming it unless it is in [0, visible)), else
// launch.local_rank % visible when a launcher named a local rank, else
// `fallback` % visible. FailedPrecondition when `visible` is 0.
absl::StatusOr<int> ChooseDevice(const LaunchInfo& launch, int visible, int fallback = 0);

}  // namespace ringattn::comm
