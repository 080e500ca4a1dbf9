// The strategy seam: how the ranks of a world share one attention call.
// The public class (ringattn.h) validates the arguments, orders the call
// after the caller's stream and reports the stats; a strategy runs the call
// itself over the rank's kernel backend and transfers. One file per
// strategy, chosen by RingOptions::strategy in MakeStrategy:
//   ring.cc   the ring: KV blocks rotate past every rank, double buffered
//             and overlapped with the compute; the fp32 dK/dV accumulators
//             follow them in the backward
//   local.cc  one device, no communication: the kernels on the caller's
//             tensors in place
//   allgather.cc  gather the visible key/value rows, attend once; the
//             backward reduce-scatters dK/dV in fp32
//   ulysses.cc    Ulysses and hybrid: all-to-all to head shards within
//             groups of U ranks, the ring (ring.cc, on sub-communicators)
//             across the W / U groups, all-to-all back
// A new strategy is a new file here, a new Strategy value, and a line in
// MakeStrategy; nothing else changes.
//
// The call protocol (per Forward or Backward):
//   1. Reserve*  grows the workspace for the call's sizes; it runs before
//                the rank's stream waits for the caller's, because growing
//                memory may wait for the rank's stream;
//   2. Forward / Backward  enqueues everything on the backend (on a GPU,
//                nothing here waits for kernels), writes the results into
//                the caller's tensors, and sets stats->steps and
//                steps_with_work; an error goes through transfers->Fail
//                where peers must learn of it.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/params.h"
#include "runtime/backend.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "runtime/tensor.h"
#include "runtime/transfers.h"
#include "runtime/validate.h"

namespace ringattn {

// What a strategy works with; every pointer outlives the strategy.
struct StrategyContext {
  const RingOptions* options = nullptr;  // mask, dtype, scale, softcap
  const Layout* layout = nullptr;
  int rank = 0;
  int world = 1;
  KernelBackend* backend = nullptr;
  Transfers* transfers = nullptr;
  RingStats* stats = nullptr;
  comm::Communicator* comm = nullptr;  // the world's (strategies that split it)
  absl::Duration timeout;              // resolved (transfers on sub-communicators)
};

class AttentionStrategy {
 public:
  virtual ~AttentionStrategy() = default;
  virtual absl::Status ReserveForward(const ShardDims& d) = 0;
  virtual absl::Status ReserveBackward(const ShardDims& d) = 0;
  // q, k, v, out [B, S_r, ...] as validated; lse [B, H, S_r] fp32.
  virtual absl::Status Forward(const ShardDims& d, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out,
                               const TensorView& lse) = 0;
  // lse is the forward's (global) lse; dq, dk, dv are overwritten.
  virtual absl::Status Backward(const ShardDims& d, const TensorView& q, const TensorView& k,
                                const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout,
                                const TensorView& dq, const TensorView& dk,
                                const TensorView& dv) = 0;
  // Bytes of workspace held now (RingStats::workspace_bytes).
  virtual int64_t WorkspaceBytes() const = 0;
  // A strategy with Transfers of its own (on sub-communicators) settles
  // them here, as the engine settles its own (Transfers::Drain, and
  // forgetting them after an abort).
  virtual absl::Status Drain() { return absl::OkStatus(); }
  virtual void ForgetIfAborted() {}
};

// The strategy RingOptions::strategy names.
std::unique_ptr<AttentionStrategy> MakeStrategy(const StrategyContext& ctx);
std::unique_ptr<AttentionStrategy> MakeRingStrategy(const StrategyContext& ctx);
std::unique_ptr<AttentionStrategy> MakeLocalStrategy(const StrategyContext& ctx);
std::unique_ptr<AttentionStrategy> MakeAllGatherStrategy(const StrategyContext& ctx);
// Ulysses over groups of `ulysses` consecutive ranks and the ring across the
// groups (ulysses = world: pure Ulysses).
std::unique_ptr<AttentionStrategy> MakeUlyssesStrategy(const StrategyContext& ctx, int ulysses);

// The key positions some query of `rank` can see (KeyBounds and the sink's
// keys, before block masks), as disjoint increasing [begin, end) ranges:
// what the all-gather strategy gathers for the rank.
std::vector<std::pair<int64_t, int64_t>> VisibleKeyRanges(const Layout& layout, const Mask& mask,
                                                          int rank);

// A run of rows copied between two row orders: `length` rows from row
// `src` of one to row `dst` of the other.
struct RowRun {
  int64_t src = 0, dst = 0, length = 0;
};
// The same runs in the other direction (dst -> src).
std::vector<RowRun> InverseRuns(const std::vector<RowRun>& runs);
// Copies the runs of rows of a [B, S_src, H, D] view into a contiguous
// [B, S_dst, H, D] buffer of the view's dtype (one Pack per batch and run).
absl::Status CopyRuns(KernelBackend* be, const TensorView& src, const std::vector<RowRun>& runs,
                      int64_t seqlen_dst, void* dst);
// Ulysses' head split of member u of a group of U (ulysses.cc): a
// contiguous range of query heads and the KV heads they read. With
// Hkv >= U whole GQA groups, the KV heads split near-evenly; with Hkv < U
// each KV head's query heads split among the members assigned to it,
// which all receive that KV head. Needs H >= U for every member to get a
// query head.
struct HeadRange {
  int64_t q0 = 0, nq = 0, kv0 = 0, nkv = 0;
};
std::vector<HeadRange> SplitHeads(int64_t H, int64_t Hk, int U);

// A contiguous [B, S, H, D] view of `data`.
TensorView RowsView(void* data, DType dtype, Device device, int64_t B, int64_t S, int64_t H,
                    int64_t D);

// The params every block-pair kernel call of this rank shares: q and its
// strides, sizes, scale (default 1/sqrt(D)), softcap, mask, the global
// positions of the rank's queries, contiguous lse strides.
AttnParams BaseParams(const StrategyContext& ctx, const ShardDims& d, const TensorView& q);
// The status of a timed stretch of kernels (KernelBackend::BeginTimed
// before it): the first error of `s` and of ending the interval.
absl::Status EndTimed(KernelBackend* be, const absl::Status& s);

}  // namespace ringattn
