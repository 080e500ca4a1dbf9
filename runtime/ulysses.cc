// Ulysses and hybrid: sequence shards become head shards inside groups of U
// consecutive ranks (an all-to-all), the ring runs across the R = W / U
// groups on those heads, and a second all-to-all brings the results back.
// U = W is DeepSpeed-Ulysses; U = 1 would be the ring (that is ring.cc).
//
// Heads. Member u of a group gets a contiguous range of query heads and the
// KV heads they read (SplitHeads): with Hkv >= U, whole GQA groups, split
// as evenly as the KV heads allow (H need not divide by U); with Hkv < U,
// each KV head's query heads are split among the members assigned to it,
// and that KV head is sent to each of them -- replicated only as much as
// the split needs. Every member needs one query head at least (H >= U).
//
// Forward, rank (g, u):
//   1. to each member j: my rows of j's query heads and KV heads; from each
//      member a: a's rows of my heads (all-to-all over the group)
//   2. the group's rows in position order (the grouped layout, Layout::
//      Grouped): q_g [B, S_g, Hq_u, D], k_g and v_g [B, S_g, Hkv_u, D]
//   3. the ring over the groups (ring.cc on the sub-communicator of the
//      ranks with the same u): fp32 out_g, lse_g
//   4. back to each member a: out and lse of a's rows for my heads, fp32;
//      unpacked into the caller's out and lse (one rounding)
// Backward: the same with out, dout and lse sent along (the API is
// stateless between forward and backward, so q, k, v go again); the ring's
// fp32 dq, dk, dv come back, and where KV heads were replicated their
// gradients are added in member order before the single conversion.
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "runtime/strategy.h"

namespace ringattn {
namespace {

constexpr int kKindHeadsIn = 5;
constexpr int kKindHeadsOut = 6;
constexpr int64_t kAlign = 256;  // of each part in the group buffer
constexpr int kMaxParts = 6;     // the backward's: lse, q, k, v, out, dout

// Runs from a member's rows (its local order) to the group's position order.
std::vector<RowRun> MemberRuns(const std::vector<int64_t>& member, const PositionMap& group) {
  std::vector<RowRun> runs;
  // Group index of a position: walk the group's segments alongside.
  const PositionMap::Segment* seg = group.Segments();
  int64_t s = 0;
  for (size_t i = 0; i < member.size(); ++i) {
    const int64_t p = member[i];
    while (seg[s].global_begin + seg[s].length <= p) ++s;  // contiguous segments
    const int64_t dst = seg[s].local_begin + (p - seg[s].global_begin);
    if (!runs.empty() && runs.back().src + runs.back().length == static_cast<int64_t>(i) &&
        runs.back().dst + runs.back().length == dst) {
      ++runs.back().length;
    } else {
      runs.push_back({static_cast<int64_t>(i), dst, 1});
    }
  }
  return runs;
}

// A [B, S, H, D] view of heads [h0, h0 + n) of `t`.
TensorView Heads(const TensorView& t, int64_t h0, int64_t n) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + h0 * t.strides[2] * DTypeSize(t.dtype);
  v.shape[2] = n;
  return v;
}

// The [B, S, n] token-major view of heads [h0, h0 + n) of lse [B, H, S],
// as a 4-d [B, S, n, 1] view (so Pack and CopyRuns move whole tokens).
TensorView LseTokens(const TensorView& lse, int64_t h0, int64_t n) {
  TensorView v;
  v.data = static_cast<float*>(lse.data) + h0 * lse.strides[1];
  v.dtype = DType::kFloat32;
  v.device = lse.device;
  v.ndim = 4;
  const int64_t shape[4] = {lse.shape[0], lse.shape[2], n, 1};
  const int64_t strides[4] = {lse.strides[0], lse.strides[2], lse.strides[1], 1};
  std::copy(shape, shape + 4, v.shape);
  std::copy(strides, strides + 4, v.strides);
  return v;
}

// The 3-d view [B, S, n] of lse [B, H, S]'s heads [h0, h0 + n) (Unpack's
// target for token-major fp32).
TensorView LseTokens3(const TensorView& lse, int64_t h0, int64_t n) {
  TensorView v = LseTokens(lse, h0, n);
  v.ndim = 3;
  v.shape[3] = v.strides[3] = 0;
  return v;
}

class UlyssesStrategy final : public AttentionStrategy {
 public:
  UlyssesStrategy(const StrategyContext& ctx, int ulysses)
      : ctx_(ctx),
        be_(ctx.backend),
        dtype_(ctx.options->dtype),
        U_(ulysses),
        R_(ctx.world / ulysses),
        g_(ctx.rank / ulysses),
        u_(ctx.rank % ulysses),
        group_layout_(Layout::Grouped(*ctx.layout, ulysses)) {
    std::vector<int> by_group(ctx.world), by_member(ctx.world);
    for (int r = 0; r < ctx.world; ++r) {
      by_group[r] = r / U_;
      by_member[r] = r % U_;
    }
    init_ = InitComms(by_group, by_member);
    const PositionMap group = group_layout_.Shard(g_);
    for (int a = 0; a < U_; ++a) {
      const int rank = g_ * U_ + a;
      runs_.push_back(MemberRuns(ctx.layout->Positions(rank), group));
      back_runs_.push_back(InverseRuns(runs_.back()));
      rows_.push_back(ctx.layout->ShardLength(rank));
    }
    S_g_ = group_layout_.ShardLength(g_);
  }

