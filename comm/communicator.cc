// Backend-independent parts of the communicator interface: the header check
// every backend runs on receipt, the checksums, printing, and the default
// timeout.
#include "comm/communicator.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/crc32c.h"
#include "base/status.h"

namespace ringattn::comm {
namespace {

constexpr int kMaxDims = static_cast<int>(sizeof(MessageMeta::shape) / sizeof(int64_t));
constexpr const char* kTimeoutVariable = "RINGATTN_TIMEOUT_MS";
constexpr int64_t kDefaultTimeoutMs = 60 * 1000;

bool ValidNdim(const MessageHeader& h) { return h.meta.ndim >= 0 && h.meta.ndim <= kMaxDims; }

bool SameShape(const MessageHeader& a, const MessageHeader& b) {
  if (a.meta.ndim != b.meta.ndim || !ValidNdim(a) || !ValidNdim(b)) return false;
  for (int i = 0; i < a.meta.ndim; ++i) {
    if (a.meta.shape[i] != b.meta.shape[i]) return false;
  }
  return true;
}

}  // namespace

std::string HeaderToString(const MessageHeader& h) {
  std::string shape;
  if (ValidNdim(h)) {
    shape = absl::StrCat("[", absl::StrJoin(h.meta.shape, h.meta.shape + h.meta.ndim, ", "), "]");
  } else {
    shape = absl::StrCat("<invalid ndim ", h.meta.ndim, ">");
  }
  return absl::StrCat("{magic 0x", absl::Hex(h.magic), ", version ", h.version, ", src ",
                      h.src_rank, ", dst ", h.dst_rank, ", step ", h.meta.step, ", kind ",
                      h.meta.kind, ", dtype ", h.meta.dtype, ", shape ", shape, ", bytes ", h.bytes,
                      "}");
}

namespace {
uint32_t HeaderCrc(MessageHeader h) {
  h.header_crc = 0;
  return Crc32c(&h, sizeof(h));
}
}  // namespace

void SealHeader(MessageHeader* h, const void* payload) {
  h->flags |= kHeaderChecksummed;
  h->payload_crc = h->bytes > 0 ? Crc32c(payload, static_cast<size_t>(h->bytes)) : 0;
  h->header_crc = HeaderCrc(*h);
}

absl::Status CheckHeaderIntact(const MessageHeader& got) {
  if ((got.flags & kHeaderChecksummed) == 0 || HeaderCrc(got) == got.header_crc) {
    return absl::OkStatus();
  }
  return absl::DataLossError(absl::StrCat("the header of a message that names rank ", got.src_rank,
                                          " as its sender was corrupted in transit (CRC-32C 0x",
                                          absl::Hex(HeaderCrc(got)), ", sent 0x",
                                          absl::Hex(got.header_crc), "): ", HeaderToString(got)));
}

absl::Status CheckPayloadIntact(const MessageHeader& got, const void* payload) {
  if ((got.flags & kHeaderChecksummed) == 0) return absl::OkStatus();
  const uint32_t crc = got.bytes > 0 ? Crc32c(payload, static_cast<size_t>(got.bytes)) : 0;
  if (crc == got.payload_crc) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "the payload from rank ", got.src_rank, " for step ", got.meta.step, " (kind ", got.meta.kind,
      ", ", got.bytes, " bytes) was corrupted in transit (CRC-32C 0x", absl::Hex(crc), ", sent 0x",
      absl::Hex(got.payload_crc), ")"));
}

absl::Status CheckHeader(const MessageHeader& got, const MessageHeader& expected) {
  std::vector<const char*> diffs;
  if (got.magic != expected.magic) diffs.push_back("magic");
  if (got.version != expected.version) diffs.push_back("version");
  if (got.src_rank != expected.src_rank) diffs.push_back("src");
  if (got.dst_rank != expected.dst_rank) diffs.push_back("dst");
  if (got.meta.step != expected.meta.step) diffs.push_back("step");
  if (got.meta.kind != expected.meta.kind) diffs.push_back("kind");
  if (got.meta.dtype != expected.meta.dtype) diffs.push_back("dtype");
  if (!SameShape(got, expected)) diffs.push_back("shape");
  if (got.bytes != expected.bytes) diffs.push_back("bytes");
  if (diffs.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "message header mismatch (", absl::StrJoin(diffs, ", "), "): rank ", got.src_rank, " sent ",
      HeaderToString(got), ", rank ", expected.dst_rank, " expected ", HeaderToString(expected)));
}

