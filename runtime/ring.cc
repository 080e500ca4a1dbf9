// The ring strategy: the forward and backward schedules (see strategy.h for
// the seam, transfers.h for how a transfer is posted and waited for).
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
// The plan (plan.h) says which steps have work and how many steps run at
// all: every rank derives the same one, so they agree on an early end.
#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "base/status.h"
#include "runtime/plan.h"
#include "runtime/strategy.h"

namespace ringattn {
namespace {

// Message kinds of the ring (MessageMeta::kind).
constexpr int kKindKV = 0;
constexpr int kKindDKV = 1;
constexpr int kKindDKVHome = 2;

class RingStrategy final : public AttentionStrategy {
 public:
  explicit RingStrategy(const StrategyContext& ctx)
      : ctx_(ctx),
        layout_(*ctx.layout),
        be_(ctx.backend),
        xfer_(ctx.transfers),
        dtype_(ctx.options->dtype),
        rank_(ctx.rank),
        world_(ctx.world),
        plan_(layout_, ctx.options->mask, rank_) {}

  absl::Status ReserveForward(const ShardDims& d) override;
  absl::Status ReserveBackward(const ShardDims& d) override;
  absl::Status Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out,
                       const TensorView& lse) override;
  absl::Status Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& out, const TensorView& lse,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override;
  int64_t WorkspaceBytes() const override {
    int64_t total = 0;
    for (const Buffer* b : {&kv_[0], &kv_[1], &acc_out_, &acc_lse_, &part_out_, &part_lse_, &dsum_,
                            &dq_acc_, &dkv_[0], &dkv_[1], &dkv_tmp_})
      total += b->bytes();
    return total;
  }

 private:
  // Elements of the packed block [2][B][S_src][Hkv][D] (K then V) of `src`.
  int64_t BlockElems(int src, const ShardDims& d) const {
    return 2 * d.B * layout_.ShardLength(src) * d.Hk * d.D;
  }
  // Points p's k and v at the packed block of `src`.
  void SetKV(AttnParams* p, const char* block, int src, const ShardDims& d) const {
    const int64_t s_src = layout_.ShardLength(src);
    p->k = block;
    p->v = block + d.B * s_src * d.Hk * d.D * DTypeSize(dtype_);
    p->k_stride = p->v_stride = TensorStrides::Contiguous(s_src, d.Hk, d.D);
    p->seqlen_k = s_src;
    p->k_pos = layout_.Shard(src);
  }
  // The header of the block of `src` sent at `step`.
  comm::MessageMeta Meta(int step, int kind, int src, const ShardDims& d, DType dtype) const {
    comm::MessageMeta m;
    m.step = step;
    m.kind = kind;
    m.dtype = static_cast<int32_t>(dtype);
    m.ndim = 5;
    const int64_t shape[5] = {2, d.B, layout_.ShardLength(src), d.Hk, d.D};
    std::copy(shape, shape + 5, m.shape);
    return m;
  }
  absl::Status PackKV(const TensorView& k, const TensorView& v, const ShardDims& d, void* dst) {
    RETURN_IF_ERROR(be_->Pack(k, dst));
    const int64_t half = d.B * d.S * d.Hk * d.D * DTypeSize(dtype_);
    return be_->Pack(v, static_cast<char*>(dst) + half);
  }

