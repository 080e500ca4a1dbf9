// The launch environment: see launch.h.
#include "comm/launch.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ringattn::comm {
namespace {

// A launcher's variables: its rank pair, and its local rank (may be null).
struct Launcher {
  const char* rank;
  const char* size;
  const char* local_rank;
  bool mpi;  // an MPI launcher: MPI_Init can bootstrap
};
constexpr Launcher kLaunchers[] = {
    {"RINGATTN_RANK", "RINGATTN_WORLD_SIZE", "RINGATTN_LOCAL_RANK", false},
    {"RANK", "WORLD_SIZE", "LOCAL_RANK", false},  // torchrun
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", true},
    {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", true},
    {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", false},
};
// Local-rank variables of launchers that set no rank pair we read, or set
// it under another name (MVAPICH, hydra's PMI_LOCAL_RANK).
constexpr const char* kOtherLocalRanks[] = {"MV2_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK"};

// A non-negative int from variable `name`, or an error naming it.
absl::StatusOr<int> ParseEnvInt(const char* name, const char* text, int min_value) {
  int value = 0;
  const absl::string_view view(text);
  bool digits = !view.empty() && view.size() <= 9;
  for (char ch : view) digits = digits && ch >= '0' && ch <= '9';
  if (!digits || !absl::SimpleAtoi(view, &value) || value < min_value) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected an integer >= ", min_value, ", got \"", view, "\""));
  }
  return value;
}

// The local rank named by `name`, if set.
absl::StatusOr<int> LocalRank(const char* name) {
  const char* text = name != nullptr ? std::getenv(name) : nullptr;
  if (text == nullptr) return -1;
  return ParseEnvInt(name, text, 0);
}

}  // namespace

absl::StatusOr<LaunchInfo> DetectLaunch() {
  LaunchInfo info;
  const Launcher* found = nullptr;
  for (const Launcher& l : kLaunchers) {
    const char* rank_text = std::getenv(l.rank);
    const char* size_text = std::getenv(l.size);
    if (rank_text == nullptr && size_text == nullptr) continue;
    if (rank_text == nullptr || size_text == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(rank_text ? l.size : l.rank, " is not set, but ",
                       rank_text ? l.rank : l.size, " is: set both or neither"));
    }
    absl::StatusOr<int> rank = ParseEnvInt(l.rank, rank_text, 0);
    if (!rank.ok()) return rank.status();
    absl::StatusOr<int> size = ParseEnvInt(l.size, size_text, 1);
    if (!size.ok()) return size.status();
    if (*rank >= *size) {
      return absl::InvalidArgumentError(
          absl::StrCat(l.rank, "=", *rank, " is not below ", l.size, "=", *size));
    }
    info.rank = *rank;
    info.size = *size;
    info.launched = true;
    info.source = absl::StrCat(l.rank, "/", l.size);
    found = &l;
    break;
  }
  // The local rank: the launcher's own variable first, then any other.
  if (found != nullptr) {
    absl::StatusOr<int> local = LocalRank(found->local_rank);
    if (!local.ok()) return local.status();
    info.local_rank = *local;
  }
  for (const Launcher& l : kLaunchers) {
    if (info.local_rank >= 0) break;
    absl::StatusOr<int> local = LocalRank(l.local_rank);
    if (!local.ok()) return local.status();
    info.local_rank = *local;
  }
  for (const char* name : kOtherLocalRanks) {
    if (info.local_rank >= 0) break;
    absl::StatusOr<int> local = LocalRank(name);
    if (!local.ok()) return local.status();
    info.local_rank = *local;
  }
  for (const Launcher& l : kLaunchers) {
    if (l.mpi && std::getenv(l.rank) != nullptr) info.under_mpirun = true;
  }
  if (const char* id = std::getenv("RINGATTN_JOB_ID")) {
    info.job_id = id;
  } else if (const char* slurm = std::getenv("SLURM_JOB_ID")) {
    const char* step = std::getenv("SLURM_STEP_ID");
    info.job_id = absl::StrCat("slurm-", slurm, ".", step ? step : "0");
  } else if (const char* ns = std::getenv("PMIX_NAMESPACE")) {
    info.job_id = absl::StrCat("pmix-", ns);
  } else if (const char* ompi = std::getenv("OMPI_MCA_orte_ess_jobid")) {
    info.job_id = absl::StrCat("ompi-", ompi);
  } else if (const char* torch = std::getenv("TORCHELASTIC_RUN_ID")) {
    info.job_id = absl::StrCat("torch-", torch);
  }
  return info;
}

absl::StatusOr<int> ChooseDevice(const LaunchInfo& launch, int visible, int fallback) {
  if (visible <= 0) {
    return absl::FailedPreconditionError(
        "no CUDA device (none visible, or no driver; CUDA_VISIBLE_DEVICES?)");
  }
  if (const char* env = std::getenv("RINGATTN_DEVICE"); env != nullptr) {
    int device = -1;
    if (!absl::SimpleAtoi(env, &device) || device < 0 || device >= visible) {
      return absl::InvalidArgumentError(
          absl::StrCat("RINGATTN_DEVICE: expected a device in 0..", visible - 1,
                       " (this process sees ", visible, " GPUs), got \"", env, "\""));
    }
    return device;
  }
  return (launch.local_rank >= 0 ? launch.local_rank : fallback) % visible;
}

}  // namespace ringattn::comm
