// The collectives of the communicator interface (AllToAll, AllGather) and
// Split, built on SendRecv so that every backend has them (see
// communicator.h). A backend with a native collective may override them.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/communicator.h"

namespace ringattn::comm {
namespace {

int Mod(int a, int n) { return ((a % n) + n) % n; }

// The buffer of a zero-byte message (a message needs a non-null one).
char zero_byte_message[1];

MessageMeta BytesMeta(int step, int kind, int64_t bytes) {
  MessageMeta m;
  m.step = step;
  m.kind = kind;
  m.ndim = 1;
  m.shape[0] = bytes;
  return m;
}

// Waits for every request within one deadline, polling, so that the error
// reported is the first that happens (a header mismatch in a later round is
// not hidden behind a silent peer in an earlier one).
absl::Status WaitAll(std::vector<std::unique_ptr<Request>>& reqs, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<bool> done(reqs.size(), false);
  absl::Duration nap = absl::Microseconds(5);
  for (;;) {
    bool all = true, progress = false;
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (done[i]) continue;
      absl::StatusOr<bool> t = reqs[i]->Test();
      if (!t.ok()) return t.status();
      if (*t) {
        done[i] = progress = true;
      } else {
        all = false;
      }
    }
    if (all) return absl::OkStatus();
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      // The first pending request's own wait names its peer and step.
      for (size_t i = 0; i < reqs.size(); ++i) {
        if (!done[i]) RETURN_IF_ERROR(reqs[i]->Wait(absl::Milliseconds(1)));
      }
      continue;  // they completed just now
    }
    if (progress) {
      nap = absl::Microseconds(5);
    } else {
      absl::SleepFor(std::min(nap, deadline - now));
      nap = std::min(nap * 2, absl::Milliseconds(1));
    }
  }
}

absl::Status CheckSpan(size_t got, int size, const char* name) {
  if (static_cast<int>(got) == size) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": expected one entry per rank (", size, "), got ", got));
}

absl::Status CheckPart(const void* buf, int64_t bytes, const char* name, int j) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "_bytes[", j, "]: expected >= 0, got ", bytes));
  }
  if (bytes > 0 && buf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "[", j, "]: expected a buffer for ", bytes, " bytes, got null"));
  }
  return absl::OkStatus();
}

// A member group of a parent communicator: ranks are translated, messages
// go through the parent.
class SubCommunicator final : public Communicator {
 public:
  SubCommunicator(Communicator* parent, std::vector<int> members, int rank)
      : parent_(parent), members_(std::move(members)), rank_(rank) {}

  int Rank() const override { return rank_; }
  int Size() const override { return static_cast<int>(members_.size()); }
  std::string Name() const override { return parent_->Name(); }

  absl::StatusOr<std::unique_ptr<Request>> SendRecv(const void* send, int64_t send_bytes, int to,
                                                    const MessageMeta& send_meta, void* recv,
                                                    int64_t recv_bytes, int from,
                                                    const MessageMeta& recv_meta) override {
    ASSIGN_OR_RETURN(const SendRecvHalves halves,
                     ValidateSendRecv(rank_, Size(), send, send_bytes, to, send_meta, recv,
                                      recv_bytes, from, recv_meta));
    auto r = parent_->SendRecv(send, send_bytes, halves.send ? members_[to] : 0, send_meta, recv,
                               recv_bytes, halves.recv ? members_[from] : 0, recv_meta);
    if (r.ok() && halves.send) bytes_sent_ += send_bytes;
    return r;
  }
  bool StreamOrdered() const override { return parent_->StreamOrdered(); }
  absl::StatusOr<std::unique_ptr<Request>> SendRecvOnStream(
      void* stream, const void* send, int64_t send_bytes, int to, const MessageMeta& send_meta,
      void* recv, int64_t recv_bytes, int from, const MessageMeta& recv_meta) override {
    ASSIGN_OR_RETURN(const SendRecvHalves halves,
                     ValidateSendRecv(rank_, Size(), send, send_bytes, to, send_meta, recv,
                                      recv_bytes, from, recv_meta));
    auto r = parent_->SendRecvOnStream(stream, send, send_bytes, halves.send ? members_[to] : 0,
                                       send_meta, recv, recv_bytes,
                                       halves.recv ? members_[from] : 0, recv_meta);
    if (r.ok() && halves.send) bytes_sent_ += send_bytes;
    return r;
  }