  absl::Status ReserveForward(const ShardDims& d) override { return Prepare(d, false); }
  absl::Status ReserveBackward(const ShardDims& d) override { return Prepare(d, true); }
  absl::Status Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out,
                       const TensorView& lse) override;
  absl::Status Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& out, const TensorView& lse,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override;
  absl::Status Drain() override {
    if (uxfer_ == nullptr) return absl::OkStatus();
    absl::Status a = uxfer_->Drain(), b = rxfer_->Drain();
    return a.ok() ? b : a;
  }
  void ForgetIfAborted() override {
    if (uxfer_ == nullptr) return;
    uxfer_->ForgetIfAborted();
    rxfer_->ForgetIfAborted();
  }
  int64_t WorkspaceBytes() const override {
    int64_t t = inner_ ? inner_->WorkspaceBytes() : 0;
    for (const Buffer* b : {&send_, &recv_, &group_, &result_}) t += b->bytes();
    return t;
  }

 private:
  absl::Status InitComms(const std::vector<int>& by_group, const std::vector<int>& by_member) {
    ASSIGN_OR_RETURN(ucomm_, ctx_.comm->Split(by_group));
    ASSIGN_OR_RETURN(rcomm_, ctx_.comm->Split(by_member));
    uxfer_ = std::make_unique<Transfers>(ucomm_.get(), be_, ctx_.timeout, ctx_.stats);
    rxfer_ = std::make_unique<Transfers>(rcomm_.get(), be_, ctx_.timeout, ctx_.stats);
    return absl::OkStatus();
  }
  // The head split and the inner ring for the call's head counts; the
  // buffers for its sizes (and the inner ring's, for the direction).
  absl::Status Prepare(const ShardDims& d, bool backward);
  // Sends each member its heads' rows of the given tensors (each part with
  // query or KV heads), then places what arrives into group_ in position
  // order, part after part, each [B][S_g][heads][dim] and 256-byte
  // aligned. Returns the parts' offsets in group_.
  struct Part {
    TensorView view;
    bool kv;  // KV heads (else query heads)
  };
  absl::StatusOr<std::vector<int64_t>> Scatter(int step, const std::vector<Part>& parts,
                                               const ShardDims& d);
  // The reverse: fp32 parts in group order, [B, S_g, heads, dim] (query
  // or KV heads), to each member a as a's rows; returns, per member j,
  // where j's parts for my rows arrived ([B, S, j's heads, dim] fp32).
  struct OutPart {
    float* data;
    bool kv;
    int64_t dim;
  };
  absl::StatusOr<std::vector<std::vector<float*>>> Return(int step,
                                                         const std::vector<OutPart>& parts,
                                                         const ShardDims& d);
  StrategyContext ctx_;
  KernelBackend* be_;
  DType dtype_;
  int U_, R_, g_, u_;
  Layout group_layout_;
  absl::Status init_;
  std::unique_ptr<comm::Communicator> ucomm_, rcomm_;
  std::unique_ptr<Transfers> uxfer_, rxfer_;
  std::vector<std::vector<RowRun>> runs_;       // member a's rows -> group order
  std::vector<std::vector<RowRun>> back_runs_;  // group order -> member a's rows
  std::vector<int64_t> rows_;              // member a's row count
  int64_t S_g_ = 0;
  // For the heads of the last call:
  int64_t H_ = -1, Hk_ = -1;
  std::vector<HeadRange> heads_;
  RingOptions inner_opt_;
  StrategyContext inner_ctx_;
  std::unique_ptr<AttentionStrategy> inner_;
  Buffer send_, recv_, group_, result_;
  int64_t send_stride_ = 0, recv_stride_ = 0;  // per member, in send_ / recv_
};

