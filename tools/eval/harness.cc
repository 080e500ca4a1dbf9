// Runs W local ranks through the public API; see harness.h.
#include "tools/eval/harness.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "comm/local/local_comm.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"

namespace ringattn::eval {

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kNone:
      return "none";
    case Fault::kBrokenMask:
      return "broken-mask";
    case Fault::kDropRingStep:
      return "drop-ring-step";
  }
  return "?";
}

Mask BrokenMask(const Mask& m) {
  if (m.IsNone()) return Mask{true, -1, -1};
  Mask b;
  b.causal = false;
  b.window_left = m.HasLeft() ? m.window_left + 1 : -1;
  b.window_right = m.HasRight() ? m.RightOffset() + 1 : -1;
  return b;
}

int64_t ShardTensorBytes(const RunSpec& spec, int64_t shard_len) {
  const int64_t es = DTypeSize(spec.dtype);
  const int64_t per_q = shard_len * spec.heads * spec.head_dim * es;
  const int64_t per_k = shard_len * spec.kv_heads * spec.head_dim * es;
  const int64_t lse = shard_len * spec.heads * 4;
  // Forward: q, k, v, out, lse; backward adds dout, dq, dk, dv.
  return spec.backward ? 4 * per_q + 4 * per_k + lse : 2 * per_q + 2 * per_k + lse;
}

namespace {

int64_t StatusField(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, n, key) == 0) {
      return std::strtoll(line.c_str() + n, nullptr, 10) * 1024;  // "VmRSS:   1234 kB"
    }
  }
  return -1;
}

}  // namespace

int64_t CurrentRss() { return StatusField("VmRSS:"); }
int64_t PeakRss() { return StatusField("VmHWM:"); }
bool ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

namespace {

// A request whose receive buffer is zeroed once it completed: the block it
// carried is lost, as if a ring step had been dropped.
class ZeroingRequest final : public comm::Request {
 public:
  ZeroingRequest(std::unique_ptr<comm::Request> inner, void* recv, int64_t bytes)
      : inner_(std::move(inner)), recv_(recv), bytes_(bytes) {}
  absl::StatusOr<bool> Test() override {
    auto r = inner_->Test();
    if (r.ok() && *r) Zero();
    return r;
  }
  absl::Status Wait(absl::Duration timeout) override {
    absl::Status s = inner_->Wait(timeout);
    if (s.ok()) Zero();
    return s;
  }

 private:
  void Zero() {
    if (!zeroed_ && recv_ != nullptr) std::memset(recv_, 0, bytes_);
    zeroed_ = true;
  }
  std::unique_ptr<comm::Request> inner_;
  void* recv_;
  int64_t bytes_;
  bool zeroed_ = false;
};

// Zeroes the KV block (message kind 0) received for ring step `drop_step`,
// i.e. the transfer posted at step drop_step - 1.
class DroppingComm final : public comm::Communicator {
 public:
  DroppingComm(comm::Communicator* inner, int drop_step) : inner_(inner), drop_step_(drop_step) {}
  int Rank() const override { return inner_->Rank(); }
  int Size() const override { return inner_->Size(); }
  std::string Name() const override { return absl::StrCat(inner_->Name(), "+drop"); }
  absl::StatusOr<std::unique_ptr<comm::Request>> SendRecv(
      const void* send, int64_t send_bytes, int to, const comm::MessageMeta& send_meta, void* recv,
      int64_t recv_bytes, int from, const comm::MessageMeta& recv_meta) override {
    auto r = inner_->SendRecv(send, send_bytes, to, send_meta, recv, recv_bytes, from, recv_meta);
    if (!r.ok() || recv_meta.kind != 0 || recv_meta.step != drop_step_ - 1) return r;
    return std::unique_ptr<comm::Request>(
        new ZeroingRequest(std::move(r).value(), recv, recv_bytes));
  }
  absl::Status Barrier(absl::Duration timeout) override { return inner_->Barrier(timeout); }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  int64_t BytesSent() const override { return inner_->BytesSent(); }

 private:
  comm::Communicator* inner_;
  int drop_step_;
};

// Storage of `n` floats in `t`, written to `dst`.
void Store(const float* src, int64_t n, DType t, uint8_t* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t w = FloatToBF16(src[i]);
    std::memcpy(dst + 2 * i, &w, 2);
  }
}
void Load(const uint8_t* src, int64_t n, DType t, float* dst) {
  if (t == DType::kFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t w;
    std::memcpy(&w, src + 2 * i, 2);
    dst[i] = BF16ToFloat(w);
  }
}

struct Shard {
  int64_t len = 0;
  std::vector<int64_t> pos;  // global position of each local row
  std::vector<uint8_t> q, k, v, dout, out, dq, dk, dv;
  std::vector<float> lse;  // [H, S_r]
};

