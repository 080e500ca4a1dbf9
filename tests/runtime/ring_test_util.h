// Test support for the ring: runs W ranks of RingAttention on one Problem
// (attn_test_util.h) with any layout, on the cpu backend over `local` or on
// the cuda backend over `cuda-local` (shards uploaded to the device and the
// results brought back), and gathers full-sequence results as float; and
// the comparison of those results with the float64 reference by
// flash-attn's rule. Used by ring_test (cpu) and cuda_ring_test (gpu).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "tests/attention/attn_test_util.h"

namespace ringattn::testing {

struct RingCase {
  Case c;  // c.seqlen_q == c.seqlen_k == S, positions from zero
  int world = 2;
  Sharding sharding = Sharding::kContiguous;
  std::string tag;  // appended to the name (e.g. the kind of documents)
  std::string Name() const;
};
void PrintTo(const RingCase& r, std::ostream* os);

// Packed documents for a ring over a sequence of `seqlen` tokens, ending
// exactly at seqlen: tiny (1-4 tokens, empty ones), mixed (0-150), on the
// kernels' tile edges, one document spanning every rank, and on the
// contiguous shards' edges for `world` ranks (with an empty document at
// each edge). Static storage.
enum class RingDocs { kTiny, kMixed, kTileEdges, kOne, kShardEdges };
const char* RingDocsName(RingDocs kind);
Mask WithRingDocuments(Mask m, RingDocs kind, int64_t seqlen, int world);
// A block mask of `kind` (attn_test_util.h) shaped for a ring over `seqlen`
// tokens: ceil(seqlen / size) blocks per side, `heads` of them (1: shared).
// Static storage.
Mask WithRingBlocks(Mask m, BlockKind kind, int64_t seqlen, int64_t size, int64_t heads = 1);

struct RingResult {
  std::vector<float> out, lse, dq, dk, dv;  // full, contiguous, as float (NaN: not produced)
  std::vector<int64_t> bytes_sent;
  std::vector<absl::Status> fwd_status, bwd_status;
  // Every rank's forward (and, if run, backward) succeeded; else the first
  // error, naming the rank.
  absl::Status Ok() const;
};

struct RingRunOptions {
  Backend backend = Backend::kCpu;  // kCuda: over cuda-local, device 0
  bool deterministic = false;       // RingOptions::deterministic
  bool backward = true;
  absl::Duration timeout = absl::Seconds(20);
  // Per rank: changes to the options and to that rank's head dim.
  std::function<void(int rank, RingOptions*, int64_t* head_dim)> tweak;
  // kCuda: every rank calls ForwardOnStream / BackwardOnStream on a stream
  // of its own (the caller's), whose work writes the inputs late (after a
  // delay, over poisoned device tensors) and reads the results back.
  bool caller_stream = false;
  // False: this rank does not take part.
  std::function<bool(int rank)> take_part;
};

// Runs the ring on `world` ranks (stripe 2 for striped sharding). Outputs
// start poisoned (0xff bytes), so a row the ring never writes shows as NaN.
RingResult RunRing(const Problem& pr, int world, Sharding sharding,
                   const RingRunOptions& options = {});

// One rank's part of RunRing on any communicator (nccl_ring_test: one
// process per GPU): its shard of `pr` through RingAttention, its outputs
// as stored (dtype bytes; lse fp32), poisoned where not written.
struct RankOutput {
  std::vector<uint8_t> out, dq, dk, dv;
  std::vector<float> lse;
  absl::Status fwd, bwd;
  bool fwd_done = false, bwd_done = false;  // ran and came back
  int64_t bytes_sent = 0;
};
RankOutput RunRank(const Problem& pr, comm::Communicator& comm, Sharding sharding,
                   const RingRunOptions& options = {});

// The float64 reference of a problem and the naive same-precision errors
// against it, which set the tolerances.
struct RingExpectation {
  std::vector<double> out, lse, dq, dk, dv;
  double tol_out = 0, tol_lse = 0, tol_dq = 0, tol_dk = 0, tol_dv = 0;
};
RingExpectation Expect(const Problem& pr, bool backward = true);

// gtest expectations of `r` against `e` (flash-attn's rule, per tensor).
void ExpectClose(const RingResult& r, const RingExpectation& e, bool backward = true);
// The same for one rank's output against its rows of `e`.
void ExpectRankClose(const Problem& pr, const RingExpectation& e, const Layout& layout, int rank,
                     const RankOutput& got, bool backward = true);

}  // namespace ringattn::testing