absl::Status UlyssesStrategy::Prepare(const ShardDims& d, bool backward) {
  RETURN_IF_ERROR(init_);
  if (d.H < U_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q heads: the ", StrategySpecName(ctx_.options->strategy, U_, ctx_.world),
        " strategy gives each of the ", U_, " ranks of a Ulysses group at least one query head: "
        "expected >= ", U_, ", got ", d.H));
  }
  if (d.H != H_ || d.Hk != Hk_) {
    H_ = d.H;
    Hk_ = d.Hk;
    heads_ = SplitHeads(d.H, d.Hk, U_);
    const HeadRange& me = heads_[u_];
    inner_opt_ = *ctx_.options;
    inner_opt_.strategy = Strategy::kRing;
    inner_opt_.ulysses = 0;
    inner_opt_.mask = ctx_.options->mask.ForHeads(me.q0, me.nq);
    inner_ctx_ = ctx_;
    inner_ctx_.options = &inner_opt_;
    inner_ctx_.layout = &group_layout_;
    inner_ctx_.rank = g_;
    inner_ctx_.world = R_;
    inner_ctx_.transfers = rxfer_.get();
    inner_ctx_.comm = rcomm_.get();
    inner_ = MakeRingStrategy(inner_ctx_);
  }
  const HeadRange& me = heads_[u_];
  const ShardDims gd{d.B, S_g_, me.nq, me.nkv, d.D};
  // The largest exchange is the backward's: q, out, dout (dtype) and lse
  // (fp32) for query heads, k and v for KV heads; results come back fp32.
  const int64_t es = DTypeSize(dtype_);
  int64_t send = 0, recv = 0;
  for (int a = 0; a < U_; ++a) {
    const HeadRange& h = heads_[a];
    send = std::max(send, d.B * d.S * ((3 * h.nq + 2 * h.nkv) * d.D * es + h.nq * 4));
    recv = std::max(recv, d.B * rows_[a] * ((3 * me.nq + 2 * me.nkv) * d.D * es + me.nq * 4));
    send = std::max(send, d.B * rows_[a] * (me.nq + 2 * me.nkv) * d.D * 4);  // results out
    recv = std::max(recv, d.B * d.S * (h.nq + 2 * h.nkv) * d.D * 4);          // results in
  }
  send_stride_ = (send + 63) / 64 * 64;
  recv_stride_ = (recv + 63) / 64 * 64;
  RETURN_IF_ERROR(send_.Reserve(be_, U_ * send_stride_));
  RETURN_IF_ERROR(recv_.Reserve(be_, U_ * recv_stride_));
  RETURN_IF_ERROR(group_.Reserve(
      be_, d.B * S_g_ * ((3 * me.nq + 2 * me.nkv) * d.D * es + me.nq * 4) + kMaxParts * kAlign));
  RETURN_IF_ERROR(result_.Reserve(be_, d.B * S_g_ * (me.nq + 2 * me.nkv) * d.D * 4 +
                                           d.B * S_g_ * me.nq * 4 * 2));
  return backward ? inner_->ReserveBackward(gd) : inner_->ReserveForward(gd);
}

