// The transfers of one rank within a call, for every strategy: posting a
// SendRecv after the work enqueued so far, waiting for its bytes (on the
// device where the communicator is stream ordered, else on the host), the
// requests left in flight between calls, and the one way a failure ends a
// call (wrapped with rank and step, the world aborted). Also the workspace
// buffers a strategy keeps between calls.
//
// Order on a GPU: the backend's calls only enqueue on the rank's compute
// stream. Post uses SendRecvOnStream, so a transfer starts on the device
// once the kernels queued before it are done (its send buffer written, its
// receive buffer no longer read), and Arrive makes the stream wait for it
// on the device (Request::WaitOnStream) before the kernels that read what
// it brings. The host waits only until each transfer is matched, its
// headers checked and its copy queued -- which is where a silent peer or a
// mismatch becomes an error naming the step -- not for its bytes. A
// communicator that is not stream ordered gets the stream synchronized
// before each post and host waits.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "runtime/backend.h"
#include "runtime/ringattn.h"

namespace ringattn {

// A backend allocation that frees itself, grown on demand and kept between
// calls.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }
  // At least `bytes` (kept when already that large; contents not kept).
  absl::Status Reserve(KernelBackend* backend, int64_t bytes);
  void Reset();
  int64_t bytes() const { return ptr_ == nullptr ? 0 : bytes_; }
  float* f() const { return static_cast<float*>(ptr_); }
  char* c() const { return static_cast<char*>(ptr_); }

 private:
  KernelBackend* backend_ = nullptr;
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

class Transfers {
 public:
  // `comm` and `backend` outlive this; `stats` receives wait time and bytes.
  Transfers(comm::Communicator* comm, KernelBackend* backend, absl::Duration timeout,
            RingStats* stats)
      : comm_(comm), backend_(backend), timeout_(timeout), stats_(stats) {}

  // Wraps `s` with rank, step and what failed, aborts the world (so every
  // rank fails promptly), returns it.
  absl::Status Fail(const absl::Status& s, int step, const char* what);
  bool aborted() const { return aborted_; }

  // Posts one SendRecv after the work enqueued so far: stream ordered where
  // the communicator can, else after synchronizing the backend. Counts the
  // payload bytes as posted (a call on a caller's stream may return before
  // the last transfer completes).
  absl::StatusOr<std::unique_ptr<comm::Request>> Post(int step, const char* what,
                                                      const void* send, int64_t send_bytes,
                                                      int to, const comm::MessageMeta& send_meta,
                                                      void* recv, int64_t recv_bytes, int from,
                                                      const comm::MessageMeta& recv_meta);
  // An all-to-all within a call: pairwise rounds (round i sends to rank + i
  // and receives from rank - i; round 0 is this rank's own part) all posted
  // through Post, then Arrive for each, so the bytes are there for the
  // work enqueued next. send[j] (send_bytes[j]) goes to rank j, recv[j]
  // (recv_bytes[j]) comes from rank j; the header says `kind`, `dtype` and
  // the byte count. Zero-byte parts are messages too.
  absl::Status AllToAll(int step, const char* what, int kind, int32_t dtype,
                        const std::vector<const void*>& send,
                        const std::vector<int64_t>& send_bytes, const std::vector<void*>& recv,
                        const std::vector<int64_t>& recv_bytes);
  // The bytes of `req` are needed from here on: the rank's stream waits for
  // them on the device where the communicator can (the request is kept in
  // flight until it completes), else the host waits.
  absl::Status Arrive(std::unique_ptr<comm::Request> req, int step, const char* what);
  // Host waits for the requests in flight (all done once the stream is),
  // reporting the first failure; forgets them all.
  absl::Status Drain();
  // After a failure that aborted the world, the requests in flight settle
  // promptly: forget them. (Any other failure leaves them for Drain.)
  void ForgetIfAborted() {
    if (aborted_) inflight_.clear();
  }

 private:
  absl::Status WaitFor(comm::Request* req, int step, const char* what);

  comm::Communicator* comm_;
  KernelBackend* backend_;
  absl::Duration timeout_;
  RingStats* stats_;
  bool aborted_ = false;
  // Transfers the rank's stream waits for on the device, oldest first, with
  // the step and what they were for.
  struct Inflight {
    std::unique_ptr<comm::Request> req;
    int step;
    const char* what;
  };
  std::vector<Inflight> inflight_;
};

}  // namespace ringattn
