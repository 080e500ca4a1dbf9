// Bootstrap: the exchange of small blobs between the processes of one job
// at start (UCX worker addresses, per-rank settings), before any
// communicator exists. Variants:
//   file store  a directory on a shared filesystem (file_store.cc)
//   MPI         MPI_Allgather under mpirun (mpi.cc; Unimplemented when the
//               build has no MPI: mpi_stub.cc)
// The runtime opens no listening socket of its own: bootstrap goes through
// the launcher's MPI or through owner-only files.
//
// Every call is collective: all ranks call AllGather / Barrier in the same
// order. A rendezvous that does not complete within its timeout is a
// DeadlineExceeded that says how many ranks arrived and which are missing
// (the file store; MPI has no timeouts of its own).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "comm/launch.h"

namespace ringattn::comm {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  virtual std::string Name() const = 0;  // "file", "mpi"
  // Every rank contributes `mine`; returns every rank's blob, by rank.
  virtual absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                             absl::Duration timeout) = 0;
  virtual absl::Status Barrier(absl::Duration timeout) = 0;
};

struct FileStoreOptions {
  std::string dir;     // shared directory; created 0700 when missing
  std::string job_id;  // must be non-empty; keeps jobs apart
  int rank = 0;
  int size = 1;
  absl::Duration poll = absl::Milliseconds(2);
};

// The file store. `dir` must be owned by this user and not accessible to
// group or others (0700); its files are 0600, written to a temporary name
// and renamed, so a reader never sees half a file. A second process that
// claims the same rank of the same job, a rank >= size, and ranks that
// disagree on the world size are errors.
absl::StatusOr<std::unique_ptr<Bootstrap>> CreateFileStoreBootstrap(const FileStoreOptions& options,
                                                                    absl::Duration timeout);

// MPI_COMM_WORLD (MPI_Init_thread on first use, MPI_Finalize at exit). Its
// collectives wait at most `timeout`; MPI_Init_thread, which waits for every
// rank of the launch and cannot be interrupted, ends the process with a
// message naming the timeout when it has not returned by then.
// Unimplemented when the build has no MPI.
absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap(absl::Duration timeout);
bool MpiBootstrapBuilt();
// After a failure: MPI is not finalized at exit. MPI_Finalize waits for
// every rank, so a peer that stopped (SIGSTOP, a hung GPU) would keep this
// process from exiting with its error; the launcher sees a non-zero exit
// and ends the job. A no-op without MPI or when ringattn did not start MPI.
void SkipMpiFinalizeAtExit();

// The bootstrap for this process: MPI when launched by mpirun and MPI is
// built (unless RINGATTN_BOOTSTRAP=file), else the file store in
// RINGATTN_STORE_DIR with the launch's rank, size and job id. Not launched
// (no rank variables) gives a one-rank file-less world.
absl::StatusOr<std::unique_ptr<Bootstrap>> CreateBootstrapFromEnvironment(absl::Duration timeout);

// A single-rank bootstrap (AllGather returns the blob itself).
std::unique_ptr<Bootstrap> CreateSelfBootstrap();

}  // namespace ringattn::comm