using FillFn = std::function<void(int rank, Shard* s)>;
using DrainFn = std::function<void(int rank, const Shard& s)>;

absl::StatusOr<RunStats> RunRanks(const RunSpec& spec, const FillFn& fill, const DrainFn& drain) {
  const int W = spec.world;
  ASSIGN_OR_RETURN(auto world, comm::LocalWorld::Create(W));
  std::vector<absl::Status> status(W);
  std::vector<RunStats> per(W);
  const bool rss_ok = ResetPeakRss();
  const int64_t rss_before = CurrentRss();
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r) {
    threads.emplace_back([&, r] {
      status[r] = [&]() -> absl::Status {
        comm::Communicator* cm = &world->Comm(r);
        std::unique_ptr<DroppingComm> dropping;
        if (spec.fault == Fault::kDropRingStep) {
          dropping = std::make_unique<DroppingComm>(cm, spec.drop_step);
          cm = dropping.get();
        }
        RingOptions opt;
        opt.seqlen = spec.seqlen;
        opt.sharding = spec.sharding;
        opt.stripe = spec.stripe;
        const Mask m = spec.fault == Fault::kBrokenMask ? BrokenMask(spec.mask) : spec.mask;
        opt.causal = m.causal;
        opt.window_left = m.window_left;
        opt.window_right = m.window_right;
        opt.dtype = spec.dtype;
        opt.num_threads = spec.threads;
        auto ring_or = RingAttention::Create(cm, opt);
        if (!ring_or.ok()) {
          cm->Abort(ring_or.status());
          return ring_or.status();
        }
        auto& ring = *ring_or;
        Shard s;
        s.len = ring->ShardLength();
        s.pos = ring->layout().Positions(r);
        const int64_t es = DTypeSize(spec.dtype), H = spec.heads, Hk = spec.kv_heads,
                      D = spec.head_dim, Sr = s.len;
        s.q.resize(Sr * H * D * es);
        s.k.resize(Sr * Hk * D * es);
        s.v.resize(s.k.size());
        s.out.resize(s.q.size());
        s.lse.resize(H * Sr);
        if (spec.backward) {
          s.dout.resize(s.q.size());
          s.dq.resize(s.q.size());
          s.dk.resize(s.k.size());
          s.dv.resize(s.k.size());
        }
        fill(r, &s);
        auto V = [&](std::vector<uint8_t>& x, int64_t heads) {
          return TensorView::Contiguous(x.data(), spec.dtype, {1, Sr, heads, D});
        };
        const TensorView lv = TensorView::Contiguous(s.lse.data(), DType::kFloat32, {1, H, Sr});
        RunStats& st = per[r];
        RETURN_IF_ERROR(cm->Barrier(absl::Seconds(600)));
        RETURN_IF_ERROR(ring->Forward(V(s.q, H), V(s.k, Hk), V(s.v, Hk), V(s.out, H), lv));
        const RingStats fs = ring->LastStats();
        st.fwd_seconds = fs.wall_seconds;
        st.fwd_compute_seconds = fs.compute_seconds;
        st.steps = fs.steps;
        st.bytes_sent = fs.bytes_sent;
        st.workspace_bytes = fs.workspace_bytes;
        if (spec.backward) {
          RETURN_IF_ERROR(cm->Barrier(absl::Seconds(600)));
          RETURN_IF_ERROR(ring->Backward(V(s.q, H), V(s.k, Hk), V(s.v, Hk), V(s.out, H), lv,
                                         V(s.dout, H), V(s.dq, H), V(s.dk, Hk), V(s.dv, Hk)));
          const RingStats bs = ring->LastStats();
          st.bwd_seconds = bs.wall_seconds;
          st.bwd_compute_seconds = bs.compute_seconds;
          st.workspace_bytes = std::max(st.workspace_bytes, bs.workspace_bytes);
        }
        st.tensor_bytes = ShardTensorBytes(spec, Sr);
        st.rank_bytes = st.tensor_bytes + st.workspace_bytes;
        drain(r, s);
        return absl::OkStatus();
      }();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < W; ++r) {
    if (!status[r].ok()) return status[r];
  }
  RunStats res;
  res.steps = per[0].steps;
  for (const RunStats& p : per) {
    res.fwd_seconds = std::max(res.fwd_seconds, p.fwd_seconds);
    res.bwd_seconds = std::max(res.bwd_seconds, p.bwd_seconds);
    res.fwd_compute_seconds = std::max(res.fwd_compute_seconds, p.fwd_compute_seconds);
    res.bwd_compute_seconds = std::max(res.bwd_compute_seconds, p.bwd_compute_seconds);
    res.tensor_bytes = std::max(res.tensor_bytes, p.tensor_bytes);
    res.workspace_bytes = std::max(res.workspace_bytes, p.workspace_bytes);
    res.rank_bytes = std::max(res.rank_bytes, p.rank_bytes);
    res.bytes_sent = std::max(res.bytes_sent, p.bytes_sent);
  }
  if (rss_ok && rss_before > 0) {
    res.rss_before = rss_before;
    res.rss_peak_delta = std::max<int64_t>(0, PeakRss() - rss_before);
  }
  return res;
}

// Splitmix64: a cheap, well-mixed stream for the synthetic inputs.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<RunStats> RunFull(const RunSpec& spec, const FullTensors& in, FullOutputs* out) {
  const int64_t S = spec.seqlen, H = spec.heads, Hk = spec.kv_heads, D = spec.head_dim;
  const int64_t es = DTypeSize(spec.dtype);
  if (static_cast<int64_t>(in.q.size()) != S * H * D ||
      static_cast<int64_t>(in.k.size()) != S * Hk * D ||
      static_cast<int64_t>(in.v.size()) != S * Hk * D ||
      (spec.backward && static_cast<int64_t>(in.dout.size()) != S * H * D)) {
    return absl::InvalidArgumentError("RunFull: input sizes do not match the spec");
  }
  out->out.assign(S * H * D, 0.0f);
  out->lse.assign(H * S, 0.0f);
  if (spec.backward) {
    out->dq.assign(S * H * D, 0.0f);
    out->dk.assign(S * Hk * D, 0.0f);
    out->dv.assign(S * Hk * D, 0.0f);
  } else {
    out->dq.clear();
    out->dk.clear();
    out->dv.clear();
  }
  auto fill = [&](int, Shard* s) {
    for (int64_t i = 0; i < s->len; ++i) {
      const int64_t g = s->pos[i];
      Store(&in.q[g * H * D], H * D, spec.dtype, &s->q[i * H * D * es]);
      Store(&in.k[g * Hk * D], Hk * D, spec.dtype, &s->k[i * Hk * D * es]);
      Store(&in.v[g * Hk * D], Hk * D, spec.dtype, &s->v[i * Hk * D * es]);
      if (spec.backward) Store(&in.dout[g * H * D], H * D, spec.dtype, &s->dout[i * H * D * es]);
    }
  };
  // Ranks own distinct global rows, so they write the full outputs at once.
  auto drain = [&](int, const Shard& s) {
    for (int64_t i = 0; i < s.len; ++i) {
      const int64_t g = s.pos[i];
      Load(&s.out[i * H * D * es], H * D, spec.dtype, &out->out[g * H * D]);
      for (int64_t h = 0; h < H; ++h) out->lse[h * S + g] = s.lse[h * s.len + i];
      if (spec.backward) {
        Load(&s.dq[i * H * D * es], H * D, spec.dtype, &out->dq[g * H * D]);
        Load(&s.dk[i * Hk * D * es], Hk * D, spec.dtype, &out->dk[g * Hk * D]);
        Load(&s.dv[i * Hk * D * es], Hk * D, spec.dtype, &out->dv[g * Hk * D]);
      }
    }
  };
  return RunRanks(spec, fill, drain);
}

