// The communicator interface: how ranks move bytes. Backends (local threads,
// UCX, NCCL) fill it in; the runtime sees only this header.
//
// Every message carries a MessageHeader. The sender's header is built from
// the MessageMeta it passes; the receiver passes the meta it EXPECTS, and the
// backend compares the two before a single byte lands in the receive buffer.
// A mismatch completes the request with an InvalidArgument error that prints
// both sides.
//
// Blocking behaviour of each call is stated on it. Every wait takes a
// timeout; a peer that does not answer becomes DeadlineExceeded naming the
// peer and the step, and Abort() on any rank makes pending and later
// requests on every rank fail promptly with Aborted naming the rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace ringattn::comm {

inline constexpr uint32_t kHeaderMagic = 0x52415454;  // "RATT"
inline constexpr uint16_t kHeaderVersion = 2;
// MessageHeader::flags: payload_crc and header_crc are set (transports that
// cross a process boundary: ucx). Checked on receipt: a mismatch is
// DataLoss, never a silently wrong result.
inline constexpr uint16_t kHeaderChecksummed = 1;

// What a message is: the runtime's description of one block.
struct MessageMeta {
  int32_t step = 0;     // ring step the block is sent at
  int32_t kind = 0;     // runtime-defined (e.g. 0 = KV, 1 = dKV)
  int32_t dtype = 0;    // runtime-defined dtype code
  int32_t ndim = 0;     // number of valid entries in shape
  int64_t shape[6] = {0, 0, 0, 0, 0, 0};
};

// The wire header: the meta plus identity and size.
struct MessageHeader {
  uint32_t magic = kHeaderMagic;
  uint16_t version = kHeaderVersion;
  uint16_t flags = 0;
  int32_t src_rank = 0;
  int32_t dst_rank = 0;
  int64_t bytes = 0;
  MessageMeta meta;
  uint32_t payload_crc = 0;  // CRC-32C of the payload
  uint32_t header_crc = 0;   // CRC-32C of this header with header_crc = 0
};

// Sets flags, payload_crc (of `bytes` at `payload`) and header_crc.
void SealHeader(MessageHeader* h, const void* payload);
// For a sealed header: DataLoss naming the sender unless header_crc
// matches (OK for an unsealed one).
absl::Status CheckHeaderIntact(const MessageHeader& got);
// For a sealed header: DataLoss naming the sender, step and kind unless the
// received payload's CRC-32C matches payload_crc.
absl::Status CheckPayloadIntact(const MessageHeader& got, const void* payload);

// Checks a received header against what the receiver expects; the error
// names both sides ("rank 1 sent ..., rank 2 expected ...").
absl::Status CheckHeader(const MessageHeader& got, const MessageHeader& expected);
std::string HeaderToString(const MessageHeader& h);

// Argument checks every backend runs on one half of a SendRecv (peer in
// [0, size), bytes >= 0, a buffer when bytes > 0, a sane meta); errors name
// the rank, the half and the argument.
absl::Status ValidateSendRecvPart(int rank, int size, const char* peer_name, int peer,
                                  const void* buf, int64_t bytes, const MessageMeta& meta);

// The halves of a SendRecv the caller wants: a half with a null buffer and
// zero bytes is not wanted. ValidateSendRecv checks each wanted half with
// ValidateSendRecvPart and says which they are.
struct SendRecvHalves {
  bool send = false;
  bool recv = false;
};
absl::StatusOr<SendRecvHalves> ValidateSendRecv(int rank, int size, const void* send,
                                                int64_t send_bytes, int to,
                                                const MessageMeta& send_meta, const void* recv,
                                                int64_t recv_bytes, int from,
                                                const MessageMeta& recv_meta);

// Handle of one posted SendRecv. Destroying a pending request waits for it
// (without timeout only if the communicator was aborted; otherwise with the
// communicator's timeout), so buffers are never written after they are freed.
class Request {
 public:
  virtual ~Request() = default;
  // Non-blocking. OK(true) when both the send and the receive completed,
  // OK(false) while pending, the error once one failed.
  virtual absl::StatusOr<bool> Test() = 0;
  // Blocks until complete, failed, or `timeout` elapsed (DeadlineExceeded
  // naming the peer and the step).
  virtual absl::Status Wait(absl::Duration timeout) = 0;
  // Stream order, for the receiver of a transfer posted with
  // SendRecvOnStream: work queued on `stream` (a cudaStream_t of this
  // rank's device; null = the legacy default stream) after this call runs
  // only once the transfer has completed on the device -- the bytes are in
  // the receive buffer and the send buffer has been read -- while the host
  // does not wait for the bytes themselves. The host waits only until the
  // transfer is matched, its headers checked and its copy queued on the
  // device (or it completed, or failed), within `timeout` (DeadlineExceeded
  // naming the peer and the step); a backend whose requests run one after
  // another (nccl) queues a transfer only once the one before it has
  // landed. Returns the error of a half that has already failed. A failure
  // after that (a device fault, an abort) is reported by Test and Wait; the
  // destructor still waits for the transfer (and reports nothing): keep the
  // request until the stream has passed it, and Wait or Test it to learn
  // the outcome. The default is Wait(timeout), which satisfies all of this
  // for any stream.
  virtual absl::Status WaitOnStream(void* stream, absl::Duration timeout) {
    (void)stream;
    return Wait(timeout);
  }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  virtual std::string Name() const = 0;  // "local", "ucx", ...

