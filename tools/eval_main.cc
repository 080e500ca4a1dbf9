// ringattn-eval: the standalone long-context eval. Answers, on the user's own
// machine, before a cluster is spent on a long-context run:
//   1. exactness   is the ring exact against float64 at long context, for
//                  every dtype, layout and mask, and independent of W?
//   2. reachability does every query reach every key the mask allows across
//                  every shard boundary, and none it forbids? (needles)
//   3. cost        memory per rank and time per call against S and W, the
//                  fitted growth, and the largest context a budget allows
// and writes DIR/report.md (with verdicts and figures), DIR/report.json and
// SVG figures. Exit status: 0 all checks pass, 1 a check failed, 2 the eval
// could not run (bad flags, unusable --out).
//
// --comm local runs W ranks as threads of this process; --comm ucx runs one
// rank per process under mpirun or srun (mpirun -np 4 ringattn-eval --comm
// ucx --out DIR): rank 0 plans, checks and writes DIR, and every process
// exits with rank 0's verdict.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/ringattn.h"
#include "tools/cli.h"
#include "tools/flags.h"
#include "tools/mask_flags.h"
#include "tools/eval/eval.h"

ABSL_FLAG(std::string, out, "",
          "output directory for report.md, report.json and the SVGs (required)");
ABSL_FLAG(bool, quick, false, "a small run that finishes in about a minute on 2 cores");
ABSL_FLAG(int, ranks, 4,
          "ring size W (local ranks in this process; the sweep adds 1, 2, 4); under --comm ucx "
          "the launched world, which --ranks must match when given");
ABSL_FLAG(std::string, sharding, "zigzag,contiguous,striped",
          "layouts to check, comma-separated; the first is the main one");
ABSL_FLAG(int64_t, stripe, 1, "tokens per stripe for the striped layout");
ABSL_FLAG(std::string, strategy, "ring",
          "ring | allgather | ulysses | hybrid:UxR | auto: the strategy of every ring run "
          "(the ring where it cannot run: W = 1, W > H for ulysses, U not dividing W)");
ABSL_FLAG(int64_t, heads, 2, "query heads H");
ABSL_FLAG(int64_t, kv_heads, 1, "(--kv-heads) key/value heads Hkv (0 = H; H % Hkv == 0)");
ABSL_FLAG(int64_t, head_dim, 64, "(--head-dim) head dimension D");
ABSL_FLAG(std::string, dtype, "fp32,bf16",
          "storage dtypes to check, comma-separated; the first is the main one");
ABSL_FLAG(std::string, backend, "cpu", "kernel backend: cpu");
ABSL_FLAG(std::string, comm, "local",
          "communicator: local (W ranks as threads of this process) or ucx (one rank per process, "
          "launched by mpirun or srun; rank 0 writes the report)");
ABSL_FLAG(int64_t, max_seq, 0,
          "(--max-seq) cap on every context length (0 = memory and time decide)");
ABSL_FLAG(double, time_budget, 3600,
          "(--time-budget) seconds the whole eval may take; sizes are planned from it");
ABSL_FLAG(std::string, mem_budget, "80GiB",
          "(--mem-budget) memory per rank for the largest-context extrapolation, e.g. 80GiB, 16G");
ABSL_FLAG(int64_t, seed, 1, "random seed of the inputs and the row samples");
ABSL_FLAG(int, threads, 0, "threads per rank (0 = cores / W, at least 1)");
ABSL_FLAG(int, rows, 0, "random query and key rows sampled per length (0 = 32, --quick 12)");
ABSL_FLAG(std::string, fault, "none",
          "self-test: none | broken-mask | drop-ring-step, injected into the reachability runs, "
          "which must then FAIL");