absl::StatusOr<std::vector<int64_t>> UlyssesStrategy::Scatter(int step,
                                                              const std::vector<Part>& parts,
                                                              const ShardDims& d) {
  const HeadRange& me = heads_[u_];
  auto heads_of = [](const HeadRange& h, bool kv) { return kv ? h.nkv : h.nq; };
  auto part_row = [&](const Part& p, const HeadRange& h) {
    return heads_of(h, p.kv) * p.view.shape[3] * DTypeSize(p.view.dtype);
  };
  std::vector<const void*> sp(U_);
  std::vector<void*> rp(U_);
  std::vector<int64_t> sb(U_), rb(U_);
  for (int j = 0; j < U_; ++j) {
    const HeadRange& h = heads_[j];
    char* s = send_.c() + j * send_stride_;
    int64_t off = 0;
    for (const Part& p : parts) {
      const int64_t h0 = p.kv ? h.kv0 : h.q0;
      RETURN_IF_ERROR(be_->Pack(Heads(p.view, h0, heads_of(h, p.kv)), s + off));
      off += d.B * d.S * part_row(p, h);
    }
    sp[j] = s;
    sb[j] = off;
    int64_t in = 0;
    for (const Part& p : parts) in += d.B * rows_[j] * part_row(p, me);
    rp[j] = recv_.c() + j * recv_stride_;
    rb[j] = in;
  }
  absl::Status s = uxfer_->AllToAll(step, "all-to-all to head shards", kKindHeadsIn,
                                    static_cast<int32_t>(dtype_), sp, sb, rp, rb);
  if (!s.ok()) return s;
  // Place each member's rows in position order, part by part.
  std::vector<int64_t> offsets;
  int64_t goff = 0;
  std::vector<int64_t> moff(U_, 0);
  for (const Part& p : parts) {
    offsets.push_back(goff);
    const int64_t n = heads_of(me, p.kv);
    for (int a = 0; a < U_; ++a) {
      const TensorView src = RowsView(static_cast<char*>(rp[a]) + moff[a], p.view.dtype,
                                      be_->device(), d.B, rows_[a], n, p.view.shape[3]);
      RETURN_IF_ERROR(CopyRuns(be_, src, runs_[a], S_g_, group_.c() + goff));
      moff[a] += d.B * rows_[a] * part_row(p, me);
    }
    // Each part starts 256-byte aligned (the CUDA kernels read q and dout
    // rows with 16-byte loads).
    goff = (goff + d.B * S_g_ * part_row(p, me) + kAlign - 1) / kAlign * kAlign;
  }
  return offsets;
}

absl::StatusOr<std::vector<std::vector<float*>>> UlyssesStrategy::Return(
    int step, const std::vector<OutPart>& parts, const ShardDims& d) {
  const HeadRange& me = heads_[u_];
  std::vector<const void*> sp(U_);
  std::vector<void*> rp(U_);
  std::vector<int64_t> sb(U_), rb(U_);
  std::vector<std::vector<float*>> arrived(U_);
  for (int a = 0; a < U_; ++a) {
    char* s = send_.c() + a * send_stride_;
    int64_t off = 0;
    for (const OutPart& p : parts) {
      const int64_t n = p.kv ? me.nkv : me.nq;
      const TensorView src = RowsView(p.data, DType::kFloat32, be_->device(), d.B, S_g_, n, p.dim);
      RETURN_IF_ERROR(CopyRuns(be_, src, back_runs_[a], rows_[a], s + off));
      off += d.B * rows_[a] * n * p.dim * 4;
    }
    sp[a] = s;
    sb[a] = off;
    const HeadRange& h = heads_[a];
    char* r = recv_.c() + a * recv_stride_;
    int64_t in = 0;
    for (const OutPart& p : parts) {
      arrived[a].push_back(reinterpret_cast<float*>(r + in));
      in += d.B * d.S * (p.kv ? h.nkv : h.nq) * p.dim * 4;
    }
    rp[a] = r;
    rb[a] = in;
  }
  RETURN_IF_ERROR(uxfer_->AllToAll(step, "all-to-all back to sequence shards", kKindHeadsOut,
                                   static_cast<int32_t>(DType::kFloat32), sp, sb, rp, rb));
  return arrived;
}

absl::Status UlyssesStrategy::Forward(const ShardDims& d, const TensorView& q,
                                      const TensorView& k, const TensorView& v,
                                      const TensorView& out, const TensorView& lse) {
  const HeadRange& me = heads_[u_];
  ASSIGN_OR_RETURN(const std::vector<int64_t> off,
                   Scatter(0, {{q, false}, {k, true}, {v, true}}, d));
  const Device dev = be_->device();
  const TensorView qg = RowsView(group_.c() + off[0], dtype_, dev, d.B, S_g_, me.nq, d.D);
  const TensorView kg = RowsView(group_.c() + off[1], dtype_, dev, d.B, S_g_, me.nkv, d.D);
  const TensorView vg = RowsView(group_.c() + off[2], dtype_, dev, d.B, S_g_, me.nkv, d.D);
  float* out_g = result_.f();
  float* lse_g = out_g + d.B * S_g_ * me.nq * d.D;  // token-major [B, S_g, nq]
  const TensorView og = RowsView(out_g, DType::kFloat32, dev, d.B, S_g_, me.nq, d.D);
  // The ring writes lse [B, nq, S_g] through strides into token-major memory.
  TensorView lg = TensorView::Contiguous(lse_g, DType::kFloat32, {d.B, me.nq, S_g_}, dev);
  lg.strides[1] = 1;
  lg.strides[2] = me.nq;
  RETURN_IF_ERROR(inner_->Forward({d.B, S_g_, me.nq, me.nkv, d.D}, qg, kg, vg, og, lg));
  ASSIGN_OR_RETURN(const auto arrived,
                   Return(1, {{out_g, false, d.D}, {lse_g, false, 1}}, d));
  for (int j = 0; j < U_; ++j) {
    const HeadRange& h = heads_[j];
    RETURN_IF_ERROR(be_->Unpack(arrived[j][0], Heads(out, h.q0, h.nq)));
    RETURN_IF_ERROR(be_->Unpack(arrived[j][1], LseTokens3(lse, h.q0, h.nq)));
  }
  return absl::OkStatus();
}