  // Dissemination: in round k every member sends a zero-byte message to
  // rank + 2^k and receives one from rank - 2^k.
  absl::Status Barrier(absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    const int n = Size();
    int round = 0;
    for (int k = 1; k < n; k *= 2, ++round) {
      const MessageMeta meta = BytesMeta(round, kBarrierKind, 0);
      ASSIGN_OR_RETURN(auto req, SendRecv(zero_byte_message, 0, Mod(rank_ + k, n), meta,
                                          zero_byte_message, 0, Mod(rank_ - k, n), meta));
      RETURN_IF_ERROR(req->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())));
    }
    return absl::OkStatus();
  }
  void Abort(const absl::Status& reason) override { parent_->Abort(reason); }
  int64_t BytesSent() const override { return bytes_sent_.load(); }

 private:
  static constexpr int kBarrierKind = -2;
  Communicator* parent_;
  std::vector<int> members_;
  int rank_;
  std::atomic<int64_t> bytes_sent_{0};
};

}  // namespace

absl::Status Communicator::AllToAll(absl::Span<const void* const> send,
                                    absl::Span<const int64_t> send_bytes,
                                    absl::Span<void* const> recv,
                                    absl::Span<const int64_t> recv_bytes, int step, int kind,
                                    absl::Duration timeout) {
  const int w = Size(), r = Rank();
  RETURN_IF_ERROR(CheckSpan(send.size(), w, "send"));
  RETURN_IF_ERROR(CheckSpan(send_bytes.size(), w, "send_bytes"));
  RETURN_IF_ERROR(CheckSpan(recv.size(), w, "recv"));
  RETURN_IF_ERROR(CheckSpan(recv_bytes.size(), w, "recv_bytes"));
  for (int j = 0; j < w; ++j) {
    RETURN_IF_ERROR(CheckPart(send[j], send_bytes[j], "send", j));
    RETURN_IF_ERROR(CheckPart(recv[j], recv_bytes[j], "recv", j));
  }
  std::vector<std::unique_ptr<Request>> reqs;
  absl::Status s;
  for (int i = 0; i < w && s.ok(); ++i) {
    const int to = Mod(r + i, w), from = Mod(r - i, w);
    const void* sb = send_bytes[to] > 0 ? send[to] : zero_byte_message;
    void* rb = recv_bytes[from] > 0 ? recv[from] : zero_byte_message;
    auto req = SendRecv(sb, send_bytes[to], to, BytesMeta(step, kind, send_bytes[to]), rb,
                        recv_bytes[from], from, BytesMeta(step, kind, recv_bytes[from]));
    if (req.ok()) {
      reqs.push_back(std::move(req).value());
    } else {
      s = req.status();
    }
  }
  if (s.ok()) s = WaitAll(reqs, timeout);
  if (s.ok()) return s;
  absl::Status failed(s.code(), absl::StrCat("rank ", r, ", collective at step ", step,
                                             " (kind ", kind, "): ", s.message()));
  Abort(failed);
  return failed;
}

absl::Status Communicator::AllGather(const void* send, int64_t send_bytes,
                                     absl::Span<void* const> recv,
                                     absl::Span<const int64_t> recv_bytes, int step, int kind,
                                     absl::Duration timeout) {
  const int w = Size();
  RETURN_IF_ERROR(CheckSpan(recv.size(), w, "recv"));
  RETURN_IF_ERROR(CheckSpan(recv_bytes.size(), w, "recv_bytes"));
  if (recv_bytes[Rank()] != send_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("recv_bytes[", Rank(), "]: expected send_bytes (",
                                                   send_bytes, "), got ", recv_bytes[Rank()]));
  }
  const std::vector<const void*> sends(w, send);
  const std::vector<int64_t> sizes(w, send_bytes);
  return AllToAll(sends, sizes, recv, recv_bytes, step, kind, timeout);
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(absl::Span<const int> colors) {
  RETURN_IF_ERROR(CheckSpan(colors.size(), Size(), "colors"));
  std::vector<int> members;
  int sub_rank = 0;
  for (int j = 0; j < Size(); ++j) {
    if (colors[j] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("colors[", j, "]: expected >= 0, got ", colors[j]));
    }
    if (colors[j] != colors[Rank()]) continue;
    if (j == Rank()) sub_rank = static_cast<int>(members.size());
    members.push_back(j);
  }
  return std::unique_ptr<Communicator>(new SubCommunicator(this, std::move(members), sub_rank));
}

}  // namespace ringattn::comm
