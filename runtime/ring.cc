// The ring: forward and backward schedules over a Communicator and a
// KernelBackend (see ringattn.h for the API and DESIGN.md for the steps).
//
// Forward, rank r, step t (block of rank src = r - t):
//   post SendRecv(KV[cur] -> r+1, KV[nxt] <- r-1)   (unless last step)
//   compute (q, KV[cur]) -> (out, lse) partial; merge into fp32 accumulator
//   wait; swap cur/nxt
// Backward: dsum = rowsum(dO * O) once; the KV blocks rotate again, and the
// fp32 dK/dV accumulator of each block travels one step behind it: at step t
// the block's gradient is computed into a scratch, then added to the
// accumulator received from r-1 and forwarded to r+1. After the last step
// the accumulator goes straight home to its owner (one hop when the ring
// ran all W steps, a direct message when a window ended it early).
// Any error aborts the communicator so that every rank fails promptly.
//
// Order on a GPU: backend calls only enqueue on the rank's compute stream.
// Each transfer is posted with SendRecvOnStream, so it starts on the device
// once the kernels queued before it are done (its send buffer written, its
// receive buffer no longer read), and the stream waits for it on the device
// (Request::WaitOnStream) before the kernels that read what it brings. The
// host waits only until each transfer is matched, its headers checked and
// its copy queued -- which is where a silent peer or a mismatch becomes an
// error naming the step -- not for its bytes (nccl queues a transfer once
// the one before it has landed), and for the stream once at the end (not
// at all on a caller's stream: the requests then stay in flight until the
// next call). A communicator that is not stream ordered gets the stream
// synchronized before each post and host waits.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "runtime/backend.h"
#include "runtime/plan.h"
#include "runtime/ringattn.h"

namespace ringattn {
namespace {

constexpr int kKindKV = 0;
constexpr int kKindDKV = 1;
constexpr int kKindDKVHome = 2;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool MulOverflows(std::initializer_list<int64_t> xs, int64_t* out) {
  int64_t acc = 1;
  for (int64_t x : xs) {
    if (x < 0 || __builtin_mul_overflow(acc, x, &acc)) return true;
  }
  *out = acc;
  return false;
}

// A backend allocation that frees itself.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }
  absl::Status Reserve(KernelBackend* be, int64_t bytes) {
    if (bytes <= bytes_ && ptr_ != nullptr) return absl::OkStatus();
    Reset();
    ASSIGN_OR_RETURN(ptr_, be->Allocate(std::max<int64_t>(bytes, 64)));
    be_ = be;
    bytes_ = bytes;
    return absl::OkStatus();
  }
  void Reset() {
    if (ptr_ != nullptr) be_->Free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  int64_t bytes() const { return ptr_ == nullptr ? 0 : bytes_; }
  float* f() const { return static_cast<float*>(ptr_); }
  char* c() const { return static_cast<char*>(ptr_); }

 private:
  KernelBackend* be_ = nullptr;
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

class RingImpl final : public RingAttention {
 public:
  RingImpl(comm::Communicator* comm, const RingOptions& opt, Layout layout,
           std::unique_ptr<KernelBackend> backend, absl::Duration timeout)
      : comm_(comm),
        opt_(opt),
        layout_(std::move(layout)),
        backend_(std::move(backend)),
        timeout_(timeout),
        rank_(comm->Rank()),
        world_(comm->Size()),
        mask_{opt.causal, opt.window_left, opt.window_right},
        plan_(layout_, mask_, rank_) {}

  absl::Status Forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse) override {
    return ForwardOnStream(nullptr, q, k, v, out, lse);
  }
  absl::Status Backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override {
    return BackwardOnStream(nullptr, q, k, v, out, lse, dout, dq, dk, dv);
  }
  absl::Status ForwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out,
                               const TensorView& lse) override {
    return Settled(stream, RunForward(stream, q, k, v, out, lse));
  }
  absl::Status BackwardOnStream(void* stream, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout,
                                const TensorView& dq, const TensorView& dk,
                                const TensorView& dv) override {
    return Settled(stream, RunBackward(stream, q, k, v, out, lse, dout, dq, dk, dv));
  }
  const RingStats& LastStats() const override {
    if (timing_pending_) {  // a call on a caller's stream: its kernels' time is known now
      timing_pending_ = false;
      auto seconds = backend_->TimedSeconds(timeout_);
      stats_.compute_seconds = seconds.ok() ? *seconds : NAN;  // NaN: not known in time
    }
    return stats_;
  }
  const Layout& layout() const override { return layout_; }
  int64_t ShardLength() const override { return layout_.ShardLength(rank_); }
  std::string BackendDescription() const override {
    if (backend_->Stream() == nullptr) return backend_->Describe();
    return absl::StrCat(backend_->Describe(), "; ", comm_->Name(),
                        comm_->StreamOrdered()
                            ? " transfers ordered on the stream both ways (events, no host "
                              "wait per step for the step's own bytes)"
                            : " transfers after a stream synchronize (not stream ordered)");
  }