absl::StatusOr<absl::Duration> DefaultTimeout() {
  const char* value = std::getenv(kTimeoutVariable);
  if (value == nullptr) return absl::Milliseconds(kDefaultTimeoutMs);
  const absl::string_view text(value);
  // Digits only (no sign, space or unit), at most 15 of them: no overflow.
  bool digits = !text.empty() && text.size() <= 15;
  for (char ch : text) digits = digits && ch >= '0' && ch <= '9';
  int64_t ms = 0;
  if (digits) {
    for (char ch : text) ms = ms * 10 + (ch - '0');
  }
  if (!digits || ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kTimeoutVariable,
                     ": expected a positive integer number of milliseconds, got \"", text, "\""));
  }
  return absl::Milliseconds(ms);
}

absl::StatusOr<absl::Duration> ResolveTimeout(absl::Duration requested, absl::string_view arg) {
  if (requested < absl::ZeroDuration()) {
    return ArgError(arg, "a duration > 0 (0 for the default)", absl::FormatDuration(requested));
  }
  if (requested == absl::ZeroDuration()) return DefaultTimeout();
  return requested;
}

absl::Status ValidateSendRecvPart(int rank, int size, const char* peer_name, int peer,
                                  const void* buf, int64_t bytes, const MessageMeta& meta) {
  const std::string where = absl::StrCat("rank ", rank, ": SendRecv: ");
  if (peer < 0 || peer >= size) {
    return ArgError(absl::StrCat(where, peer_name), absl::StrCat("a rank in [0, ", size, ")"),
                    peer);
  }
  if (bytes < 0) {
    return ArgError(absl::StrCat(where, peer_name, " bytes"), "a count >= 0", bytes);
  }
  if (buf == nullptr && bytes > 0) {
    return ArgError(absl::StrCat(where, peer_name, " buffer"),
                    absl::StrCat("a buffer of ", bytes, " bytes"), "null");
  }
  if (meta.ndim < 0 || meta.ndim > kMaxDims) {
    return ArgError(absl::StrCat(where, peer_name, " meta ndim"), absl::StrCat("0 to ", kMaxDims),
                    meta.ndim);
  }
  for (int i = 0; i < meta.ndim; ++i) {
    if (meta.shape[i] < 0) {
      return ArgError(absl::StrCat(where, peer_name, " meta shape[", i, "]"), "a size >= 0",
                      meta.shape[i]);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SendRecvHalves> ValidateSendRecv(int rank, int size, const void* send,
                                                int64_t send_bytes, int to,
                                                const MessageMeta& send_meta, const void* recv,
                                                int64_t recv_bytes, int from,
                                                const MessageMeta& recv_meta) {
  SendRecvHalves halves;
  halves.send = send != nullptr || send_bytes != 0;
  halves.recv = recv != nullptr || recv_bytes != 0;
  if (halves.send) {
    RETURN_IF_ERROR(ValidateSendRecvPart(rank, size, "to", to, send, send_bytes, send_meta));
  }
  if (halves.recv) {
    RETURN_IF_ERROR(ValidateSendRecvPart(rank, size, "from", from, recv, recv_bytes, recv_meta));
  }
  return halves;
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::SendRecvOnStream(
    void*, const void*, int64_t, int, const MessageMeta&, void*, int64_t, int,
    const MessageMeta&) {
  return absl::UnimplementedError(absl::StrCat(
      Name(), " communicator: not stream ordered (synchronize the stream, then SendRecv)"));
}

}  // namespace ringattn::comm
