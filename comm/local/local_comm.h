// The `local` communicator backend: W ranks as threads of one process.
//
// A LocalWorld owns the shared state of W ranks and one Communicator per
// rank. Each rank is driven by one thread of the caller's; ranks run
// concurrently. A transfer is a real copy (memcpy) from the sender's buffer
// into the receiver's, done by the receiving rank's copy thread while the
// ranks compute, so its cost is honest and the overlap is real.
//
// Matching: messages from rank a to rank b are matched in the order they
// are posted (like NCCL, or MPI with one tag), a send with the receive that
// b posted for a. The sender's header is then checked against the header
// the receiver expects (CheckHeader: step, kind, dtype, shape, bytes, ...)
// before any byte is copied; a mismatch fails the receive and the send,
// each with an InvalidArgument that prints both headers.
//
// Requests (beyond communicator.h):
// - Test()/Wait() report the first error of either half at once, while the
//   other half may still be in flight; destroy the request before freeing
//   or reusing its buffers.
// - A pending request that is destroyed waits for it with the world's
//   timeout, unless the world was aborted or a Wait() on it already ran out
//   of time; what never matched is then cancelled (its peer sees nothing)
//   and a copy already running is waited for, so no buffer is touched after
//   the destructor returns. (A copy waiting for a stream-ordered poster's
//   stream gives up after the world's timeout, or at an abort.)
// - BytesSent() counts a send's payload once its copy completed.
// - WaitOnStream() (stream ordered worlds with a wait_mark) returns once
//   the copies of both halves are queued on their copiers' streams, having
//   made the stream wait for them; the halves complete when they landed.
//
// The world must outlive its communicators' requests; destroy every
// request before the world.
//
// Variants: how bytes move is a hook (LocalCopier, one per copy thread);
// the default is memcpy (host memory). `cuda-local` (cuda_local.h) copies
// with the CUDA runtime, so that message buffers may be device memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "comm/communicator.h"

namespace ringattn::comm {

// Moves the bytes of matched messages for one copy thread (one receiving
// rank). Its calls come only from that thread. Per message: After(), then
// Copy() once per chunk of at most MaxChunkBytes(), then Mark() (stream
// ordered worlds only), then Flush(). An error fails the send and the
// receive of that message (both ranks see it).
class LocalCopier {
 public:
  virtual ~LocalCopier() = default;
  // Copies one chunk, or only queues its copy (a device copy on a stream):
  // the bytes must be in `dst` once Flush() has returned OK.
  virtual absl::Status Copy(void* dst, const void* src, int64_t bytes) = 0;
  // Waits until every copy queued so far has landed.
  virtual absl::Status Flush() { return absl::OkStatus(); }
  // Stream order: a mark of the copies queued so far (an event after them
  // on the copier's stream), taken before Flush, which the ranks' streams
  // can be made to wait for (LocalWorldOptions::wait_mark); Request::
  // WaitOnStream then needs no host wait for the bytes. Null: none.
  virtual absl::StatusOr<std::shared_ptr<void>> Mark() { return std::shared_ptr<void>(); }
  // The largest chunk Copy() is given: an abort stops a memcpy at the next
  // chunk (a queued device copy runs to its end: Flush waits for all of a
  // message's chunks), and each chunk costs one call (for a device copy,
  // a launch, which at a few MiB would cost more than the copy).
  virtual int64_t MaxChunkBytes() const { return int64_t{4} << 20; }
  // Stream order: called before the first chunk of a message with the marks
  // the sender and the receiver took when they posted it (null for a half
  // posted with plain SendRecv); returns once the work the marks stand for
  // has finished, or with an error as soon as `aborted` turns true (the
  // world was aborted) or `timeout` has passed; then nothing is copied.
  virtual absl::Status After(const void* send_mark, const void* recv_mark,
                             const std::atomic<bool>& aborted, absl::Duration timeout) {
    (void)send_mark;
    (void)recv_mark;
    (void)aborted;
    (void)timeout;
    return absl::OkStatus();
  }
};

struct LocalWorldOptions {
  // How long a destroyed pending request waits for its peer before it is
  // cancelled. Zero: DefaultTimeout() (RINGATTN_TIMEOUT_MS, else 60 s).
  absl::Duration timeout = absl::ZeroDuration();
  // The copier of receiving rank `rank`, made once in Create (an error
  // fails Create). Null: memcpy.
  std::function<absl::StatusOr<std::unique_ptr<LocalCopier>>(int rank)> make_copier;
  // Stream order (cuda-local): marks the work queued so far on `stream`, a
  // stream of the posting rank (an event recorded on it). Called by
  // SendRecvOnStream on the posting thread; the request holds the mark
  // until it completes and the receiving rank's copier waits for it
  // (LocalCopier::After). Null: the world is not stream ordered.
  std::function<absl::StatusOr<std::shared_ptr<void>>(void* stream)> mark_stream;
  // Stream order for the receiver (cuda-local): makes `stream`, a stream of
  // a rank, wait for a copier's Mark(). With it, Request::WaitOnStream waits
  // on the device for a message whose copy is queued; without it, on the host.
  std::function<absl::Status(void* stream, const void* mark)> wait_mark;
  // What the communicators' Name() answers.
  std::string name = "local";
};

class LocalWorld {
 public:
  // A world of `size` >= 1 ranks. Starts one copy thread per rank.
  static absl::StatusOr<std::unique_ptr<LocalWorld>> Create(int size,
                                                            const LocalWorldOptions& options = {});
  ~LocalWorld();  // joins the copy threads; every request must be gone
  LocalWorld(const LocalWorld&) = delete;
  LocalWorld& operator=(const LocalWorld&) = delete;

  int Size() const;
  absl::Duration timeout() const;
  // The communicator of `rank` (0 <= rank < Size()), owned by the world.
  Communicator& Comm(int rank);

  struct Impl;  // shared state of the ranks (local_comm.cc)

 private:
  explicit LocalWorld(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringattn::comm