 private:
  struct Dims {
    int64_t B, S, H, Hk, D;
  };
  absl::StatusOr<Dims> Validate(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const TensorView& lse) const;
  absl::Status CheckView(const TensorView& t, const char* name, DType dtype,
                         std::initializer_list<int64_t> shape) const;
  AttnParams BaseParams(const Dims& d, const TensorView& q) const;
  comm::MessageMeta Meta(int step, int kind, int src, const Dims& d, DType dtype) const;
  // Points p's k and v at the packed block [2][B][S_src][Hkv][D] of `src`.
  void SetKV(AttnParams* p, const char* block, int src, const Dims& d) const {
    const int64_t s_src = layout_.ShardLength(src);
    p->k = block;
    p->v = block + d.B * s_src * d.Hk * d.D * DTypeSize(opt_.dtype);
    p->k_stride = p->v_stride = TensorStrides::Contiguous(s_src, d.Hk, d.D);
    p->seqlen_k = s_src;
    p->k_pos = layout_.Shard(src);
  }
  int64_t BlockElems(int src, const Dims& d) const {
    return 2 * d.B * layout_.ShardLength(src) * d.Hk * d.D;
  }
  // Wraps an error with rank and step, aborts the world, returns it.
  absl::Status Fail(const absl::Status& s, int step, const char* what);
  absl::Status WaitFor(comm::Request* req, int step, const char* what);
  // The bytes of `req` are needed from here on: the rank's stream waits for
  // them on the device where the communicator can (the request is kept in
  // inflight_ until it completes), else the host waits.
  absl::Status Arrive(std::unique_ptr<comm::Request> req, int step, const char* what);
  // Host waits for the requests in flight (all done once the stream is),
  // reporting the first failure; forgets them all.
  absl::Status Drain();
  // Posts one SendRecv after the work enqueued so far: stream ordered where
  // the communicator can, else after synchronizing the backend.
  absl::StatusOr<std::unique_ptr<comm::Request>> Post(int step, const char* what,
                                                      const void* send, int64_t send_bytes,
                                                      int to, const comm::MessageMeta& send_meta,
                                                      void* recv, int64_t recv_bytes, int from,
                                                      const comm::MessageMeta& recv_meta);
  absl::Status RunForward(void* stream, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, const TensorView& lse);
  absl::Status RunBackward(void* stream, const TensorView& q, const TensorView& k,
                           const TensorView& v, const TensorView& out, const TensorView& lse,
                           const TensorView& dout, const TensorView& dq, const TensorView& dk,
                           const TensorView& dv);
  // A caller's stream is only for a backend with streams.
  absl::Status CheckStream(void* stream) const;
  // Start of a call, after the workspace is reserved (growing it waits for
  // the rank's stream, which must not yet wait for the caller's): the
  // ring's kernels go after the work on the caller's stream, null meaning
  // the legacy default stream (what PyTorch's default stream is).
  absl::Status Begin(void* stream);
  // A call that failed after enqueueing work: that work still reads the
  // caller's tensors, so the caller's stream waits for it (or, on the
  // synchronous API, the host does, within the timeout).
  absl::Status Settled(void* stream, absl::Status s) {
    if (s.ok() || backend_->Stream() == nullptr) return s;
    if (stream != nullptr) {
      (void)backend_->MakeStreamWait(stream);
    } else {
      (void)backend_->Synchronize(timeout_);
    }
    // After an abort they settle promptly; otherwise (a bad argument, a
    // failed enqueue) the next call's Drain waits for them and reports.
    if (aborted_) inflight_.clear();
    return s;
  }
  // End of a call: the caller's stream waits for the ring, or the host
  // waits for the GPU; then the stats.
  absl::Status Finish(void* stream, int steps, double t_start);
  absl::Status Timed(absl::Status s) {
    absl::Status end = backend_->EndTimed();
    return s.ok() ? end : s;
  }
  absl::Status PackKV(const TensorView& k, const TensorView& v, const Dims& d, void* dst);
  int64_t WorkspaceBytes() const {
    int64_t total = 0;
    for (const Buffer* b : {&kv_[0], &kv_[1], &acc_out_, &acc_lse_, &part_out_, &part_lse_, &dsum_,
                            &dq_acc_, &dkv_[0], &dkv_[1], &dkv_tmp_})
      total += b->bytes();
    return total;
  }