namespace ringattn::tools {
namespace {

absl::StatusOr<int64_t> ParseBytes(const std::string& s) {
  std::string t = absl::AsciiStrToLower(s);
  struct Unit {
    const char* suffix;
    double mult;
  };
  const Unit units[] = {
      {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0},
      {"kb", 1e3},     {"mb", 1e6},        {"gb", 1e9},           {"tb", 1e12},
      {"k", 1024.0},   {"m", 1048576.0},   {"g", 1073741824.0},   {"t", 1099511627776.0},
      {"b", 1.0}};
  double mult = 1;
  for (const Unit& u : units) {
    const std::string suf = u.suffix;
    if (t.size() > suf.size() && t.compare(t.size() - suf.size(), suf.size(), suf) == 0) {
      mult = u.mult;
      t.resize(t.size() - suf.size());
      break;
    }
  }
  double v;
  if (!absl::SimpleAtod(t, &v) || !(v > 0) || v * mult > 9e18) {
    return ArgError("--mem-budget", "a positive size such as 80GiB, 16G or 1e9",
                    absl::StrCat("'", s, "'"));
  }
  return static_cast<int64_t>(v * mult);
}

// Every numeric flag against its stated range.
absl::Status CheckFlags() {
  RETURN_IF_ERROR(CheckRange("--ranks", absl::GetFlag(FLAGS_ranks), 1, kMaxRanks));
  RETURN_IF_ERROR(CheckRange("--stripe", absl::GetFlag(FLAGS_stripe), 1, int64_t{1} << 48));
  RETURN_IF_ERROR(CheckRange("--heads", absl::GetFlag(FLAGS_heads), 1, 4096));
  RETURN_IF_ERROR(CheckRange("--kv-heads", absl::GetFlag(FLAGS_kv_heads), 0, absl::GetFlag(FLAGS_heads)));
  RETURN_IF_ERROR(CheckRange("--head-dim", absl::GetFlag(FLAGS_head_dim), 2, 512));
  const int64_t max_seq = absl::GetFlag(FLAGS_max_seq);
  if (max_seq != 0) RETURN_IF_ERROR(CheckRange("--max-seq", max_seq, eval::kMinSeq, int64_t{1} << 40));
  RETURN_IF_ERROR(CheckRealRange("--time-budget", absl::GetFlag(FLAGS_time_budget), 1.0, 1e7));
  RETURN_IF_ERROR(CheckRange("--seed", absl::GetFlag(FLAGS_seed), 0, INT64_MAX));
  RETURN_IF_ERROR(CheckRange("--threads", absl::GetFlag(FLAGS_threads), 0, RingOptions::kMaxThreads));
  RETURN_IF_ERROR(CheckRange("--rows", absl::GetFlag(FLAGS_rows), 0, 1000000));
  return absl::OkStatus();
}

absl::StatusOr<eval::EvalOptions> Options() {
  RETURN_IF_ERROR(CheckFlags());
  eval::EvalOptions o;
  if (absl::GetFlag(FLAGS_backend) != "cpu") {
    return absl::UnimplementedError(absl::StrCat("--backend ", absl::GetFlag(FLAGS_backend),
                                                 ": this build has only the 'cpu' backend"));
  }
  if (absl::GetFlag(FLAGS_comm) != "local" && absl::GetFlag(FLAGS_comm) != "ucx") {
    return absl::UnimplementedError(absl::StrCat("--comm ", absl::GetFlag(FLAGS_comm),
                                                 ": the eval runs on 'local' or 'ucx'"));
  }
  o.out_dir = absl::GetFlag(FLAGS_out);
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out DIR is required");
  o.quick = absl::GetFlag(FLAGS_quick);
  o.ranks = absl::GetFlag(FLAGS_ranks);
  o.shardings.clear();
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_sharding), ',', absl::SkipEmpty())) {
    ASSIGN_OR_RETURN(Sharding s, ParseSharding(std::string(absl::StripAsciiWhitespace(name))));
    if (std::find(o.shardings.begin(), o.shardings.end(), s) == o.shardings.end())
      o.shardings.push_back(s);
  }
  o.stripe = absl::GetFlag(FLAGS_stripe);
  {
    auto spec = ParseStrategySpec(absl::GetFlag(FLAGS_strategy));
    if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat("--", spec.status().message()));
    if (spec->strategy == Strategy::kLocal) {
      return absl::InvalidArgumentError("--strategy: the eval's runs are rings; local is one device's");
    }
    if (absl::Status s = CheckStrategy(*spec, o.ranks); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--strategy ", absl::GetFlag(FLAGS_strategy), ": ", s.message()));
    }
    o.strategy = spec->strategy;
    o.ulysses = spec->ulysses;
  }
  // --causal and --window give the main configuration (every mask is
  // checked anyway); without --window the window masks are S/8 left and
  // S/16 right at each length.
  ASSIGN_OR_RETURN(o.mask, MaskFromFlags());
  o.heads = absl::GetFlag(FLAGS_heads);
  o.kv_heads = absl::GetFlag(FLAGS_kv_heads) == 0 ? o.heads : absl::GetFlag(FLAGS_kv_heads);
  o.head_dim = absl::GetFlag(FLAGS_head_dim);
  o.dtypes.clear();
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_dtype), ',', absl::SkipEmpty())) {
    DType t;
    const std::string n(absl::StripAsciiWhitespace(name));
    if (!ParseDType(n, &t) || t == DType::kFloat16) {
      return ArgError("--dtype", "a list of fp32, bf16", absl::StrCat("'", n, "'"));
    }
    if (std::find(o.dtypes.begin(), o.dtypes.end(), t) == o.dtypes.end()) o.dtypes.push_back(t);
  }
  o.max_seq = absl::GetFlag(FLAGS_max_seq);
  o.time_budget_s = absl::GetFlag(FLAGS_time_budget);
  ASSIGN_OR_RETURN(o.mem_budget_bytes, ParseBytes(absl::GetFlag(FLAGS_mem_budget)));
  o.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  o.threads = absl::GetFlag(FLAGS_threads);
  o.sample_rows = absl::GetFlag(FLAGS_rows);
  const std::string fault = absl::GetFlag(FLAGS_fault);
  if (fault == "none") {
    o.fault = eval::Fault::kNone;
  } else if (fault == "broken-mask") {
    o.fault = eval::Fault::kBrokenMask;
  } else if (fault == "drop-ring-step") {
    o.fault = eval::Fault::kDropRingStep;
  } else {
    return ArgError("--fault", "none, broken-mask or drop-ring-step",
                    absl::StrCat("'", fault, "'"));
  }
  return o;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ringattn-eval --out DIR [--quick] [options]: exactness, reachability and cost of "
      "long-context ring attention on this machine, with a report in DIR");
  // The command line as typed, for the report (before flag names are normalized).
  auto line = ParseCommandLine(argc, argv);
  std::unique_ptr<comm::World> ranks;  // --comm ucx: this process's rank
  auto fail = [&ranks](const absl::Status& s) {
    // One rank per process: which one says so (the communicator's errors
    // already start with it).
    std::string who;
    if (ranks != nullptr && !ranks->root()) {
      who = absl::StrCat("rank ", ranks->comms()[0]->Rank(), ": ");
      if (absl::StartsWith(s.message(), who)) who.clear();
    }
    std::fprintf(stderr, "ringattn-eval: %s%s\n", who.c_str(), std::string(s.message()).c_str());
    return 2;
  };
  if (!line.ok()) return fail(line.status());
  const bool ranks_given = line->ranks_given;
  auto opt = Options();
  if (!opt.ok()) return fail(opt.status());
  opt->command_line = absl::StrJoin(line->typed, " ");
  if (absl::GetFlag(FLAGS_comm) == "ucx") {
    auto created = MakeWorld("ucx", opt->ranks, ranks_given, /*device_memory=*/false);
    if (!created.ok()) return fail(created.status());
    ranks = *std::move(created);
    opt->ranks = ranks->size();
    opt->comm = ranks->comms()[0];
    opt->comm_description = ranks->Describe();
  }
#if defined(__GLIBC__)
  // Large buffers straight from mmap and back to the system on free, so that
  // the cost check's RSS figures are those of each run (glibc otherwise
  // raises this threshold after the first large free and keeps the memory).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
  // An unusable --out is an error before any work: RunEval checks it first
  // (one rank per process: rank 0 checks it and tells the others), and
  // removes it again if it created it and the eval fails.
  auto res = eval::RunEval(*opt);
  if (!res.ok()) return fail(res.status());
  if (ranks != nullptr && !ranks->root()) return res->pass ? 0 : 1;  // rank 0's verdict
  std::printf("ringattn-eval: report in %s/report.md\n", opt->out_dir.c_str());
  for (const eval::Verdict& v : res->verdicts) {
    std::printf("  %-13s %s  %s\n", v.check.c_str(), v.pass ? "PASS" : "FAIL", v.reason.c_str());
  }
  return res->pass ? 0 : 1;
}

}  // namespace
}  // namespace ringattn::tools

int main(int argc, char** argv) { return ringattn::tools::Main(argc, argv); }
