// The planner: predicted time of every strategy for one call, and the
// choice `strategy = auto` makes (docs/PLANNER.md has the model and its
// measured accuracy).
//
// The model, per strategy, from quantities that decide the choice:
//   work    per-rank attention work after masking: visible (query, key)
//           pairs plus a per-row allowance for the masked part of the tiles
//           the kernels still compute, times 4*D*B*H FLOPs (forward; the
//           backward at its own calibrated rate)
//   bytes   what each rank sends, per strategy (KV blocks around the ring,
//           the gathered KV rows, the two all-to-alls of Ulysses), over the
//           link bandwidth, plus a latency per message
//   overlap the ring hides each step's transfer behind the step's compute
//           (a step costs the larger of the two); all-gather and Ulysses
//           wait for their collectives
// The rates come from PlanCosts: a short calibration on the ranks (the
// kernels on a small problem, a KV-sized message around the ring), agreed
// on by every rank (rank 0's figures), cached per process; or from the
// caller (the bench's --tflops, --link-gbps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attention/mask.h"
#include "comm/communicator.h"
#include "runtime/backend.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"

namespace ringattn {

struct PlanCosts {
  double forward_flops_per_s = 0;   // one rank's attention kernels
  double backward_flops_per_s = 0;  // (backward FLOPs = 2.5 x forward)
  double bytes_per_s = 0;           // per rank, each way
  double latency_s = 0;             // per message
  // Ranks per node and the bandwidth within one (0: one kind of link).
  int node_size = 0;
  double node_bytes_per_s = 0;
  // Whether a transfer runs beside the compute (a GPU: copy engines, NIC)
  // or takes the same cores (CPU ranks: memcpy and UCX's copies run on the
  // cores the kernels use, so the ring's overlap buys nothing there).
  bool overlap = true;

  // Costs given by the caller in its units: TFLOP/s per rank (backward: 0
  // means 0.8 x forward), GB/s each way, microseconds per message.
  static PlanCosts Given(double tflops, double bwd_tflops, double link_gbps, double latency_us);
};

struct PlanShape {
  int64_t batch = 1, heads = 1, kv_heads = 1, head_dim = 64;
  DType dtype = DType::kFloat32;
};

struct PlanEntry {
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;  // hybrid's U
  std::string name;  // "ring", "hybrid:2x4", ...
  bool feasible = true;
  std::string why_not;  // when not feasible
  double forward_s = 0, backward_s = 0;
  double compute_s = 0, comm_s = 0;  // forward parts (comm not hidden by compute)
  double bytes_per_rank = 0;          // forward, sent by the busiest rank
};

// Every strategy the world can run (ring, allgather, ulysses, hybrid:UxR
// for every U dividing W with 1 < U < W), predicted.
std::vector<PlanEntry> PredictAll(Sharding sharding, int64_t seqlen, int64_t stripe,
                                  const Mask& mask, int world, const PlanShape& shape,
                                  const PlanCosts& costs);
// The fastest feasible entry (forward + backward when `backward`).
const PlanEntry& Choose(const std::vector<PlanEntry>& entries, bool backward);

// Measures this rank's kernel rates on a small problem of head dim `D` and
// the link (a message of `bytes` around the ring, and a small one for the
// latency); every rank returns rank 0's figures. Cached per process by
// (backend, communicator, world, dtype, D).
absl::StatusOr<PlanCosts> Calibrate(comm::Communicator* comm, KernelBackend* backend,
                                    DType dtype, int64_t head_dim, int64_t bytes,
                                    absl::Duration timeout);

}  // namespace ringattn