  StrategyContext ctx_;
  const Layout& layout_;
  KernelBackend* be_;
  Transfers* xfer_;
  DType dtype_;
  int rank_, world_;
  RingPlan plan_;
  // KV blocks double buffered (this step's, the next one arriving); fp32
  // partial and accumulated results; the backward's dsum, dQ accumulator,
  // the dK/dV accumulators double buffered and the step's own gradient.
  Buffer kv_[2], acc_out_, acc_lse_, part_out_, part_lse_, dsum_, dq_acc_, dkv_[2], dkv_tmp_;
};

absl::Status RingStrategy::ReserveForward(const ShardDims& d) {
  const int64_t kv_bytes = 2 * d.B * layout_.MaxShardLength() * d.Hk * d.D * DTypeSize(dtype_);
  const int64_t o_elems = d.B * d.S * d.H * d.D, l_elems = d.B * d.H * d.S;
  for (Buffer* b : {&kv_[0], &kv_[1]}) RETURN_IF_ERROR(b->Reserve(be_, kv_bytes));
  RETURN_IF_ERROR(acc_out_.Reserve(be_, o_elems * 4));
  RETURN_IF_ERROR(acc_lse_.Reserve(be_, l_elems * 4));
  RETURN_IF_ERROR(part_out_.Reserve(be_, o_elems * 4));
  return part_lse_.Reserve(be_, l_elems * 4);
}

absl::Status RingStrategy::ReserveBackward(const ShardDims& d) {
  const int64_t max_block = 2 * d.B * layout_.MaxShardLength() * d.Hk * d.D;
  const int64_t q_elems = d.B * d.S * d.H * d.D, l_elems = d.B * d.H * d.S;
  for (Buffer* b : {&kv_[0], &kv_[1]}) RETURN_IF_ERROR(b->Reserve(be_, max_block * DTypeSize(dtype_)));
  for (Buffer* b : {&dkv_[0], &dkv_[1], &dkv_tmp_}) RETURN_IF_ERROR(b->Reserve(be_, max_block * 4));
  RETURN_IF_ERROR(dsum_.Reserve(be_, l_elems * 4));
  return dq_acc_.Reserve(be_, q_elems * 4);
}

absl::Status RingStrategy::Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                                   const TensorView& v, const TensorView& out,
                                   const TensorView& lse) {
  const int64_t es = DTypeSize(dtype_);
  const int64_t o_elems = d.B * d.S * d.H * d.D, l_elems = d.B * d.H * d.S;
  RETURN_IF_ERROR(PackKV(k, v, d, kv_[0].c()));

  const int next = (rank_ + 1) % world_, prev = (rank_ - 1 + world_) % world_;
  const int steps = plan_.NumSteps();
  ctx_.stats->steps = steps;
  AttnParams p = BaseParams(ctx_, d, q);
  p.out_dtype = DType::kFloat32;
  p.out_stride = TensorStrides::Contiguous(d.S, d.H, d.D);
  bool have_result = false;
  int cur = 0;
  for (int t = 0; t < steps; ++t) {
    const int src = plan_.Source(t);
    std::unique_ptr<comm::Request> req;
    if (t + 1 < steps) {
      const int src_next = plan_.Source(t + 1);
      ASSIGN_OR_RETURN(req, xfer_->Post(t, "posting the KV transfer", kv_[cur].c(),
                                        BlockElems(src, d) * es, next,
                                        Meta(t, kKindKV, src, d, dtype_), kv_[1 - cur].c(),
                                        BlockElems(src_next, d) * es, prev,
                                        Meta(t, kKindKV, src_next, d, dtype_)));
    }
    const int64_t s_src = layout_.ShardLength(src);
    if (plan_.HasWork(t) && d.S > 0 && s_src > 0) {
      SetKV(&p, kv_[cur].c(), src, d);
      p.out = have_result ? part_out_.f() : acc_out_.f();
      p.lse = have_result ? part_lse_.f() : acc_lse_.f();
      absl::Status s = be_->BeginTimed();
      if (s.ok()) s = be_->Forward(p);
      if (s.ok() && have_result) {
        s = be_->Merge(acc_out_.f(), acc_lse_.f(), part_out_.f(), part_lse_.f(), d.B, d.S, d.H,
                       d.D);
      }
      s = EndTimed(be_, s);
      if (!s.ok()) return xfer_->Fail(s, t, "attention forward");
      have_result = true;
      ++ctx_.stats->steps_with_work;
    }
    if (req) RETURN_IF_ERROR(xfer_->Arrive(std::move(req), t, "waiting for the KV block"));
    cur = 1 - cur;
  }
  if (!have_result) {  // no visible key at all: out 0, lse -inf
    RETURN_IF_ERROR(be_->Fill(acc_out_.f(), o_elems, 0.0f));
    RETURN_IF_ERROR(be_->Fill(acc_lse_.f(), l_elems, -INFINITY));
  }
  RETURN_IF_ERROR(be_->Unpack(acc_out_.f(), out));
  return be_->Unpack(acc_lse_.f(), lse);
}

