// The all-gather strategy (Llama 3's context parallelism): every rank
// gathers the key/value rows that some query of its own can see and attends
// once, with the caller's tensors read and written in place.
//
// What is gathered: the union of the visible-key intervals of the rank's
// queries (KeyBounds, and the sink's keys), merged into a few disjoint
// position ranges -- the whole sequence without a window or documents, a
// band around each of the rank's chunks with a sliding window. Rank a sends
// rank j only its rows inside j's ranges (an all-to-all of uneven parts; an
// all-gather when everything is visible), and j places them in position
// order, so the kernel sees one key block whose positions are the ranges.
//
// Forward: one kernel call into out and lse (one rounding, as the local
// strategy). Backward: the same gather, one kernel call whose dK/dV land in
// fp32 accumulators over the gathered rows; each part goes back to the rank
// that owns its rows (the reverse all-to-all), which adds the parts in rank
// order (deterministic) and converts once.
#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "base/status.h"
#include "runtime/strategy.h"

namespace ringattn {
namespace {

constexpr int kKindGatherKV = 3;
constexpr int kKindScatterDKV = 4;

using Ranges = std::vector<std::pair<int64_t, int64_t>>;  // [begin, end) positions

// The rows of `positions` (increasing) inside `ranges`: runs from the
// position order (src: index in `positions`) to the message order (dst:
// rows in the message, consecutive) and from the message to the ranges'
// order (index within the concatenated ranges).
struct Routes {
  std::vector<RowRun> to_message, to_ranges;
  int64_t rows = 0;
};
Routes Route(const std::vector<int64_t>& positions, const Ranges& ranges) {
  Routes out;
  size_t k = 0;
  int64_t base = 0;  // rows of ranges before ranges[k]
  auto extend = [](std::vector<RowRun>* runs, int64_t src, int64_t dst) {
    if (!runs->empty()) {
      RowRun& b = runs->back();
      if (b.src + b.length == src && b.dst + b.length == dst) {
        ++b.length;
        return;
      }
    }
    runs->push_back({src, dst, 1});
  };
  for (size_t i = 0; i < positions.size(); ++i) {
    const int64_t p = positions[i];
    while (k < ranges.size() && ranges[k].second <= p) {
      base += ranges[k].second - ranges[k].first;
      ++k;
    }
    if (k == ranges.size()) break;
    if (p < ranges[k].first) continue;
    extend(&out.to_message, static_cast<int64_t>(i), out.rows);
    extend(&out.to_ranges, out.rows, base + p - ranges[k].first);
    ++out.rows;
  }
  return out;
}

class AllGatherStrategy final : public AttentionStrategy {
 public:
  explicit AllGatherStrategy(const StrategyContext& ctx)
      : ctx_(ctx), be_(ctx.backend), xfer_(ctx.transfers), dtype_(ctx.options->dtype) {
    const Layout& layout = *ctx.layout;
    const int w = ctx.world, me = ctx.rank;
    const Ranges mine = VisibleKeyRanges(layout, ctx.options->mask, me);
    for (const auto& [lo, hi] : mine) {
      key_segs_.push_back({key_rows_, hi - lo, lo, 1, 1});
      key_rows_ += hi - lo;
    }
    const std::vector<int64_t> my_pos = layout.Positions(me);
    for (int j = 0; j < w; ++j) {
      // What I send j, and what j sends me.
      Routes out = Route(my_pos, j == me ? mine : VisibleKeyRanges(layout, ctx.options->mask, j));
      Routes in = j == me ? out : Route(layout.Positions(j), mine);
      send_runs_.push_back(std::move(out.to_message));
      send_rows_.push_back(out.rows);
      gather_runs_.push_back(InverseRuns(in.to_ranges));
      place_runs_.push_back(std::move(in.to_ranges));
      recv_rows_.push_back(in.rows);
    }
  }