absl::Status UlyssesStrategy::Backward(const ShardDims& d, const TensorView& q,
                                       const TensorView& k, const TensorView& v,
                                       const TensorView& out, const TensorView& lse,
                                       const TensorView& dout, const TensorView& dq,
                                       const TensorView& dk, const TensorView& dv) {
  const HeadRange& me = heads_[u_];
  // lse first: the fp32 part keeps its 4-byte alignment.
  ASSIGN_OR_RETURN(const std::vector<int64_t> off,
                   Scatter(0,
                           {{LseTokens(lse, 0, d.H), false},
                            {q, false},
                            {k, true},
                            {v, true},
                            {out, false},
                            {dout, false}},
                           d));
  const Device dev = be_->device();
  auto group = [&](int i, int64_t heads) {
    return RowsView(group_.c() + off[i], dtype_, dev, d.B, S_g_, heads, d.D);
  };
  const int64_t nq_elems = d.B * S_g_ * me.nq * d.D, nkv_elems = d.B * S_g_ * me.nkv * d.D;
  float* dq_g = result_.f();
  float* dk_g = dq_g + nq_elems;
  float* dv_g = dk_g + nkv_elems;
  float* lse_hs = dv_g + nkv_elems;  // [B, nq, S_g]
  // Token-major lse -> [B, nq, S_g] (the kernels read lse with seq stride 1).
  TensorView to_hs = TensorView::Contiguous(lse_hs, DType::kFloat32, {d.B, S_g_, me.nq}, dev);
  to_hs.strides[1] = 1;
  to_hs.strides[2] = S_g_;
  RETURN_IF_ERROR(be_->Unpack(reinterpret_cast<const float*>(group_.c() + off[0]), to_hs));
  const TensorView lg = TensorView::Contiguous(lse_hs, DType::kFloat32, {d.B, me.nq, S_g_}, dev);
  RETURN_IF_ERROR(inner_->Backward(
      {d.B, S_g_, me.nq, me.nkv, d.D}, group(1, me.nq), group(2, me.nkv), group(3, me.nkv),
      group(4, me.nq), lg, group(5, me.nq),
      RowsView(dq_g, DType::kFloat32, dev, d.B, S_g_, me.nq, d.D),
      RowsView(dk_g, DType::kFloat32, dev, d.B, S_g_, me.nkv, d.D),
      RowsView(dv_g, DType::kFloat32, dev, d.B, S_g_, me.nkv, d.D)));
  ASSIGN_OR_RETURN(const auto arrived,
                   Return(1, {{dq_g, false, d.D}, {dk_g, true, d.D}, {dv_g, true, d.D}}, d));
  for (int j = 0; j < U_; ++j) {
    const HeadRange& h = heads_[j];
    RETURN_IF_ERROR(be_->Unpack(arrived[j][0], Heads(dq, h.q0, h.nq)));
  }
  // Members that share a KV head (Hkv < U) each hold part of its gradient:
  // added in member order, then converted once.
  for (int j = 0; j < U_;) {
    const HeadRange& h = heads_[j];
    int e = j + 1;
    while (e < U_ && heads_[e].kv0 == h.kv0) ++e;
    const int64_t n = d.B * d.S * h.nkv * d.D;
    for (int x = j + 1; x < e; ++x) {
      RETURN_IF_ERROR(be_->Add(arrived[j][1], arrived[x][1], n));
      RETURN_IF_ERROR(be_->Add(arrived[j][2], arrived[x][2], n));
    }
    RETURN_IF_ERROR(be_->Unpack(arrived[j][1], Heads(dk, h.kv0, h.nkv)));
    RETURN_IF_ERROR(be_->Unpack(arrived[j][2], Heads(dv, h.kv0, h.nkv)));
    j = e;
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<AttentionStrategy> MakeUlyssesStrategy(const StrategyContext& ctx, int ulysses) {
  return std::make_unique<UlyssesStrategy>(ctx, ulysses);
}

}  // namespace ringattn
