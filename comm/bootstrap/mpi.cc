// The MPI bootstrap: MPI_COMM_WORLD of the job mpirun launched. MPI is
// initialized on first use (MPI_THREAD_MULTIPLE if offered, the
// bootstrap is called from one thread anyway) and finalized at exit. MPI
// has no timeouts: a rank that never comes is the launcher's to detect.
// The C API only: OpenMPI's deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdlib>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "comm/bootstrap/bootstrap.h"

namespace ringattn::comm {
namespace {

absl::Status MpiError(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return absl::InternalError(absl::StrCat("MPI bootstrap: ", call, " failed: ", text));
}

void FinalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

absl::Status InitOnce() {
  static std::once_flag once;
  static absl::Status status;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      status = MpiError("MPI_Init_thread", rc);
      return;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    std::atexit(FinalizeAtExit);
  });
  return status;
}

class MpiBootstrap final : public Bootstrap {
 public:
  MpiBootstrap(int rank, int size) : rank_(rank), size_(size) {}
  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  std::string Name() const override { return "mpi"; }

  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration) override {
    std::vector<int> lengths(size_);
    int length = static_cast<int>(mine.size());
    int rc = MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Allgather", rc);
    std::vector<int> offsets(size_);
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[r] = total;
      total += lengths[r];
    }
    std::string all(static_cast<size_t>(total) + 1, '\0');
    rc = MPI_Allgatherv(mine.data(), length, MPI_BYTE, all.data(), lengths.data(), offsets.data(),
                        MPI_BYTE, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Allgatherv", rc);
    std::vector<std::string> blobs(size_);
    for (int r = 0; r < size_; ++r) blobs[r] = all.substr(offsets[r], lengths[r]);
    return blobs;
  }

  absl::Status Barrier(absl::Duration) override {
    const int rc = MPI_Barrier(MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Barrier", rc);
    return absl::OkStatus();
  }

 private:
  const int rank_;
  const int size_;
};

}  // namespace

bool MpiBootstrapBuilt() { return true; }

absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap() {
  const absl::Status init = InitOnce();
  if (!init.ok()) return init;
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<Bootstrap>(new MpiBootstrap(rank, size));
}

}  // namespace ringattn::comm
