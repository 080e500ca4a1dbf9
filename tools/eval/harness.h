// Runs the ring for ringattn-eval through the public API only
// (runtime/ringattn.h), each rank with its own RingAttention on its shard:
//   local  (RunSpec::comm null) W ranks as threads of this process, a fresh
//          LocalWorld per run
//   one rank per process (RunSpec::comm set, --comm ucx under mpirun) this
//          process runs rank comm->Rank() of the run; every process makes
//          the same runs in the same order, and rank 0 gets the results
//          (outputs and stats gathered to it)
//
// Variants:
//   RunFull       full [S, ...] float inputs in, full float outputs out
//                 (gathered by global position): for the checks that
//                 compare against the float64 reference or look at rows
//   RunSynthetic  shard-only random inputs made on each rank, nothing
//                 gathered: for the cost check (memory is what one rank
//                 of a real ring would hold)
// Faults, the eval's self-test hooks: kBrokenMask gives the ring a mask
// whose edges are one token off (what the check expects stays correct);
// kDropRingStep wraps every rank's communicator so that the KV block a rank
// receives for one ring step arrives zeroed. Either must make the
// reachability check FAIL.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attention/dtype.h"
#include "attention/mask.h"
#include "comm/communicator.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"

namespace ringattn::eval {

enum class Fault { kNone, kBrokenMask, kDropRingStep };
const char* FaultName(Fault f);

struct RunSpec {
  int64_t seqlen = 0, heads = 1, kv_heads = 1, head_dim = 64;  // batch is 1
  DType dtype = DType::kFloat32;
  Sharding sharding = Sharding::kContiguous;
  int64_t stripe = 1;
  Mask mask;
  int world = 1;
  int threads = 1;  // per rank
  bool backward = true;
  Fault fault = Fault::kNone;
  int drop_step = 1;  // kDropRingStep: the ring step whose KV block is lost (>= 1)
  // How the ranks share each call (EffectiveStrategy: the ring where this
  // one cannot run at `world` ranks with `heads`).
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;
  // Null: local threads. Else this process's rank of a launched world of
  // `world` ranks (comm->Size() == world); not owned.
  comm::Communicator* comm = nullptr;
  // How long a rank waits for the others to arrive at a run (rank 0 may
  // still be checking the previous one).
  absl::Duration arrive_timeout = absl::Seconds(600);
};

// `s` (hybrid: U = ulysses) if it runs at `world` ranks with `heads` query
// heads -- Ulysses needs heads >= W, hybrid U | W and heads >= U -- else
// the ring; the same on every rank.
StrategySpec EffectiveStrategy(Strategy s, int ulysses, int world, int64_t heads);

struct RunStats {
  double fwd_seconds = 0, bwd_seconds = 0;                  // wall per call, max over ranks
  double fwd_compute_seconds = 0, bwd_compute_seconds = 0;  // max over ranks
  int64_t tensor_bytes = 0;     // shard tensors of one rank (max over ranks)
  int64_t workspace_bytes = 0;  // RingStats.workspace_bytes, max over fwd/bwd and ranks
  int64_t rank_bytes = 0;       // max over ranks of tensors + workspace
  int steps = 0;                // ring steps of the forward
  int64_t bytes_sent = 0;       // forward, max over ranks
  // Process resident memory: before the run, and the peak during it minus
  // that (all W ranks together: one rank per process sums the processes);
  // -1 when the peak cannot be reset here.
  int64_t rss_before = -1, rss_peak_delta = -1;
};

// Dense tensors of the whole sequence, batch 1, contiguous:
// q, dout [S, H, D]; k, v [S, Hkv, D]; values already representable in the
// run's dtype. Outputs: out, dq [S, H, D]; dk, dv [S, Hkv, D]; lse [H, S].
struct FullTensors {
  std::vector<float> q, k, v, dout;  // dout empty: forward only
};
struct FullOutputs {
  std::vector<float> out, lse, dq, dk, dv;
};

// One rank per process: every process passes the same `in` (each fills its
// own shard from it); the outputs and stats are rank 0's only (`out` is
// left empty and the stats zero on the other ranks).
absl::StatusOr<RunStats> RunFull(const RunSpec& spec, const FullTensors& in, FullOutputs* out);
absl::StatusOr<RunStats> RunSynthetic(const RunSpec& spec, uint64_t seed);

// Small messages between the processes of one eval, outside the ring runs
// (one rank per process); collective: every rank calls them in the same
// order. Broadcast replaces `text` on ranks != 0 with rank 0's; Gather
// returns every rank's `mine` by rank on rank 0 (an empty vector elsewhere).
absl::Status Broadcast(comm::Communicator& c, std::string* text, absl::Duration timeout);
absl::StatusOr<std::vector<std::string>> Gather(comm::Communicator& c, const std::string& mine,
                                                absl::Duration timeout);

// The mask kBrokenMask hands the ring: every edge moved outward by one
// token (window left L -> L + 1, right R -> R + 1, causal -> sees one future
// token); with no mask at all, causal instead.
Mask BrokenMask(const Mask& m);

// Shard-tensor bytes of one rank holding `shard_len` rows.
int64_t ShardTensorBytes(const RunSpec& spec, int64_t shard_len);

// Resident set size of this process now (VmRSS), its peak (VmHWM), and a
// reset of the peak (/proc/self/clear_refs); -1 / false when unavailable.
int64_t CurrentRss();
int64_t PeakRss();
bool ResetPeakRss();

}  // namespace ringattn::eval
