// The reachability ("needle") check of ringattn-eval: can every query reach
// every key the mask allows, across every shard boundary, and none that it
// forbids?
//
// Construction (one forward pass holds up to D x Hkv needles): needle g has
// its own direction e_d in kv head hk. Its key is a * e_d and its value
// c * e_{d + D/2 mod D}; each of its probes is a query row whose query (in
// every head of hk's group) is a * e_d, with a^2 * scale = 32, so a probe's
// score with its own needle is 32 while every other key scores about
// N(0, 1) (background q, k ~ N(0, 0.25), v ~ N(0, 1/16)) and other needles
// score exactly 0. Where the mask lets the probe see its needle, the output
// is c * e_{d'} up to a weight of about S * e^-31 on everything else; where
// it does not, the output holds none of that value. Scores per probe:
//   recovered  (out . e_{d'}) / c, the fraction of the needle's value
//   cosine     cos(out, e_{d'})
// Expected visible: cosine >= 0.9 and recovered >= 0.9 (in every head of
// the group). Expected masked: recovered <= 0.5.
//
// Needles: one per depth (0..100% of the sequence), both sides of every
// shard boundary (b-1 and b; sampled when a striped layout has very many),
// and one inside every rank's shard. Probes of each needle: at the end of
// the sequence (the classic needle-in-a-haystack question; its score is the
// depth x length grid cell), right after it, on it, right before it (the
// future under causal masks), and on both sides of each window edge
// (n + L, n + L + 1; n - R, n - R - 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attention/dtype.h"
#include "attention/mask.h"
#include "runtime/layout.h"
#include "tools/eval/harness.h"

namespace ringattn::eval {

struct NeedleSpec {
  int64_t seqlen = 0, heads = 1, kv_heads = 1, head_dim = 64;
  DType dtype = DType::kFloat32;
  Sharding sharding = Sharding::kContiguous;
  int64_t stripe = 1;
  Mask mask;  // the mask the check expects (and the ring gets, unless a fault)
  int world = 1;
  int threads = 1;
  std::vector<double> depths;  // in [0, 1]
  uint64_t seed = 1;
  Fault fault = Fault::kNone;
  int drop_step = 1;
  Strategy strategy = Strategy::kRing;  // as RunSpec's
  int ulysses = 0;
  // One rank per process (see RunSpec): every process calls RunNeedles
  // with the same spec; only rank 0 scores (the others' result holds the
  // needles but no scores).
  comm::Communicator* comm = nullptr;
  absl::Duration arrive_timeout = absl::Seconds(600);
};

struct Probe {
  int64_t pos = 0;
  std::string kind;  // end, after, diagonal, before, left-edge-in, ...
  bool expect_visible = false;
  double recovered = 0;  // worst over the heads of the group (min if visible, max if not)
  double cosine = 0;
  bool ok = false;
};

struct Needle {
  int64_t pos = 0;
  std::string kind;   // depth, boundary-left, boundary-right, rank
  double depth = -1;  // kind == depth: the grid row
  int rank = 0;       // owner of the needle's key
  int pass = 0;       // forward pass that carried it
  std::vector<Probe> probes;
};

struct NeedleRun {
  int64_t seqlen = 0;
  std::vector<Needle> needles;
  int passes = 0;
  int64_t probes = 0, expected_visible = 0, found = 0, expected_masked = 0, leaked = 0;
  int64_t boundaries = 0;         // shard boundaries in the layout
  int64_t boundaries_probed = 0;  // of them, with needles on both sides
  int ranks_with_needle = 0;
  double min_visible_cosine = 1, min_visible_recovered = 1, max_masked_recovered = 0;
  std::vector<std::string> failures;  // the first few, readable
  RunStats stats;                     // of the last pass
  bool pass() const { return found == expected_visible && leaked == 0 && failures.empty(); }
  // Grid cell of `depth`: recovered at its end probe, NaN when not present;
  // *masked is set when that probe must not see the needle, *ok to its verdict.
  double Cell(double depth, bool* masked, bool* ok) const;
};

absl::StatusOr<NeedleRun> RunNeedles(const NeedleSpec& spec);

}  // namespace ringattn::eval
