// The staged communicator (see staged_comm.h).
#include "comm/staged/staged_comm.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace ringattn::comm {
namespace {

// Host buffers by capacity; shared with the requests that hold some.
class Pool {
 public:
  explicit Pool(std::unique_ptr<Stager> stager) : stager_(std::move(stager)) {}
  ~Pool() {
    for (auto& [bytes, ptr] : free_) stager_->FreeHost(ptr);
  }
  Stager& stager() { return *stager_; }

  struct Buffer {
    void* ptr = nullptr;
    int64_t capacity = 0;
  };
  absl::StatusOr<Buffer> Acquire(int64_t bytes) {
    const int64_t want = bytes > 0 ? bytes : 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(want);
      if (it != free_.end()) {
        Buffer b{it->second, it->first};
        free_.erase(it);
        return b;
      }
    }
    ASSIGN_OR_RETURN(void* ptr, stager_->AllocHost(want));
    return Buffer{ptr, want};
  }
  void Release(const Buffer& b) {
    if (b.ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(b.capacity, b.ptr);
  }

 private:
  std::unique_ptr<Stager> stager_;
  std::mutex mu_;
  std::multimap<int64_t, void*> free_;
};

class StagedRequest final : public Request {
 public:
  StagedRequest(std::shared_ptr<Pool> pool, Pool::Buffer send, Pool::Buffer recv, void* dst,
                int64_t recv_bytes, absl::Duration timeout)
      : pool_(std::move(pool)),
        send_(send),
        recv_(recv),
        dst_(dst),
        recv_bytes_(recv_bytes),
        timeout_(timeout) {}
  // Like every request: destroying a pending one waits for it (up to the
  // communicator's timeout), and what it received still lands.
  ~StagedRequest() override {
    if (inner_ != nullptr && !landed_ && inner_->Wait(timeout_).ok()) (void)Land();
    inner_.reset();
    pool_->Release(send_);
    pool_->Release(recv_);
  }
  void set_inner(std::unique_ptr<Request> inner) { inner_ = std::move(inner); }

  absl::StatusOr<bool> Test() override {
    ASSIGN_OR_RETURN(const bool done, inner_->Test());
    if (!done) return false;
    RETURN_IF_ERROR(Land());
    return true;
  }
  absl::Status Wait(absl::Duration timeout) override {
    RETURN_IF_ERROR(inner_->Wait(timeout));
    return Land();
  }

 private:
  // The received bytes to their destination, once.
  absl::Status Land() {
    if (!landed_) {
      landed_ = true;
      if (recv_bytes_ > 0) land_status_ = pool_->stager().FromHost(dst_, recv_.ptr, recv_bytes_);
    }
    return land_status_;
  }

  std::shared_ptr<Pool> pool_;
  Pool::Buffer send_, recv_;
  void* dst_;
  int64_t recv_bytes_;
  const absl::Duration timeout_;
  std::unique_ptr<Request> inner_;
  bool landed_ = false;
  absl::Status land_status_;
};

class StagedComm final : public Communicator {
 public:
  StagedComm(Communicator* inner, std::unique_ptr<Stager> stager, absl::Duration timeout)
      : inner_(inner), pool_(std::make_shared<Pool>(std::move(stager))), timeout_(timeout) {}

  int Rank() const override { return inner_->Rank(); }
  int Size() const override { return inner_->Size(); }
  std::string Name() const override { return inner_->Name(); }

  absl::StatusOr<std::unique_ptr<Request>> SendRecv(const void* send, int64_t send_bytes, int to,
                                                    const MessageMeta& send_meta, void* recv,
                                                    int64_t recv_bytes, int from,
                                                    const MessageMeta& recv_meta) override {
    // Checked here too: the copies below must not touch a bad buffer.
    ASSIGN_OR_RETURN(const SendRecvHalves halves,
                     ValidateSendRecv(Rank(), Size(), send, send_bytes, to, send_meta, recv,
                                      recv_bytes, from, recv_meta));
    const bool want_send = halves.send, want_recv = halves.recv;
    Pool::Buffer sbuf, rbuf;
    if (want_send) {
      ASSIGN_OR_RETURN(sbuf, pool_->Acquire(send_bytes));
      if (send_bytes > 0) {
        const absl::Status s = pool_->stager().ToHost(sbuf.ptr, send, send_bytes);
        if (!s.ok()) {
          pool_->Release(sbuf);
          return s;
        }
      }
    }
    if (want_recv) {
      auto r = pool_->Acquire(recv_bytes);
      if (!r.ok()) {
        pool_->Release(sbuf);
        return r.status();
      }
      rbuf = *r;
    }
    auto request = std::make_unique<StagedRequest>(pool_, sbuf, rbuf, recv, recv_bytes, timeout_);
    ASSIGN_OR_RETURN(std::unique_ptr<Request> inner,
                     inner_->SendRecv(sbuf.ptr, send_bytes, to, send_meta, rbuf.ptr, recv_bytes,
                                      from, recv_meta));
    request->set_inner(std::move(inner));
    return std::unique_ptr<Request>(std::move(request));
  }

  absl::Status Barrier(absl::Duration timeout) override { return inner_->Barrier(timeout); }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  int64_t BytesSent() const override { return inner_->BytesSent(); }

 private:
  Communicator* const inner_;
  std::shared_ptr<Pool> pool_;
  const absl::Duration timeout_;
};

class HostStager final : public Stager {
 public:
  absl::StatusOr<void*> AllocHost(int64_t bytes) override {
    void* p = std::malloc(static_cast<size_t>(bytes));
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("staging: cannot allocate ", bytes, " bytes"));
    }
    return p;
  }
  void FreeHost(void* host) override { std::free(host); }
  absl::Status ToHost(void* host, const void* src, int64_t bytes) override {
    std::memcpy(host, src, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }
  absl::Status FromHost(void* dst, const void* host, int64_t bytes) override {
    std::memcpy(dst, host, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }
  std::string Describe() const override { return "host buffers (memcpy)"; }
};

}  // namespace

std::unique_ptr<Stager> MakeHostStager() { return std::make_unique<HostStager>(); }

std::unique_ptr<Communicator> MakeStagedCommunicator(Communicator* inner,
                                                     std::unique_ptr<Stager> stager,
                                                     absl::Duration timeout) {
  return std::make_unique<StagedComm>(inner, std::move(stager), timeout);
}

}  // namespace ringattn::comm