  absl::Status ReserveForward(const ShardDims& d) override { return ReserveGather(d); }
  absl::Status ReserveBackward(const ShardDims& d) override {
    RETURN_IF_ERROR(ReserveGather(d));
    const int64_t kv = d.B * key_rows_ * d.Hk * d.D;
    RETURN_IF_ERROR(dkv_.Reserve(be_, 2 * kv * 4));
    RETURN_IF_ERROR(dsum_.Reserve(be_, d.B * d.H * d.S * 4));
    RETURN_IF_ERROR(dq_.Reserve(be_, d.B * d.S * d.H * d.D * 4));
    RETURN_IF_ERROR(own_.Reserve(be_, 2 * d.B * d.S * d.Hk * d.D * 4));
    int64_t out_rows = 0, in_rows = 0;
    for (int j = 0; j < ctx_.world; ++j) {
      out_rows += recv_rows_[j];
      in_rows += send_rows_[j];
    }
    RETURN_IF_ERROR(dsend_.Reserve(be_, 2 * d.B * out_rows * d.Hk * d.D * 4));
    return drecv_.Reserve(be_, 2 * d.B * in_rows * d.Hk * d.D * 4);
  }
  absl::Status Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out,
                       const TensorView& lse) override;
  absl::Status Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& out, const TensorView& lse,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override;
  int64_t WorkspaceBytes() const override {
    int64_t t = 0;
    for (const Buffer* b : {&send_, &recv_, &keys_, &dkv_, &dsum_, &dq_, &own_, &dsend_, &drecv_})
      t += b->bytes();
    return t;
  }

 private:
  absl::Status ReserveGather(const ShardDims& d) {
    const int64_t row = d.B * d.Hk * d.D * DTypeSize(dtype_);
    int64_t out_rows = 0, in_rows = 0;
    for (int j = 0; j < ctx_.world; ++j) {
      out_rows += send_rows_[j];
      in_rows += recv_rows_[j];
    }
    RETURN_IF_ERROR(send_.Reserve(be_, 2 * out_rows * row));
    RETURN_IF_ERROR(recv_.Reserve(be_, 2 * in_rows * row));
    return keys_.Reserve(be_, 2 * key_rows_ * row);
  }
  // Gathers the visible K and V rows into keys_ ([2][B][key_rows][Hk][D]).
  absl::Status Gather(const ShardDims& d, const TensorView& k, const TensorView& v);
  AttnParams Params(const ShardDims& d, const TensorView& q) const {
    AttnParams p = BaseParams(ctx_, d, q);
    const int64_t half = d.B * key_rows_ * d.Hk * d.D * DTypeSize(dtype_);
    p.k = keys_.c();
    p.v = keys_.c() + half;
    p.k_stride = p.v_stride = TensorStrides::Contiguous(key_rows_, d.Hk, d.D);
    p.seqlen_k = key_rows_;
    p.k_pos = PositionMap::OfSegments(key_segs_.data(), static_cast<int64_t>(key_segs_.size()));
    return p;
  }