absl::StatusOr<RunStats> RunSynthetic(const RunSpec& spec, uint64_t seed) {
  auto fill = [&](int rank, Shard* s) {
    // Uniform on [-sqrt(3), sqrt(3)]: unit variance, no special values.
    uint64_t state = Mix(seed * 1000003ull + static_cast<uint64_t>(rank));
    auto fill_bytes = [&](std::vector<uint8_t>& b) {
      const int64_t n = static_cast<int64_t>(b.size()) / DTypeSize(spec.dtype);
      std::vector<float> tmp(std::min<int64_t>(n, 1 << 16));
      for (int64_t off = 0; off < n; off += static_cast<int64_t>(tmp.size())) {
        const int64_t m = std::min<int64_t>(tmp.size(), n - off);
        for (int64_t i = 0; i < m; ++i) {
          state = Mix(state);
          tmp[i] = static_cast<float>((static_cast<double>(state >> 11) * 0x1.0p-53 * 2 - 1) *
                                      1.7320508075688772);
        }
        Store(tmp.data(), m, spec.dtype, b.data() + off * DTypeSize(spec.dtype));
      }
    };
    fill_bytes(s->q);
    fill_bytes(s->k);
    fill_bytes(s->v);
    if (spec.backward) fill_bytes(s->dout);
  };
  return RunRanks(spec, fill, [](int, const Shard&) {});
}

}  // namespace ringattn::eval
