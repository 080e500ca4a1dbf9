// ringattn-eval as a library: the three checks (exactness at long context,
// reachability of every position, cost in memory and time), the planner
// that sizes them from the machine's memory and a time budget, and the
// report (report.md, report.json, SVG figures) in an output directory.
//
//   EvalOptions o;  o.out_dir = "eval-out";  o.quick = true;
//   RETURN_IF_ERROR(PrepareOutDir(o.out_dir));      // before any work
//   ASSIGN_OR_RETURN(EvalResult r, RunEval(o));     // writes the report
//   return r.pass ? 0 : 1;
//
// Masks checked everywhere: none, causal, window and causal+window. The
// window is the user's (--window) or, when none is given, S/8 tokens to the
// left and S/16 to the right of each query at length S. The "main"
// configuration (--causal, --window, the first --sharding and --dtype) is
// the one taken to the longest contexts and costed.
//
// Ranks: W local threads per ring run (EvalOptions::comm null), or one rank
// per process under a launcher (--comm ucx): every process calls RunEval
// with the same options and runs its rank of every ring run in lockstep;
// rank 0 plans the sizes (and sends them to the others), gathers the
// outputs and stats, runs the checks and writes the report, and tells the
// others its verdict. Every ring run then has the launched W: there is no
// sweep over W, and the report says so.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/dtype.h"
#include "attention/mask.h"
#include "comm/communicator.h"
#include "runtime/layout.h"
#include "tools/eval/exactness.h"
#include "tools/eval/fit.h"
#include "tools/eval/harness.h"
#include "tools/eval/needle.h"

namespace ringattn::eval {

// The shortest context length the eval runs (its calibration and matrix);
// --max-seq must be 0 (no cap) or at least this.
inline constexpr int64_t kMinSeq = 64;

struct EvalOptions {
  int ranks = 4;  // W of the main configuration and the layout matrix
  std::vector<Sharding> shardings = {Sharding::kZigzag, Sharding::kContiguous, Sharding::kStriped};
  int64_t stripe = 1;
  // The main configuration's mask (--causal, --window); without a window
  // the eval's window masks are S/8 left and S/16 right at each length.
  Mask mask = Mask::Causal();
  int64_t heads = 2, kv_heads = 1, head_dim = 64;
  std::vector<DType> dtypes = {DType::kFloat32, DType::kBFloat16};
  int64_t max_seq = 0;                           // 0: no cap; else bounds every length run
  double time_budget_s = 3600;                   // whole run, planned from measured rates
  int64_t mem_budget_bytes = int64_t{80} << 30;  // per rank, for the extrapolation
  bool quick = false;
  uint64_t seed = 1;
  std::string out_dir;
  int threads = 0;  // per rank; 0: cores / W (at least 1)
  // The strategy of every ring run (the ring where it cannot run at a run's
  // W: Ulysses with fewer heads than ranks, hybrid:UxR where U does not
  // divide W, and W = 1).
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;

  // Fixed sizes instead of the planner's (tests); empty or 0: planned.
  int64_t matrix_seq = 0;
  std::vector<int64_t> long_seqs, needle_seqs, cost_seqs;
  std::vector<int> sweep_ranks;  // W compared; empty: {1, 2, 4, ranks}
  int sample_rows = 0;           // random query and key rows; 0: 32 (quick 12)
  std::vector<double> depths;    // empty: 0, 10, ..., 100%

  bool run_exactness = true, run_needle = true, run_cost = true;
  // Self-test hooks: the fault is applied to every ring run of the
  // reachability check (exactness and cost runs stay clean).
  Fault fault = Fault::kNone;
  int drop_step = 1;

  std::FILE* progress = stderr;  // null: silent (always, on ranks != 0)
  std::string command_line;      // shown in the report

  // One rank per process: this process's rank of a launched world of
  // `ranks` processes (comm->Size() == ranks); not owned. Null: local.
  comm::Communicator* comm = nullptr;
  std::string comm_description;  // for the report, e.g. "ucx: 4 processes ..."
};

struct ExactRun {
  std::string phase;  // matrix, sweep, long
  int64_t seqlen = 0;
  DType dtype = DType::kFloat32;
  Sharding sharding = Sharding::kContiguous;
  std::string mask_kind;
  Mask mask;
  int world = 1;
  int64_t rows = 0, keys = 0;  // sampled query rows, key rows
  Errors err;
  RunStats stats;
  double check_seconds = 0;  // references and comparison
};

// Error against W = 1, per dtype, mask and quantity (the W sweep).
struct Growth {
  DType dtype = DType::kFloat32;
  std::string mask_kind, quantity;
  std::vector<int> worlds;
  std::vector<double> errors;  // max abs error at each W
  double noise = 0;            // absolute slack below which growth is noise
  bool pass = true;
};

struct NeedleConfig {
  Sharding sharding = Sharding::kContiguous;
  std::string mask_kind;
  std::vector<NeedleRun> runs;  // one per length
  bool pass() const {
    for (const NeedleRun& r : runs) {
      if (!r.pass()) return false;
    }
    return true;
  }
};

struct CostPoint {
  int64_t seqlen = 0;
  int world = 1;
  int64_t shard_len = 0;  // max over ranks
  double fwd_flop = 0, bwd_flop = 0;
  RunStats stats;
};

struct CostResult {
  std::vector<CostPoint> points;
  Fit mem_quad, mem_lin;  // accounted bytes per rank vs tokens per rank
  Fit rss_quad, rss_lin;  // process peak RSS delta / W vs tokens per rank
  bool rss_available = false;
  double rss_growth = 0;         // RSS delta ratio at the top two lengths (same W)
  double rss_growth_tokens = 0;  // token ratio of those two points
  struct TimeFit {
    int world = 1;
    Fit fwd, bwd;                                                  // seconds vs FLOPs
    double fwd_exponent = 0, bwd_exponent = 0, flop_exponent = 0;  // top two lengths, log-log
  };
  std::vector<TimeFit> time_fits;
  struct Extrapolation {
    int world = 1;
    int64_t max_tokens_per_rank = 0, max_seqlen = 0;  // accounted fit
    int64_t max_seqlen_rss = 0;                       // RSS fit (0: unavailable)
    double fwd_seconds = 0, bwd_seconds = 0;          // at max_seqlen, from the time fit
  };
  std::vector<Extrapolation> extrapolations;
};

struct Verdict {
  std::string check;  // exactness, reachability, cost
  bool ran = false;
  bool pass = false;
  std::string reason;
};

// One rank per process: on ranks != 0 only `pass` is set (rank 0's).
struct EvalResult {
  std::vector<Verdict> verdicts;
  bool pass = false;
  std::vector<std::string> files;  // written, relative to out_dir
};

// Checks (and creates, if only the last component is missing) the output
// directory: it must be a writable directory; a regular file, a missing
// parent or an unwritable directory is an InvalidArgument naming the path.
absl::Status PrepareOutDir(const std::string& dir);

// Validates the options, runs the checks and writes the report to
// options.out_dir. The status is an error only when the eval could not run
// or write its report; failed checks are in the result (pass = false).
// One rank per process: collective (every rank calls it); rank 0 alone
// needs and writes out_dir, and an error on any rank aborts the world, so
// that every rank returns an error promptly. An out_dir that this call
// created is removed again when it returns an error (nothing is left behind).
absl::StatusOr<EvalResult> RunEval(const EvalOptions& options);

}  // namespace ringattn::eval