  StrategyContext ctx_;
  KernelBackend* be_;
  Transfers* xfer_;
  DType dtype_;
  std::vector<PositionMap::Segment> key_segs_;  // the gathered key positions
  int64_t key_rows_ = 0;
  // Per rank j: my rows j needs (local -> message order) and their count;
  // j's rows I need (message -> gathered order) and their count.
  std::vector<std::vector<RowRun>> send_runs_, place_runs_;
  std::vector<std::vector<RowRun>> gather_runs_;  // place_runs_ reversed (the backward's)
  std::vector<int64_t> send_rows_, recv_rows_;
  Buffer send_, recv_, keys_, dkv_, dsum_, dq_, own_, dsend_, drecv_;
};

absl::Status AllGatherStrategy::Gather(const ShardDims& d, const TensorView& k,
                                       const TensorView& v) {
  const int w = ctx_.world;
  const int64_t row = d.Hk * d.D * DTypeSize(dtype_);
  std::vector<const void*> sp(w);
  std::vector<void*> rp(w);
  std::vector<int64_t> sb(w), rb(w);
  int64_t so = 0, ro = 0;
  for (int j = 0; j < w; ++j) {
    char* s = send_.c() + so;
    const int64_t half = d.B * send_rows_[j] * row;
    RETURN_IF_ERROR(CopyRuns(be_, k, send_runs_[j], send_rows_[j], s));
    RETURN_IF_ERROR(CopyRuns(be_, v, send_runs_[j], send_rows_[j], s + half));
    sp[j] = s;
    sb[j] = 2 * half;
    so += sb[j];
    rp[j] = recv_.c() + ro;
    rb[j] = 2 * d.B * recv_rows_[j] * row;
    ro += rb[j];
  }
  RETURN_IF_ERROR(xfer_->AllToAll(0, "gathering keys and values", kKindGatherKV,
                                  static_cast<int32_t>(dtype_), sp, sb, rp, rb));
  const int64_t key_half = d.B * key_rows_ * row;
  for (int a = 0; a < w; ++a) {
    const int64_t n = recv_rows_[a];
    char* m = static_cast<char*>(rp[a]);
    for (int part = 0; part < 2; ++part) {
      const TensorView src =
          RowsView(m + part * d.B * n * row, dtype_, be_->device(), d.B, n, d.Hk, d.D);
      RETURN_IF_ERROR(CopyRuns(be_, src, place_runs_[a], key_rows_, keys_.c() + part * key_half));
    }
  }
  return absl::OkStatus();
}

absl::Status AllGatherStrategy::Forward(const ShardDims& d, const TensorView& q,
                                        const TensorView& k, const TensorView& v,
                                        const TensorView& out, const TensorView& lse) {
  ctx_.stats->steps = 1;
  RETURN_IF_ERROR(Gather(d, k, v));
  if (d.S == 0) return absl::OkStatus();
  if (key_rows_ == 0) {  // nothing visible: out 0, lse -inf
    RETURN_IF_ERROR(dq_.Reserve(be_, d.B * d.S * d.H * d.D * 4));
    RETURN_IF_ERROR(be_->Fill(dq_.f(), d.B * d.S * d.H * d.D, 0.0f));
    RETURN_IF_ERROR(be_->Unpack(dq_.f(), out));
    RETURN_IF_ERROR(be_->Fill(dq_.f(), d.B * d.H * d.S, -INFINITY));
    return be_->Unpack(dq_.f(), lse);
  }
  ctx_.stats->steps_with_work = 1;
  AttnParams p = Params(d, q);
  p.out = out.data;
  p.out_dtype = dtype_;
  p.out_stride = BshdStrides(out);
  p.lse = static_cast<float*>(lse.data);  // contiguous [B, H, S] (validated)
  RETURN_IF_ERROR(be_->BeginTimed());
  absl::Status s = EndTimed(be_, be_->Forward(p));
  if (!s.ok()) return xfer_->Fail(s, 0, "attention forward");
  return absl::OkStatus();
}

absl::Status AllGatherStrategy::Backward(const ShardDims& d, const TensorView& q,
                                         const TensorView& k, const TensorView& v,
                                         const TensorView& out, const TensorView& lse,
                                         const TensorView& dout, const TensorView& dq,
                                         const TensorView& dk, const TensorView& dv) {
  ctx_.stats->steps = 1;
  const int w = ctx_.world;
  const int64_t kv = d.B * key_rows_ * d.Hk * d.D, row = d.Hk * d.D * 4;
  RETURN_IF_ERROR(Gather(d, k, v));
  RETURN_IF_ERROR(be_->Fill(dkv_.f(), 2 * kv, 0.0f));
  RETURN_IF_ERROR(be_->Fill(dq_.f(), d.B * d.S * d.H * d.D, 0.0f));
  if (d.S > 0 && key_rows_ > 0) {
    ctx_.stats->steps_with_work = 1;
    RETURN_IF_ERROR(be_->RowDot(dout, out, dsum_.f()));
    AttnParams p = Params(d, q);
    p.dout = dout.data;
    p.dout_stride = BshdStrides(dout);
    p.lse = static_cast<float*>(lse.data);
    p.dsum = dsum_.f();
    p.dq_accum = dq_.f();
    p.dk_accum = dkv_.f();
    p.dv_accum = dkv_.f() + kv;
    RETURN_IF_ERROR(be_->BeginTimed());
    absl::Status s = EndTimed(be_, be_->Backward(p));
    if (!s.ok()) return xfer_->Fail(s, 0, "attention backward");
  }
  // Reduce-scatter: the gradient of rank a's rows goes back to rank a.
  std::vector<const void*> sp(w);
  std::vector<void*> rp(w);
  std::vector<int64_t> sb(w), rb(w);
  int64_t so = 0, ro = 0;
  for (int a = 0; a < w; ++a) {
    const int64_t n = recv_rows_[a];
    char* s = dsend_.c() + so;
    for (int part = 0; part < 2; ++part) {
      const TensorView src = RowsView(dkv_.f() + part * kv, DType::kFloat32, be_->device(), d.B,
                                      key_rows_, d.Hk, d.D);
      RETURN_IF_ERROR(CopyRuns(be_, src, gather_runs_[a], n, s + part * d.B * n * row));
    }
    sp[a] = s;
    sb[a] = 2 * d.B * n * row;
    so += sb[a];
    rp[a] = drecv_.c() + ro;
    rb[a] = 2 * d.B * send_rows_[a] * row;
    ro += rb[a];
  }
  RETURN_IF_ERROR(xfer_->AllToAll(1, "returning dK/dV to their owners", kKindScatterDKV,
                                  static_cast<int32_t>(DType::kFloat32), sp, sb, rp, rb));
  // Sum the parts in rank order into [2][B][S][Hk][D] fp32.
  const int64_t own = d.B * d.S * d.Hk * d.D;
  RETURN_IF_ERROR(be_->Fill(own_.f(), 2 * own, 0.0f));
  for (int j = 0; j < w; ++j) {
    const int64_t n = send_rows_[j];
    const float* m = static_cast<const float*>(rp[j]);
    for (int part = 0; part < 2; ++part) {
      for (int64_t b = 0; b < d.B; ++b) {
        for (const RowRun& r : send_runs_[j]) {  // src: my row, dst: message row
          RETURN_IF_ERROR(be_->Add(own_.f() + part * own + (b * d.S + r.src) * d.Hk * d.D,
                                   m + part * d.B * n * d.Hk * d.D + (b * n + r.dst) * d.Hk * d.D,
                                   r.length * d.Hk * d.D));
        }
      }
    }
  }
  RETURN_IF_ERROR(be_->Unpack(own_.f(), dk));
  RETURN_IF_ERROR(be_->Unpack(own_.f() + own, dv));
  return be_->Unpack(dq_.f(), dq);
}

}  // namespace