  comm::Communicator* comm_;
  RingOptions opt_;
  Layout layout_;
  std::unique_ptr<KernelBackend> backend_;
  absl::Duration timeout_;
  int rank_, world_;
  Mask mask_;
  RingPlan plan_;
  mutable RingStats stats_;
  mutable bool timing_pending_ = false;
  bool aborted_ = false;  // Fail aborted the communicator
  // Workspace, grown on demand and kept between calls.
  Buffer kv_[2], acc_out_, acc_lse_, part_out_, part_lse_, dsum_, dq_acc_, dkv_[2], dkv_tmp_;
  // Transfers the rank's stream waits for on the device, oldest first, with
  // the step and what they were for. Declared after the workspace, so that
  // they are destroyed (each waiting for its transfer) before it is freed.
  struct Inflight {
    std::unique_ptr<comm::Request> req;
    int step;
    const char* what;
  };
  std::vector<Inflight> inflight_;
};

absl::Status RingImpl::Fail(const absl::Status& s, int step, const char* what) {
  absl::Status wrapped(s.code(), absl::StrCat("rank ", rank_, ", ring step ", step, " (", what,
                                              "): ", s.message()));
  comm_->Abort(wrapped);
  aborted_ = true;
  return wrapped;
}

absl::Status RingImpl::WaitFor(comm::Request* req, int step, const char* what) {
  const double t0 = Now();
  absl::Status s = req->Wait(timeout_);
  stats_.wait_seconds += Now() - t0;
  if (!s.ok()) return Fail(s, step, what);
  return absl::OkStatus();
}

absl::Status RingImpl::Arrive(std::unique_ptr<comm::Request> req, int step, const char* what) {
  void* stream = backend_->Stream();
  if (stream == nullptr || !comm_->StreamOrdered()) return WaitFor(req.get(), step, what);
  const double t0 = Now();
  absl::Status s = req->WaitOnStream(stream, timeout_);
  stats_.wait_seconds += Now() - t0;
  if (!s.ok()) return Fail(s, step, what);
  inflight_.push_back(Inflight{std::move(req), step, what});
  // Forget those that completed (in order), and fail early on a failed one.
  size_t done = 0;
  for (; done < inflight_.size(); ++done) {
    absl::StatusOr<bool> test = inflight_[done].req->Test();
    if (!test.ok()) return Fail(test.status(), inflight_[done].step, inflight_[done].what);
    if (!*test) break;
  }
  inflight_.erase(inflight_.begin(), inflight_.begin() + static_cast<std::ptrdiff_t>(done));
  return absl::OkStatus();
}

absl::Status RingImpl::Drain() {
  absl::Status first;
  for (Inflight& f : inflight_) {
    if (first.ok()) first = WaitFor(f.req.get(), f.step, f.what);
  }
  inflight_.clear();
  return first;
}

absl::StatusOr<std::unique_ptr<comm::Request>> RingImpl::Post(
    int step, const char* what, const void* send, int64_t send_bytes, int to,
    const comm::MessageMeta& send_meta, void* recv, int64_t recv_bytes, int from,
    const comm::MessageMeta& recv_meta) {
  void* stream = backend_->Stream();
  absl::StatusOr<std::unique_ptr<comm::Request>> r;
  if (stream != nullptr && comm_->StreamOrdered()) {
    r = comm_->SendRecvOnStream(stream, send, send_bytes, to, send_meta, recv, recv_bytes, from,
                                recv_meta);
  } else {
    if (stream != nullptr) {
      absl::Status s = backend_->Synchronize(timeout_);
      if (!s.ok()) return Fail(s, step, what);
    }
    r = comm_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
  }
  if (!r.ok()) return Fail(r.status(), step, what);
  // Counted when posted: on a caller's stream the call may return before
  // the communicator has seen the last transfers complete.
  stats_.bytes_sent += send_bytes;
  return r;
}

absl::Status RingImpl::CheckStream(void* stream) const {
  if (stream != nullptr && backend_->Stream() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stream: the ", backend_->Name(),
        " backend has no streams (pass null, or use the cuda backend)"));
  }
  return absl::OkStatus();
}

