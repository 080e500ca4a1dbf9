// The local strategy: attention on one device with no communication (a
// world of one rank) -- what the Python package's ringattn.attention runs,
// on the host or a GPU.
// Nothing rotates, so the kernels read q, k and v where they are and write
// out, lse and, when they are fp32 and contiguous, the gradients in place:
// no packing, no fp32 accumulator, no copy back (bf16 gradients go through
// an fp32 scratch, which the kernels need to add into). The results are
// bitwise those of the ring with W = 1, which packs and copies.
#include <memory>

#include "base/status.h"
#include "runtime/strategy.h"

namespace ringattn {
namespace {

class LocalStrategy final : public AttentionStrategy {
 public:
  explicit LocalStrategy(const StrategyContext& ctx)
      : ctx_(ctx), be_(ctx.backend), dtype_(ctx.options->dtype) {}

  // The forward needs nothing; the backward its dsum and, for 16-bit
  // gradients, the fp32 scratch (fp32 gradients that are not contiguous,
  // a host-only case, get theirs in Backward).
  absl::Status ReserveForward(const ShardDims&) override { return absl::OkStatus(); }
  absl::Status ReserveBackward(const ShardDims& d) override {
    RETURN_IF_ERROR(dsum_.Reserve(be_, d.B * d.H * d.S * 4));
    if (dtype_ == DType::kFloat32) return absl::OkStatus();
    return ReserveScratch(d);
  }
  absl::Status Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out,
                       const TensorView& lse) override;
  absl::Status Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& out, const TensorView& lse,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) override;
  int64_t WorkspaceBytes() const override {
    return dsum_.bytes() + dq_acc_.bytes() + dkv_acc_.bytes();
  }

 private:
  // The params shared by forward and backward: q, k and v in place.
  AttnParams Params(const ShardDims& d, const TensorView& q, const TensorView& k,
                    const TensorView& v) const {
    AttnParams p = BaseParams(ctx_, d, q);
    p.k = k.data;
    p.v = v.data;
    p.k_stride = BshdStrides(k);
    p.v_stride = BshdStrides(v);
    p.seqlen_k = d.S;
    p.k_pos = p.q_pos;
    return p;
  }
  absl::Status ReserveScratch(const ShardDims& d) {
    RETURN_IF_ERROR(dq_acc_.Reserve(be_, d.B * d.S * d.H * d.D * 4));
    return dkv_acc_.Reserve(be_, 2 * d.B * d.S * d.Hk * d.D * 4);
  }
  // k and v are read in place: what the kernels need of them (the ring
  // packs them into buffers that always satisfy it).
  absl::Status CheckKV(const TensorView& k, const TensorView& v) const {
    RETURN_IF_ERROR(be_->CheckKernelInput(k, "k"));
    return be_->CheckKernelInput(v, "v");
  }

  StrategyContext ctx_;
  KernelBackend* be_;
  DType dtype_;
  Buffer dsum_, dq_acc_, dkv_acc_;  // the backward's dsum and fp32 scratch
};

absl::Status LocalStrategy::Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                                    const TensorView& v, const TensorView& out,
                                    const TensorView& lse) {
  ctx_.stats->steps = 1;
  if (d.S == 0) return absl::OkStatus();
  ctx_.stats->steps_with_work = 1;
  RETURN_IF_ERROR(CheckKV(k, v));
  AttnParams p = Params(d, q, k, v);
  p.out = out.data;
  p.out_dtype = dtype_;
  p.out_stride = BshdStrides(out);
  p.lse = static_cast<float*>(lse.data);  // contiguous [B, H, S] (validated)
  RETURN_IF_ERROR(be_->BeginTimed());
  return EndTimed(be_, be_->Forward(p));
}

absl::Status LocalStrategy::Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                                     const TensorView& v, const TensorView& out,
                                     const TensorView& lse, const TensorView& dout,
                                     const TensorView& dq, const TensorView& dk,
                                     const TensorView& dv) {
  ctx_.stats->steps = 1;
  if (d.S == 0) return absl::OkStatus();
  ctx_.stats->steps_with_work = 1;
  const int64_t q_elems = d.B * d.S * d.H * d.D, kv_elems = d.B * d.S * d.Hk * d.D;
  // The kernels add into fp32 contiguous accumulators: the caller's own
  // gradients when they are that, else a scratch unpacked at the end.
  const bool direct = dtype_ == DType::kFloat32 && dq.IsContiguous() && dk.IsContiguous() &&
                      dv.IsContiguous();
  RETURN_IF_ERROR(CheckKV(k, v));
  if (!direct) RETURN_IF_ERROR(ReserveScratch(d));
  float* dq_acc = direct ? static_cast<float*>(dq.data) : dq_acc_.f();
  float* dk_acc = direct ? static_cast<float*>(dk.data) : dkv_acc_.f();
  float* dv_acc = direct ? static_cast<float*>(dv.data) : dkv_acc_.f() + kv_elems;
  RETURN_IF_ERROR(be_->RowDot(dout, out, dsum_.f()));
  for (auto [acc, n] : {std::pair{dq_acc, q_elems}, {dk_acc, kv_elems}, {dv_acc, kv_elems}}) {
    RETURN_IF_ERROR(be_->Fill(acc, n, 0.0f));
  }
  AttnParams p = Params(d, q, k, v);
  p.dout = dout.data;
  p.dout_stride = BshdStrides(dout);
  p.lse = static_cast<float*>(lse.data);
  p.dsum = dsum_.f();  // contiguous [B, H, S]
  p.dq_accum = dq_acc;
  p.dk_accum = dk_acc;
  p.dv_accum = dv_acc;
  RETURN_IF_ERROR(be_->BeginTimed());
  RETURN_IF_ERROR(EndTimed(be_, be_->Backward(p)));
  if (direct) return absl::OkStatus();
  RETURN_IF_ERROR(be_->Unpack(dk_acc, dk));
  RETURN_IF_ERROR(be_->Unpack(dv_acc, dv));
  return be_->Unpack(dq_acc, dq);
}

}  // namespace

std::unique_ptr<AttentionStrategy> MakeLocalStrategy(const StrategyContext& ctx) {
  return std::make_unique<LocalStrategy>(ctx);
}

}  // namespace ringattn