// KeyBounds never decrease with the query position, so one pass over the
// rank's (increasing) positions merges them (strategy.h).
std::vector<std::pair<int64_t, int64_t>> VisibleKeyRanges(const Layout& layout, const Mask& mask,
                                                          int rank) {
  const int64_t S = layout.seqlen();
  Ranges main;
  int64_t sink_end = 0;
  auto add = [](Ranges* r, int64_t lo, int64_t hi) {  // [lo, hi) in increasing lo
    if (hi <= lo) return;
    if (!r->empty() && lo <= r->back().second) {
      r->back().second = std::max(r->back().second, hi);
    } else {
      r->push_back({lo, hi});
    }
  };
  for (int64_t q : layout.Positions(rank)) {
    const PosRange b = mask.KeyBounds(q);
    add(&main, std::max<int64_t>(b.lo, 0), b.hi >= S ? S : b.hi + 1);
    if (mask.HasSink()) {
      const PosRange s = mask.SinkBounds(q);
      if (!s.Empty()) sink_end = std::max(sink_end, std::min(s.hi, S - 1) + 1);
    }
  }
  if (sink_end == 0) return main;
  Ranges all;
  add(&all, 0, sink_end);
  for (const auto& [lo, hi] : main) {
    if (lo < all.back().second) {
      all.back().second = std::max(all.back().second, hi);
    } else {
      all.push_back({lo, hi});
    }
  }
  return all;
}

std::unique_ptr<AttentionStrategy> MakeAllGatherStrategy(const StrategyContext& ctx) {
  return std::make_unique<AllGatherStrategy>(ctx);
}

}  // namespace ringattn
