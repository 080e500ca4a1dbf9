// The MPI bootstrap: MPI_COMM_WORLD of the job mpirun launched. MPI is
// initialized on first use (MPI_THREAD_SERIALIZED: the bootstrap is called
// from one thread) and finalized at exit, unless the run failed
// (SkipMpiFinalizeAtExit). MPI has no timeouts of its own: the collectives
// are non-blocking ones polled against the timeout, and a watchdog bounds
// MPI_Init_thread and MPI_Finalize, which cannot be interrupted.
// The C API only: OpenMPI's deprecated C++ bindings would need libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"

namespace ringattn::comm {
namespace {

absl::Status MpiError(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return absl::InternalError(absl::StrCat("MPI bootstrap: ", call, " failed: ", text));
}

std::atomic<bool> skip_finalize{false};

// The bootstrap's timeout, for the watchdogs (milliseconds).
std::atomic<int64_t> timeout_ms{60000};

// Runs `call`; if it has not returned `timeout_ms` (+ 1 s) later, prints
// `what` and ends the process with EXIT_FAILURE: MPI's start and end wait
// for every rank of the launch and cannot be interrupted, so a stopped or
// hung peer would otherwise keep this process forever.
template <typename Call>
void WithWatchdog(const char* what, Call call) {
  std::mutex mu;
  std::condition_variable cv;
  bool returned = false;
  const auto limit = std::chrono::milliseconds(timeout_ms.load()) + std::chrono::seconds(1);
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, limit, [&] { return returned; })) return;
    std::fprintf(stderr,
                 "ringattn: MPI bootstrap: %s did not return within %lld ms: a rank of the launch "
                 "is stopped, hung or never started (MPI cannot say which)\n",
                 what, static_cast<long long>(timeout_ms.load()));
    std::fflush(stderr);
    std::_Exit(EXIT_FAILURE);
  });
  call();
  {
    std::lock_guard<std::mutex> lock(mu);
    returned = true;
  }
  cv.notify_all();
  watchdog.join();
}

void FinalizeAtExit() {
  if (skip_finalize.load()) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  // A rank stopped after its work is done would hold every other rank here.
  if (!finalized) WithWatchdog("MPI_Finalize", [] { MPI_Finalize(); });
}

absl::Status InitOnce(absl::Duration timeout) {
  static std::once_flag once;
  static absl::Status status;
  std::call_once(once, [timeout] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    timeout_ms.store(absl::ToInt64Milliseconds(timeout));
    int rc = MPI_SUCCESS;
    WithWatchdog("MPI_Init_thread", [&] {
      rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    });
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

  // Non-blocking collectives polled against the timeout: a rank that never
  // arrives (stopped, or never started) is a DeadlineExceeded, not a hang.
  // A timed-out collective stays pending inside MPI, so its buffers are
  // left allocated and MPI is not finalized at exit.
  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    struct Buffers {  // what MPI reads and writes while a collective is pending
      int length = 0;
      std::vector<int> lengths, offsets;
      std::string sent, all;
    };
    auto x = std::make_unique<Buffers>();
    x->length = static_cast<int>(mine.size());
    x->lengths.resize(size_);
    x->sent = mine;
    // Waits for `request`; on a timeout the buffers are left to MPI.
    auto complete = [&](MPI_Request* request, const char* what) {
      absl::Status s = Complete(request, deadline, timeout, what);
      if (!s.ok()) (void)x.release();
      return s;
    };
    MPI_Request request;
    int rc = MPI_Iallgather(&x->length, 1, MPI_INT, x->lengths.data(), 1, MPI_INT, MPI_COMM_WORLD,
                            &request);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Iallgather", rc);
    RETURN_IF_ERROR(complete(&request, "the exchange of addresses (sizes)"));
    x->offsets.resize(size_);
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      x->offsets[r] = total;
      total += x->lengths[r];
    }
    x->all.assign(static_cast<size_t>(total) + 1, '\0');
    rc = MPI_Iallgatherv(x->sent.data(), x->length, MPI_BYTE, x->all.data(), x->lengths.data(),
                         x->offsets.data(), MPI_BYTE, MPI_COMM_WORLD, &request);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Iallgatherv", rc);
    RETURN_IF_ERROR(complete(&request, "the exchange of addresses"));
    std::vector<std::string> blobs(size_);
    for (int r = 0; r < size_; ++r) blobs[r] = x->all.substr(x->offsets[r], x->lengths[r]);
    return blobs;
  }

  absl::Status Barrier(absl::Duration timeout) override {
    MPI_Request request;
    const int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
    if (rc != MPI_SUCCESS) return MpiError("MPI_Ibarrier", rc);
    return Complete(&request, absl::Now() + timeout, timeout, "a barrier");
  }

 private:
  absl::Status Complete(MPI_Request* request, absl::Time deadline, absl::Duration timeout,
                        const char* what) {
    for (absl::Duration nap = absl::Microseconds(50);; nap = std::min(2 * nap, absl::Milliseconds(5))) {
      int done = 0;
      const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) return MpiError("MPI_Test", rc);
      if (done) return absl::OkStatus();
      if (absl::Now() >= deadline) break;
      absl::SleepFor(nap);
    }
    SkipMpiFinalizeAtExit();
    return absl::DeadlineExceededError(absl::StrCat(
        "MPI bootstrap, rank ", rank_, " of ", size_, ": not every rank joined ", what, " within ",
        absl::FormatDuration(timeout),
        " (MPI cannot say which; a rank that is stopped, hung or never started)"));
  }

  const int rank_;
  const int size_;
};

}  // namespace

bool MpiBootstrapBuilt() { return true; }

void SkipMpiFinalizeAtExit() { skip_finalize.store(true); }

absl::StatusOr<std::unique_ptr<Bootstrap>> CreateMpiBootstrap(absl::Duration timeout) {
  const absl::Status init = InitOnce(timeout);
  if (!init.ok()) return init;
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<Bootstrap>(new MpiBootstrap(rank, size));
}

}  // namespace ringattn::comm