  // Non-blocking: posts the send of `bytes` from `send` to rank `to` and the
  // receive of `bytes` into `recv` from rank `from`, both described by
  // `meta` (the send's meta, and the meta expected from `from`, which share
  // step and kind but may differ in shape when shards differ: pass
  // `recv_meta`). The buffers must stay valid until the request completes.
  // `send` may be null with bytes_send == 0 only if no send is wanted, and
  // likewise for the receive (a zero-byte MESSAGE needs a non-null buffer).
  // Messages from one rank to another are matched in the order both sides
  // post them, whatever their step or kind, and the header is then checked:
  // posting in a different order on the two sides is a header mismatch.
  virtual absl::StatusOr<std::unique_ptr<Request>> SendRecv(
      const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta, void* recv,
      int64_t recv_bytes, int from, const MessageMeta& recv_meta) = 0;

  // Stream order, for communicators that move device memory. When
  // StreamOrdered() is true, SendRecvOnStream is SendRecv with one more
  // guarantee: the transfer reads `send` and writes `recv` only after the
  // work queued on `stream` (a cudaStream_t of this rank's device) before
  // the call has finished, so a producer kernel and the transfer need no
  // host synchronization between them. Completion is still the host's:
  // once Wait returns OK the bytes are in `recv` for every stream and the
  // host. Communicators that are not stream ordered answer Unimplemented;
  // their callers synchronize the stream before SendRecv.
  virtual bool StreamOrdered() const { return false; }
  virtual absl::StatusOr<std::unique_ptr<Request>> SendRecvOnStream(
      void* stream, const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta,
      void* recv, int64_t recv_bytes, int from, const MessageMeta& recv_meta);

  // Blocks until every rank called Barrier or `timeout` elapsed.
  virtual absl::Status Barrier(absl::Duration timeout) = 0;

  // Non-blocking and idempotent: marks the world failed with `reason`;
  // pending and future requests on every rank fail with Aborted, naming
  // this rank and the reason.
  virtual void Abort(const absl::Status& reason) = 0;

  // Payload bytes this rank has sent so far (headers excluded).
  virtual int64_t BytesSent() const = 0;

  // Collectives (comm/collectives.cc). Blocking, and built on SendRecv, so
  // every backend has them with SendRecv's rules: each message carries a
  // header (`step`, `kind`, its byte count as the shape) that the receiver
  // checks before a byte lands; every wait shares one deadline, `timeout`
  // from the call (DeadlineExceeded naming the peer and the step); a
  // failure aborts this communicator (so no request outlives the call and
  // every peer fails promptly) and is returned. Buffers are this
  // communicator's message memory (host, or the device for cuda-local and
  // nccl). The exchange is pairwise: round i = 0..W-1 sends to rank + i and
  // receives from rank - i (round 0: to itself), every round posted at
  // once, so that in-order backends (nccl) match round by round.
  //
  // AllToAll: send[j] (send_bytes[j] bytes) goes to rank j; recv[j]
  // (recv_bytes[j] bytes: what rank j sends here) comes from rank j. Sizes
  // may differ per pair and be zero. Spans have Size() entries.
  virtual absl::Status AllToAll(absl::Span<const void* const> send,
                                absl::Span<const int64_t> send_bytes,
                                absl::Span<void* const> recv, absl::Span<const int64_t> recv_bytes,
                                int step, int kind, absl::Duration timeout);
  // AllGather: this rank's `send` (send_bytes) into recv[rank] of every
  // rank; recv[j] receives recv_bytes[j] bytes from rank j (sizes may differ).
  virtual absl::Status AllGather(const void* send, int64_t send_bytes,
                                 absl::Span<void* const> recv, absl::Span<const int64_t> recv_bytes,
                                 int step, int kind, absl::Duration timeout);
  // Sub-communicators, without communication: `colors` holds one color per
  // rank (the same vector on every rank -- the caller derives it from
  // options all ranks share); this rank's communicator holds the ranks of
  // its color, in rank order, and sends through this one, which must
  // outlive it. Its Abort aborts this communicator; its Barrier and
  // collectives involve its members only. InvalidArgument naming `colors`
  // for a wrong length or a negative color.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(absl::Span<const int> colors);
};

// Default timeout for waits on peers: RINGATTN_TIMEOUT_MS when set (a
// positive integer; anything else is an InvalidArgument naming the
// variable), else 60 seconds.
absl::StatusOr<absl::Duration> DefaultTimeout();

// The one way an option's timeout is resolved: `requested` when positive,
// DefaultTimeout() when zero, an InvalidArgument naming `arg` when negative.
absl::StatusOr<absl::Duration> ResolveTimeout(absl::Duration requested, absl::string_view arg);

}  // namespace ringattn::comm