absl::Status RingImpl::Begin(void* stream) {
  RETURN_IF_ERROR(backend_->StartTiming());
  if (backend_->Stream() != nullptr) RETURN_IF_ERROR(backend_->WaitForStream(stream));
  return absl::OkStatus();
}

absl::Status RingImpl::Finish(void* stream, int steps, double t_start) {
  if (stream != nullptr) {
    RETURN_IF_ERROR(backend_->MakeStreamWait(stream));
    timing_pending_ = true;
  } else {
    absl::Status s = backend_->Synchronize(timeout_);
    if (!s.ok()) return Fail(s, steps - 1, "completing the rank's kernels");
    RETURN_IF_ERROR(Drain());
    ASSIGN_OR_RETURN(stats_.compute_seconds, backend_->TimedSeconds(timeout_));
  }
  stats_.steps = steps;
  stats_.workspace_bytes = WorkspaceBytes();
  stats_.wall_seconds = Now() - t_start;
  return absl::OkStatus();
}

absl::Status RingImpl::CheckView(const TensorView& t, const char* name, DType dtype,
                                 std::initializer_list<int64_t> shape) const {
  if (t.ndim != static_cast<int>(shape.size())) {
    return ArgError(absl::StrCat(name, " rank"), shape.size(), t.ndim);
  }
  int i = 0;
  for (int64_t want : shape) {
    if (t.shape[i] != want) {
      std::string expected = "[";
      int j = 0;
      for (int64_t w : shape) absl::StrAppend(&expected, j++ ? ", " : "", w);
      absl::StrAppend(&expected, "]");
      return ArgError(absl::StrCat(name, " shape"), expected, t.ShapeString());
    }
    ++i;
  }
  if (t.dtype != dtype) return ArgError(absl::StrCat(name, " dtype"), DTypeName(dtype), DTypeName(t.dtype));
  if (t.device != backend_->device()) {
    return ArgError(absl::StrCat(name, " device"), backend_->Name(),
                    t.device == Device::kCpu ? "cpu" : "cuda");
  }
  int64_t numel = 1;
  for (int d = 0; d < t.ndim; ++d) numel *= t.shape[d];
  if (numel > 0 && t.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null data"));
  if (numel > 0 && t.strides[t.ndim - 1] != 1) {
    return ArgError(absl::StrCat(name, " innermost stride"), 1, t.strides[t.ndim - 1]);
  }
  for (int d = 0; d < t.ndim; ++d) {
    if (t.strides[d] < 0) return ArgError(absl::StrCat(name, " stride ", d), ">= 0", t.strides[d]);
  }
  return absl::OkStatus();
}

absl::StatusOr<RingImpl::Dims> RingImpl::Validate(const TensorView& q, const TensorView& k,
                                                  const TensorView& v, const TensorView& out,
                                                  const TensorView& lse) const {
  if (q.ndim != 4) return ArgError("q rank", 4, q.ndim);
  if (k.ndim != 4) return ArgError("k rank", 4, k.ndim);
  Dims d{q.shape[0], layout_.ShardLength(rank_), q.shape[2], k.shape[2], q.shape[3]};
  if (d.B < 1) return ArgError("q batch", ">= 1", d.B);
  if (d.H < 1) return ArgError("q heads", ">= 1", d.H);
  if (d.Hk < 1) return ArgError("k heads (Hkv)", ">= 1", d.Hk);
  if (d.H % d.Hk != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q heads % k heads: expected 0 (H a multiple of Hkv), got H=", d.H, " Hkv=", d.Hk));
  }
  if (d.D < 1 || d.D > 512) return ArgError("head dim", "1..512", d.D);
  int64_t bytes;
  if (MulOverflows({d.B, std::max<int64_t>(d.S, 1), d.H, d.D, 8}, &bytes) ||
      MulOverflows({d.B, layout_.MaxShardLength(), d.Hk, d.D, 16}, &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("sizes overflow 64 bits: B=", d.B, " S_r=", d.S,
                                                   " H=", d.H, " Hkv=", d.Hk, " D=", d.D));
  }
  RETURN_IF_ERROR(CheckView(q, "q", opt_.dtype, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(backend_->CheckKernelInput(q, "q"));
  RETURN_IF_ERROR(CheckView(k, "k", opt_.dtype, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckView(v, "v", opt_.dtype, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckView(out, "out", opt_.dtype, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(CheckView(lse, "lse", DType::kFloat32, {d.B, d.H, d.S}));
  if (d.S > 0 && (lse.strides[0] != d.H * d.S || lse.strides[1] != d.S)) {
    return ArgError("lse strides", absl::StrCat("contiguous (", d.H * d.S, ", ", d.S, ", 1)"),
                    absl::StrCat("(", lse.strides[0], ", ", lse.strides[1], ", ", lse.strides[2], ")"));
  }
  return d;
}

AttnParams RingImpl::BaseParams(const Dims& d, const TensorView& q) const {
  AttnParams p;
  p.q = q.data;
  p.q_stride = {q.strides[0], q.strides[1], q.strides[2]};
  p.dtype = opt_.dtype;
  p.batch = d.B;
  p.seqlen_q = d.S;
  p.num_heads = d.H;
  p.num_heads_k = d.Hk;
  p.head_dim = d.D;
  p.scale = opt_.scale.has_value() ? *opt_.scale : DefaultScale(d.D);
  p.softcap = opt_.softcap;
  p.mask = mask_;
  p.q_pos = layout_.Shard(rank_);
  p.lse_batch_stride = d.H * d.S;
  p.lse_head_stride = d.S;
  return p;
}

comm::MessageMeta RingImpl::Meta(int step, int kind, int src, const Dims& d, DType dtype) const {
  comm::MessageMeta m;
  m.step = step;
  m.kind = kind;
  m.dtype = static_cast<int32_t>(dtype);
  m.ndim = 5;
  const int64_t shape[5] = {2, d.B, layout_.ShardLength(src), d.Hk, d.D};
  std::copy(shape, shape + 5, m.shape);
  return m;
}

absl::Status RingImpl::PackKV(const TensorView& k, const TensorView& v, const Dims& d, void* dst) {
  RETURN_IF_ERROR(backend_->Pack(k, dst));
  const int64_t half = d.B * d.S * d.Hk * d.D * DTypeSize(opt_.dtype);
  return backend_->Pack(v, static_cast<char*>(dst) + half);
}

absl::Status RingImpl::RunForward(void* stream, const TensorView& q, const TensorView& k,
                                  const TensorView& v, const TensorView& out,
                                  const TensorView& lse) {
  ASSIGN_OR_RETURN(const Dims d, Validate(q, k, v, out, lse));
  RETURN_IF_ERROR(CheckStream(stream));
  // A previous call on a caller's stream may have left transfers in flight;
  // the workspace they use is about to be reused or grown.
  RETURN_IF_ERROR(Drain());
  timing_pending_ = false;
  stats_ = RingStats{};
  const double t_start = Now();
  const int64_t es = DTypeSize(opt_.dtype);
  const int64_t kv_bytes = 2 * d.B * layout_.MaxShardLength() * d.Hk * d.D * es;
  const int64_t o_elems = d.B * d.S * d.H * d.D, l_elems = d.B * d.H * d.S;
  for (Buffer* b : {&kv_[0], &kv_[1]}) RETURN_IF_ERROR(b->Reserve(backend_.get(), kv_bytes));
  RETURN_IF_ERROR(acc_out_.Reserve(backend_.get(), o_elems * 4));
  RETURN_IF_ERROR(acc_lse_.Reserve(backend_.get(), l_elems * 4));
  RETURN_IF_ERROR(part_out_.Reserve(backend_.get(), o_elems * 4));
  RETURN_IF_ERROR(part_lse_.Reserve(backend_.get(), l_elems * 4));
  RETURN_IF_ERROR(Begin(stream));
  RETURN_IF_ERROR(PackKV(k, v, d, kv_[0].c()));

  const int next = (rank_ + 1) % world_, prev = (rank_ - 1 + world_) % world_;
  const int steps = plan_.NumSteps();
  AttnParams p = BaseParams(d, q);
  p.out_dtype = DType::kFloat32;
  p.out_stride = TensorStrides::Contiguous(d.S, d.H, d.D);
  bool have_result = false;
  int cur = 0;
  for (int t = 0; t < steps; ++t) {
    const int src = plan_.Source(t);
    std::unique_ptr<comm::Request> req;
    if (t + 1 < steps) {
      const int src_next = plan_.Source(t + 1);
      ASSIGN_OR_RETURN(req, Post(t, "posting the KV transfer", kv_[cur].c(),
                                 BlockElems(src, d) * es, next, Meta(t, kKindKV, src, d, opt_.dtype),
                                 kv_[1 - cur].c(), BlockElems(src_next, d) * es, prev,
                                 Meta(t, kKindKV, src_next, d, opt_.dtype)));
    }
    const int64_t s_src = layout_.ShardLength(src);
    if (plan_.HasWork(t) && d.S > 0 && s_src > 0) {
      SetKV(&p, kv_[cur].c(), src, d);
      p.out = have_result ? part_out_.f() : acc_out_.f();
      p.lse = have_result ? part_lse_.f() : acc_lse_.f();
      absl::Status s = backend_->BeginTimed();
      if (s.ok()) s = backend_->Forward(p);
      if (s.ok() && have_result) {
        s = backend_->Merge(acc_out_.f(), acc_lse_.f(), part_out_.f(), part_lse_.f(), d.B, d.S,
                            d.H, d.D);
      }
      s = Timed(s);
      if (!s.ok()) return Fail(s, t, "attention forward");
      have_result = true;
      ++stats_.steps_with_work;
    }
    if (req) RETURN_IF_ERROR(Arrive(std::move(req), t, "waiting for the KV block"));
    cur = 1 - cur;
  }
  if (!have_result) {  // no visible key at all: out 0, lse -inf
    RETURN_IF_ERROR(backend_->Fill(acc_out_.f(), o_elems, 0.0f));
    RETURN_IF_ERROR(backend_->Fill(acc_lse_.f(), l_elems, -INFINITY));
  }
  RETURN_IF_ERROR(backend_->Unpack(acc_out_.f(), out));
  RETURN_IF_ERROR(backend_->Unpack(acc_lse_.f(), lse));
  return Finish(stream, steps, t_start);
}

absl::Status RingImpl::RunBackward(void* stream, const TensorView& q, const TensorView& k,
                                   const TensorView& v, const TensorView& out,
                                   const TensorView& lse, const TensorView& dout,
                                   const TensorView& dq, const TensorView& dk,
                                   const TensorView& dv) {
  ASSIGN_OR_RETURN(const Dims d, Validate(q, k, v, out, lse));
  RETURN_IF_ERROR(CheckView(dout, "dout", opt_.dtype, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(backend_->CheckKernelInput(dout, "dout"));
  RETURN_IF_ERROR(CheckView(dq, "dq", opt_.dtype, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(CheckView(dk, "dk", opt_.dtype, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckView(dv, "dv", opt_.dtype, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckStream(stream));
  // A previous call on a caller's stream may have left transfers in flight;
  // the workspace they use is about to be reused or grown.
  RETURN_IF_ERROR(Drain());
  timing_pending_ = false;
  stats_ = RingStats{};
  const double t_start = Now();
  const int64_t es = DTypeSize(opt_.dtype);
  const int64_t max_block = 2 * d.B * layout_.MaxShardLength() * d.Hk * d.D;
  const int64_t q_elems = d.B * d.S * d.H * d.D, l_elems = d.B * d.H * d.S;
  for (Buffer* b : {&kv_[0], &kv_[1]}) RETURN_IF_ERROR(b->Reserve(backend_.get(), max_block * es));
  for (Buffer* b : {&dkv_[0], &dkv_[1], &dkv_tmp_}) {
    RETURN_IF_ERROR(b->Reserve(backend_.get(), max_block * 4));
  }
  RETURN_IF_ERROR(dsum_.Reserve(backend_.get(), l_elems * 4));
  RETURN_IF_ERROR(dq_acc_.Reserve(backend_.get(), q_elems * 4));
  RETURN_IF_ERROR(Begin(stream));
  RETURN_IF_ERROR(PackKV(k, v, d, kv_[0].c()));
  RETURN_IF_ERROR(backend_->RowDot(dout, out, dsum_.f()));
  RETURN_IF_ERROR(backend_->Fill(dq_acc_.f(), q_elems, 0.0f));

  const int next = (rank_ + 1) % world_, prev = (rank_ - 1 + world_) % world_;
  const int steps = plan_.NumSteps();
  AttnParams p = BaseParams(d, q);
  p.dout = dout.data;
  p.dout_stride = {dout.strides[0], dout.strides[1], dout.strides[2]};
  p.lse = static_cast<float*>(lse.data);
  p.lse_batch_stride = lse.strides[0];
  p.lse_head_stride = lse.strides[1];
  p.dsum = dsum_.f();  // contiguous [B, H, S]
  p.dq_accum = dq_acc_.f();

  int cur = 0, acc = 0;  // kv_[cur]: block of this step; dkv_[acc]: its gradient
  std::unique_ptr<comm::Request> dkv_req;
  for (int t = 0; t < steps; ++t) {
    const int src = plan_.Source(t);
    const int64_t s_src = layout_.ShardLength(src);
    const int64_t block = BlockElems(src, d);
    std::unique_ptr<comm::Request> kv_req;
    if (t + 1 < steps) {
      const int src_next = plan_.Source(t + 1);
      ASSIGN_OR_RETURN(kv_req, Post(t, "posting the KV transfer", kv_[cur].c(), block * es, next,
                                    Meta(t, kKindKV, src, d, opt_.dtype), kv_[1 - cur].c(),
                                    BlockElems(src_next, d) * es, prev,
                                    Meta(t, kKindKV, src_next, d, opt_.dtype)));
    }
    // This step's gradient of block src goes to dkv_tmp_ (t > 0) or directly
    // to the accumulator (t == 0, nothing to add to).
    float* grad = t == 0 ? dkv_[acc].f() : dkv_tmp_.f();
    RETURN_IF_ERROR(backend_->Fill(grad, block, 0.0f));
    if (plan_.HasWork(t) && d.S > 0 && s_src > 0) {
      SetKV(&p, kv_[cur].c(), src, d);
      p.dk_accum = grad;
      p.dv_accum = grad + block / 2;
      absl::Status s = backend_->BeginTimed();
      if (s.ok()) s = Timed(backend_->Backward(p));
      if (!s.ok()) return Fail(s, t, "attention backward");
      ++stats_.steps_with_work;
    }
    if (t > 0) {
      // The accumulator of block src arrived from r-1 into dkv_[acc].
      RETURN_IF_ERROR(Arrive(std::move(dkv_req), t, "waiting for the dK/dV accumulator"));
      absl::Status s = backend_->BeginTimed();
      if (s.ok()) s = Timed(backend_->Add(dkv_[acc].f(), dkv_tmp_.f(), block));
      if (!s.ok()) return Fail(s, t, "adding to the dK/dV accumulator");
    }
    // Forward the accumulator: to r+1 for the next step, or home after the last.
    const bool last = t + 1 == steps;
    const int to = last ? src : next;
    const int from = last ? (rank_ + t) % world_ : prev;
    const int src_in = last ? rank_ : plan_.Source(t + 1);
    const int kind = last ? kKindDKVHome : kKindDKV;
    if (to == rank_ && from == rank_) {
      // Home already (a one-step ring): the accumulator stays.
    } else {
      ASSIGN_OR_RETURN(dkv_req, Post(t, "posting the dK/dV transfer", dkv_[acc].c(), block * 4, to,
                                     Meta(t, kind, src, d, DType::kFloat32), dkv_[1 - acc].c(),
                                     BlockElems(src_in, d) * 4, from,
                                     Meta(t, kind, src_in, d, DType::kFloat32)));
      acc = 1 - acc;
    }
    if (kv_req) RETURN_IF_ERROR(Arrive(std::move(kv_req), t, "waiting for the KV block"));
    cur = 1 - cur;
  }
  if (dkv_req) RETURN_IF_ERROR(Arrive(std::move(dkv_req), steps - 1, "waiting for the home dK/dV"));
  const int64_t own = BlockElems(rank_, d);
  RETURN_IF_ERROR(backend_->Unpack(dkv_[acc].f(), dk));
  RETURN_IF_ERROR(backend_->Unpack(dkv_[acc].f() + own / 2, dv));
  RETURN_IF_ERROR(backend_->Unpack(dq_acc_.f(), dq));
  return Finish(stream, steps, t_start);
}

absl::Status ValidateOptions(const RingOptions& o) {
  if (o.seqlen < 0) return ArgError("seqlen", ">= 0", o.seqlen);
  if (o.stripe < 1) return ArgError("stripe", ">= 1", o.stripe);
  if (o.window_left < -1) return ArgError("window_left", ">= -1 (-1 = unbounded)", o.window_left);
  if (o.window_right < -1) return ArgError("window_right", ">= -1 (-1 = unbounded)", o.window_right);
  if (!std::isfinite(o.softcap) || o.softcap < 0) return ArgError("softcap", "finite >= 0", o.softcap);
  if (o.scale.has_value() && (!std::isfinite(*o.scale) || *o.scale <= 0)) {
    return ArgError("scale", "finite > 0", *o.scale);
  }
  if (o.backend != Backend::kCpu && o.backend != Backend::kCuda) {
    return ArgError("backend", "kCpu or kCuda", static_cast<int>(o.backend));
  }
  if (o.backend == Backend::kCpu && o.dtype == DType::kFloat16) {
    return absl::UnimplementedError("dtype: fp16 needs the CUDA backend; the CPU backend stores fp32 or bf16");
  }
  if (o.backend == Backend::kCuda && o.dtype == DType::kFloat32) {
    return absl::UnimplementedError(
        "dtype: the CUDA backend takes bf16 or fp16 tensors, not fp32 (partial results and "
        "gradients are still accumulated in fp32)");
  }
  if (o.device_index < 0) return ArgError("device_index", ">= 0", o.device_index);
  if (o.timeout < absl::ZeroDuration()) return ArgError("timeout", ">= 0", absl::FormatDuration(o.timeout));
  if (o.num_threads < 0) return ArgError("num_threads", ">= 0", o.num_threads);
  return absl::OkStatus();
}

}  // namespace

const char* BackendName(Backend b) {
  switch (b) {
    case Backend::kCpu: return "cpu";
    case Backend::kCuda: return "cuda";
  }
  return "?";
}

absl::StatusOr<Backend> ParseBackend(const std::string& name) {
  for (Backend b : {Backend::kCpu, Backend::kCuda}) {
    if (name == BackendName(b)) return b;
  }
  return ArgError("backend", "cpu or cuda", absl::StrCat("'", name, "'"));
}

absl::StatusOr<std::unique_ptr<RingAttention>> RingAttention::Create(comm::Communicator* comm,
                                                                     const RingOptions& options) {
  if (comm == nullptr) return absl::InvalidArgumentError("comm: null communicator");
  RETURN_IF_ERROR(ValidateOptions(options));
  ASSIGN_OR_RETURN(Layout layout,
                   Layout::Create(options.sharding, options.seqlen, comm->Size(), options.stripe));
  absl::Duration timeout = options.timeout;
  if (timeout == absl::ZeroDuration()) {
    ASSIGN_OR_RETURN(timeout, comm::DefaultTimeout());
  }
  std::unique_ptr<KernelBackend> backend;
  if (options.backend == Backend::kCuda) {
    ASSIGN_OR_RETURN(backend, MakeCudaBackend(options.device_index, options.deterministic));
  } else {
    int threads = options.num_threads;
    if (threads == 0) {
      threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / comm->Size());
    }
    backend = MakeCpuBackend(threads);
  }
  return std::unique_ptr<RingAttention>(
      new RingImpl(comm, options, std::move(layout), std::move(backend), timeout));
}

}  // namespace ringattn