absl::Status RingStrategy::Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                                    const TensorView& v, const TensorView& out,
                                    const TensorView& lse, const TensorView& dout,
                                    const TensorView& dq, const TensorView& dk,
                                    const TensorView& dv) {
  const int64_t es = DTypeSize(dtype_);
  const int64_t q_elems = d.B * d.S * d.H * d.D;
  RETURN_IF_ERROR(PackKV(k, v, d, kv_[0].c()));
  RETURN_IF_ERROR(be_->RowDot(dout, out, dsum_.f()));
  RETURN_IF_ERROR(be_->Fill(dq_acc_.f(), q_elems, 0.0f));

  const int next = (rank_ + 1) % world_, prev = (rank_ - 1 + world_) % world_;
  const int steps = plan_.NumSteps();
  ctx_.stats->steps = steps;
  AttnParams p = BaseParams(ctx_, d, q);
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
      ASSIGN_OR_RETURN(kv_req, xfer_->Post(t, "posting the KV transfer", kv_[cur].c(), block * es,
                                           next, Meta(t, kKindKV, src, d, dtype_),
                                           kv_[1 - cur].c(), BlockElems(src_next, d) * es, prev,
                                           Meta(t, kKindKV, src_next, d, dtype_)));
    }
    // This step's gradient of block src goes to dkv_tmp_ (t > 0) or directly
    // to the accumulator (t == 0, nothing to add to).
    float* grad = t == 0 ? dkv_[acc].f() : dkv_tmp_.f();
    RETURN_IF_ERROR(be_->Fill(grad, block, 0.0f));
    if (plan_.HasWork(t) && d.S > 0 && s_src > 0) {
      SetKV(&p, kv_[cur].c(), src, d);
      p.dk_accum = grad;
      p.dv_accum = grad + block / 2;
      absl::Status s = be_->BeginTimed();
      if (s.ok()) s = EndTimed(be_, be_->Backward(p));
      if (!s.ok()) return xfer_->Fail(s, t, "attention backward");
      ++ctx_.stats->steps_with_work;
    }
    if (t > 0) {
      // The accumulator of block src arrived from r-1 into dkv_[acc].
      RETURN_IF_ERROR(xfer_->Arrive(std::move(dkv_req), t, "waiting for the dK/dV accumulator"));
      absl::Status s = be_->BeginTimed();
      if (s.ok()) s = EndTimed(be_, be_->Add(dkv_[acc].f(), dkv_tmp_.f(), block));
      if (!s.ok()) return xfer_->Fail(s, t, "adding to the dK/dV accumulator");
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
      ASSIGN_OR_RETURN(dkv_req, xfer_->Post(t, "posting the dK/dV transfer", dkv_[acc].c(),
                                            block * 4, to, Meta(t, kind, src, d, DType::kFloat32),
                                            dkv_[1 - acc].c(), BlockElems(src_in, d) * 4, from,
                                            Meta(t, kind, src_in, d, DType::kFloat32)));
      acc = 1 - acc;
    }
    if (kv_req) RETURN_IF_ERROR(xfer_->Arrive(std::move(kv_req), t, "waiting for the KV block"));
    cur = 1 - cur;
  }
  if (dkv_req) {
    RETURN_IF_ERROR(xfer_->Arrive(std::move(dkv_req), steps - 1, "waiting for the home dK/dV"));
  }
  const int64_t own = BlockElems(rank_, d);
  RETURN_IF_ERROR(be_->Unpack(dkv_[acc].f(), dk));
  RETURN_IF_ERROR(be_->Unpack(dkv_[acc].f() + own / 2, dv));
  return be_->Unpack(dq_acc_.f(), dq);
}

}  // namespace

std::unique_ptr<AttentionStrategy> MakeRingStrategy(const StrategyContext& ctx) {
  return std::make_unique<RingStrategy>(ctx);
}

}  // namespace ringattn
