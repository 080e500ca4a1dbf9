// ringattn-eval's driver: option checks, the planner (sizes from memory and
// the time budget, with rates measured on this machine), the three checks
// and their verdicts; see eval.h. The report itself is in report.cc.
#include "tools/eval/eval.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <filesystem>
#include <set>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "attention/cpu/gemm.h"
#include "base/status.h"
#include "runtime/plan.h"
#include "tools/cli.h"
#include "tools/npy.h"
#include "tools/progress.h"
#include "tools/eval/report.h"
#include "tools/svg.h"
#include "tools/flags.h"

namespace ringattn::eval {

// The tools' shared SVG and progress code (tools/svg.h, tools/progress.h).
using tools::Progress;

absl::Status PrepareOutDir(const std::string& dir) { return tools::PrepareOutDir("--out", dir); }

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// CPUs this process may run on (a launcher may bind it to fewer).
int BoundCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return Cores();
  return std::max(1, CPU_COUNT(&set));
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  }
  return "unknown";
}

// Visible (query, key) pairs of a length and mask: VisiblePairs's loop for
// measured lengths, a closed form in double for extrapolated ones. The
// closed form holds for the masks the eval extrapolates (none, causal,
// window), whose bounds are the query's position plus constant offsets:
// KeyBounds(i) = [i - L, i + R], read off at i = 0.
double Pairs(int64_t S, const Mask& m) {
  if (S <= (int64_t{1} << 24)) return static_cast<double>(VisiblePairs(S, m));
  const double s = static_cast<double>(S);
  const PosRange at0 = m.KeyBounds(0);
  double hi = s * s;  // sum over i of (hi(i) + 1)
  if (at0.hi != PosRange::kMaxPos) {
    const double R = static_cast<double>(at0.hi);
    const double k = std::clamp(s - R, 0.0, s);
    hi = k * (k - 1) / 2 + k * (R + 1) + (s - k) * s;
  }
  double lo = 0;  // sum over i of lo(i)
  if (at0.lo != PosRange::kMinPos) {
    const double mm = std::max(0.0, s - 1 - static_cast<double>(-at0.lo));
    lo = mm * (mm + 1) / 2;
  }
  return hi - lo;
}

double FwdFlop(int64_t S, const Mask& m, int64_t H, int64_t D) { return 4.0 * Pairs(S, m) * D * H; }

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

class Runner {
 public:
  explicit Runner(const EvalOptions& o)
      : o_(o), progress_(o.comm == nullptr || o.comm->Rank() == 0 ? o.progress : nullptr) {}

  absl::StatusOr<EvalResult> Run();

 private:
  // Rank 0 of a world of processes, or local: plans, checks and reports.
  bool root() const { return o_.comm == nullptr || o_.comm->Rank() == 0; }
  // The mask of kind k (index into kMaskKinds) at length S.
  Mask MaskFor(int kind, int64_t S) const {
    const bool user_window = o_.mask.window_left >= 0 || o_.mask.window_right >= 0;
    const int64_t L = user_window ? o_.mask.window_left : std::max<int64_t>(1, S / 8);
    const int64_t R = user_window ? o_.mask.window_right : std::max<int64_t>(1, S / 16);
    switch (kind) {
      case 0:
        return Mask{};
      case 1:
        return Mask{true, -1, -1};
      case 2:
        return Mask{false, L, R};
      case 3:
        return Mask{true, L, -1};
      case 4: {
        const std::vector<int64_t>& docs = DocumentsFor(S);
        return Mask::Causal().WithDocuments(docs.data(), static_cast<int64_t>(docs.size()));
      }
      case 5:
        return Mask::Sink(o_.mask.sink > 0 ? o_.mask.sink : 4, L);
      case 6:
        return Mask::PrefixLM(std::min(S, o_.mask.prefix > 0 ? o_.mask.prefix : S / 4));
      default: {
        const BlockBits& b = BlocksFor(S);
        return Mask::Causal().WithBlocks(b.bits.data(), 1, b.n, b.n, b.size);
      }
    }
  }
  // A block mask at length S (kept for the run): blocks of ceil(S / 16)
  // tokens, the diagonal on and every other pair on with probability 1/2
  // from a hash of the pair and --seed (the same on every rank).
  struct BlockBits {
    std::vector<uint8_t> bits;
    int64_t n = 0, size = 1;
  };
  const BlockBits& BlocksFor(int64_t S) const {
    BlockBits& b = blocks_[S];
    if (!b.bits.empty()) return b;
    b.size = std::max<int64_t>(1, (S + 15) / 16);
    b.n = (S + b.size - 1) / b.size;
    b.bits.resize(b.n * b.n);
    for (int64_t r = 0; r < b.n; ++r)
      for (int64_t c = 0; c < b.n; ++c) {
        uint64_t x = (static_cast<uint64_t>(r) << 32 | static_cast<uint64_t>(c)) ^
                     (static_cast<uint64_t>(o_.seed) * 0x9e3779b97f4a7c15ull);
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;  // splitmix64's finaliser
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        x ^= x >> 31;
        b.bits[r * b.n + c] = r == c || (x & 1) != 0;
      }
    return b;
  }
  // Packed documents at length S (kept for the run): a long one over
  // several shards, tiny ones, an empty one and a one-token one, then
  // lengths of S/64 .. S/8 (deterministic, the same on every rank).
  const std::vector<int64_t>& DocumentsFor(int64_t S) const {
    std::vector<int64_t>& b = documents_[S];
    if (!b.empty()) return b;
    b.push_back(0);
    auto add = [&](int64_t len) { b.push_back(std::min(S, b.back() + std::max<int64_t>(0, len))); };
    add(S * 3 / 8);
    add(1);
    add(0);
    add(3);
    for (int64_t i = 0; b.back() < S; ++i) add(std::max<int64_t>(1, S / (8 << (i % 4))));
    return b;
  }
  // Per rank: the cores of this machine shared by the ranks on it (all W
  // local ranks, or the processes of the world on this host, each at most
  // on the cores it is bound to).
  int ThreadsFor(int world) const {
    if (o_.threads > 0) return o_.threads;
    if (o_.comm != nullptr) return std::max(1, std::min(Cores() / ranks_here_, BoundCores()));
    return std::max(1, Cores() / world);
  }
  RunSpec Spec(int64_t S, DType t, Sharding sh, const Mask& m, int world, bool backward) const {
    RunSpec s;
    s.seqlen = S;
    s.heads = o_.heads;
    s.kv_heads = o_.kv_heads;
    s.head_dim = o_.head_dim;
    s.dtype = t;
    s.sharding = sh;
    s.stripe = o_.stripe;
    s.mask = m;
    s.world = world;
    s.threads = ThreadsFor(world);
    s.backward = backward;
    s.comm = o_.comm;
    s.arrive_timeout = arrive_;
    s.strategy = o_.strategy;
    s.ulysses = o_.ulysses;
    return s;
  }

  // Estimated seconds of one ring run, and of the row checks around it.
  double EstRing(int64_t S, const Mask& m, bool backward) const {
    const double f = FwdFlop(S, m, o_.heads, o_.head_dim);
    return f / rate_fwd_ + (backward ? 2.5 * f / rate_bwd_ : 0.0) +
           prep_per_elem_ * S * (o_.heads + o_.kv_heads) * o_.head_dim * 2 + 0.01;
  }
  double EstCheck(int64_t S, const Mask& m) const {
    const double per_row = Pairs(S, m) / S * o_.head_dim * o_.heads;
    return ref_per_unit_ * per_row * 2 * (rows_ + 40);  // + the shard-edge rows
  }

  absl::Status Validate() const;
  absl::Status Connect();
  absl::Status Calibrate();
  void Plan();
  absl::Status SharePlan();
  absl::Status Finish(EvalResult* res);
  absl::Status RunExactness();
  absl::Status RunReachability();
  absl::Status RunCost();
  void Verdicts();
  std::vector<int64_t> SampleRows(int64_t S, uint64_t salt) const;

  const EvalOptions& o_;
  Progress progress_;
  EvalData d_;
  mutable std::map<int64_t, std::vector<int64_t>> documents_;  // DocumentsFor, by length
  mutable std::map<int64_t, BlockBits> blocks_;                // BlocksFor, by length
  double start_ = 0;
  double rate_fwd_ = 1e9, rate_bwd_ = 1e9;  // FLOP/s
  double ref_per_unit_ = 5e-9;              // seconds per (row x head x key x d)
  double prep_per_elem_ = 2e-8;             // seconds per input element
  int rows_ = 32;
  int64_t mem_cap_seq_ = 0;
  std::vector<int> row_worlds_;  // W whose shard edges are sampled (a local run's)
  int ranks_here_ = 1;           // one rank per process: processes on this host
  int64_t min_mem_per_rank_ = 0;  // one rank per process: MemAvailable / ranks on a host, min
  std::vector<std::string> hosts_;
  absl::Duration arrive_ = absl::Seconds(600);
  std::vector<int64_t> long_seqs_, needle_seqs_, cost_seqs_;
};

absl::Status Runner::Validate() const {
  if (o_.ranks < 1) return ArgError("--ranks", ">= 1", o_.ranks);
  if (o_.comm != nullptr && o_.comm->Size() != o_.ranks) {
    return absl::InvalidArgumentError(absl::StrCat("--ranks ", o_.ranks,
                                                   " does not match the launched world of ",
                                                   o_.comm->Size(), " processes"));
  }
  if (o_.heads < 1) return ArgError("--heads", ">= 1", o_.heads);
  if (o_.kv_heads < 1 || o_.kv_heads > o_.heads || o_.heads % o_.kv_heads != 0) {
    return ArgError("--kv-heads", absl::StrCat("a divisor of --heads ", o_.heads), o_.kv_heads);
  }
  if (o_.head_dim < 2) return ArgError("--head-dim", ">= 2", o_.head_dim);
  if (o_.shardings.empty()) return ArgError("--sharding", "at least one layout", "none");
  if (o_.dtypes.empty()) return ArgError("--dtype", "at least one of fp32, bf16", "none");
  for (DType t : o_.dtypes) {
    if (t == DType::kFloat16) return ArgError("--dtype", "fp32 or bf16", "fp16");
  }
  if (o_.stripe < 1) return ArgError("--stripe", ">= 1", o_.stripe);
  if (o_.mask.window_left < -1 || o_.mask.window_right < -1) {
    return ArgError("--window", "LEFT,RIGHT >= -1",
                    absl::StrCat(o_.mask.window_left, ",", o_.mask.window_right));
  }
  if (o_.max_seq != 0 && o_.max_seq < kMinSeq) {
    return ArgError("--max-seq", absl::StrCat("0 (no cap) or >= ", kMinSeq), o_.max_seq);
  }
  if (!(o_.time_budget_s > 0)) return ArgError("--time-budget", "> 0 seconds", o_.time_budget_s);
  if (o_.mem_budget_bytes <= 0) return ArgError("--mem-budget", "> 0 bytes", o_.mem_budget_bytes);
  if (o_.drop_step < 1) return ArgError("drop_step", ">= 1", o_.drop_step);
  for (double dep : o_.depths) {
    if (!(dep >= 0 && dep <= 1)) return ArgError("depths", "values in [0, 1]", dep);
  }
  for (int w : o_.sweep_ranks) {
    if (w < 1) return ArgError("sweep ranks", ">= 1", w);
  }
  return absl::OkStatus();
}

std::vector<int64_t> Runner::SampleRows(int64_t S, uint64_t salt) const {
  std::set<int64_t> rows;
  std::mt19937_64 gen(o_.seed * 1000003 + static_cast<uint64_t>(S) * 7 + salt);
  std::uniform_int_distribution<int64_t> pick(0, S - 1);
  const int64_t want = std::min<int64_t>(rows_, S);
  while (static_cast<int64_t>(rows.size()) < want) rows.insert(pick(gen));
  // The first and last rows of every shard segment of every layout and W
  // in use: where a bug in the ring's bookkeeping would show first.
  std::set<int64_t> edges = {0, S - 1};
  std::vector<int> worlds = row_worlds_;
  worlds.push_back(o_.ranks);
  for (Sharding sh : o_.shardings) {
    for (int w : worlds) {
      auto layout = Layout::Create(sh, S, w, o_.stripe);
      if (!layout.ok()) continue;
      for (int r = 0; r < w; ++r) {
        const PositionMap m = layout->Shard(r);
        for (int64_t s = 0; s < m.num_segments; ++s) {
          const PositionMap::Segment& g = m.Segments()[s];
          if (g.length == 0) continue;
          edges.insert(m.Global(g.local_begin));
          edges.insert(m.Global(g.local_begin + g.length - 1));
        }
      }
    }
  }
  std::vector<int64_t> e(edges.begin(), edges.end());
  const size_t cap = 48;
  for (size_t i = 0; i < e.size(); ++i) {
    if (e.size() <= cap || i % ((e.size() + cap - 1) / cap) == 0) rows.insert(e[i]);
  }
  return std::vector<int64_t>(rows.begin(), rows.end());
}

absl::Status Runner::Calibrate() {
  // One forward and backward of the main configuration gives this
  // machine's rates (and validates the configuration against the ring).
  const int64_t S = std::min<int64_t>(o_.quick ? 2048 : 8192, o_.max_seq > 0 ? o_.max_seq : 1 << 30);
  const Mask m = MaskFor(d_.main_kind, S);
  progress_.Begin("calibrating rates", 1.0);
  const double t0 = Now();
  ASSIGN_OR_RETURN(
      RunStats st,
      RunSynthetic(Spec(S, d_.main_dtype, d_.main_sharding, m, o_.ranks, true), o_.seed));
  if (!root()) return absl::OkStatus();  // rank 0 plans from its figures
  const double f = FwdFlop(S, m, o_.heads, o_.head_dim);
  rate_fwd_ = f / std::max(st.fwd_seconds, 1e-6);
  rate_bwd_ = 2.5 * f / std::max(st.bwd_seconds, 1e-6);
  const double t1 = Now();
  Problem p = MakeProblem(S, o_.heads, o_.kv_heads, o_.head_dim, d_.main_dtype, o_.seed);
  const double t2 = Now();
  prep_per_elem_ =
      (t2 - t1) / (static_cast<double>(S) * (o_.heads + o_.kv_heads) * o_.head_dim * 2);
  const std::vector<int64_t> rows = {0, S / 3, S / 2, S - 1};
  ComputeQueryRef(p, m, rows, 1);
  ref_per_unit_ = (Now() - t2) / (rows.size() * (Pairs(S, m) / S) * o_.head_dim * o_.heads);
  progress_.End();
  d_.plan["calibration"]["seqlen"] = S;
  d_.plan["calibration"]["seconds"] = Now() - t0;
  d_.plan["calibration"]["fwd_gflops"] = rate_fwd_ * 1e-9;
  d_.plan["calibration"]["bwd_gflops"] = rate_bwd_ * 1e-9;
  d_.plan["calibration"]["reference_ns_per_row_key_dim"] = ref_per_unit_ * 1e9;
  return absl::OkStatus();
}

void Runner::Plan() {
  const bool quick = o_.quick;
  const double budget = (quick ? std::min(o_.time_budget_s, 40.0) : o_.time_budget_s);
  const double left = std::max(0.0, budget - (Now() - start_));
  const int64_t cap = std::min(mem_cap_seq_, o_.max_seq > 0 ? o_.max_seq : mem_cap_seq_);
  const int64_t base_m = o_.matrix_seq > 0 ? o_.matrix_seq : quick ? 1024 : 8192;
  d_.matrix_seq = std::max<int64_t>(16, std::min(base_m, cap));
  if (o_.max_seq > 0) d_.matrix_seq = std::min(d_.matrix_seq, o_.max_seq);
  const int64_t S_m = d_.matrix_seq;
  const int nl = static_cast<int>(o_.shardings.size()), nd = static_cast<int>(o_.dtypes.size());

  // Fixed work: the matrix and the W sweep at S_m.
  double fixed = 0;
  if (o_.run_exactness) {
    for (int k = 0; k < kNumMaskKinds; ++k) {
      const Mask m = MaskFor(k, S_m);
      fixed += nd * (nl + d_.worlds.size()) * (EstRing(S_m, m, true) + EstCheck(S_m, m));
    }
  }
  auto est_long = [&](int64_t S) {
    const Mask m = MaskFor(d_.main_kind, S);
    return nd * (EstRing(S, m, true) + EstCheck(S, m));
  };
  auto est_needle = [&](int64_t S) {
    double t = 0;
    for (int k = 0; k < kNumMaskKinds; ++k) t += nl * EstRing(S, MaskFor(k, S), false);
    return t;
  };
  auto est_cost = [&](int64_t S) {
    return d_.worlds.size() * EstRing(S, MaskFor(d_.main_kind, S), true);
  };
  auto sum = [](const std::vector<int64_t>& v, const auto& f) {
    double t = 0;
    for (int64_t S : v) t += f(S);
    return t;
  };
  // Ladders: fixed when given, else grown by doubling, round robin, while
  // the estimated total fits the time left.
  long_seqs_ = o_.long_seqs;
  needle_seqs_ = o_.needle_seqs;
  cost_seqs_ = o_.cost_seqs;
  if (o_.max_seq > 0) {  // --max-seq bounds the given ladders too
    for (auto* v : {&long_seqs_, &needle_seqs_, &cost_seqs_}) {
      v->erase(std::remove_if(v->begin(), v->end(), [&](int64_t S) { return S > o_.max_seq; }),
               v->end());
    }
  }
  const bool grow_long = o_.long_seqs.empty() && o_.run_exactness;
  const bool grow_needle = o_.needle_seqs.empty() && o_.run_needle;
  const bool grow_cost = o_.cost_seqs.empty() && o_.run_cost;
  const int64_t needle_base = std::min<int64_t>(quick ? 256 : 1024, cap);
  int64_t cost_base = std::min<int64_t>(quick ? 512 : 2048, cap);
  // A single W (one rank per process): the lengths alone must give the
  // memory fit its three points.
  if (d_.worlds.size() == 1) cost_base = std::min(cost_base, std::max<int64_t>(16, cap / 4));
  if (grow_needle) {
    for (int64_t S = needle_base; S <= cap && needle_seqs_.size() < 3; S *= 2)
      needle_seqs_.push_back(S);
  }
  if (grow_cost) {
    for (int64_t S = cost_base; S <= cap && cost_seqs_.size() < 4; S *= 2) cost_seqs_.push_back(S);
  }
  auto total = [&] {
    return fixed + sum(long_seqs_, est_long) + (o_.run_needle ? sum(needle_seqs_, est_needle) : 0) +
           (o_.run_cost ? sum(cost_seqs_, est_cost) : 0);
  };
  // The long ladder first, up to 60% of the time left (long context is what
  // the eval is for), then every ladder in turn while the total fits.
  while (grow_long) {
    const int64_t next = long_seqs_.empty() ? S_m * 2 : long_seqs_.back() * 2;
    if (next > cap || total() + est_long(next) > 0.6 * left) break;
    long_seqs_.push_back(next);
  }
  for (bool grew = true; grew;) {
    grew = false;
    if (grow_long) {
      const int64_t next = long_seqs_.empty() ? S_m * 2 : long_seqs_.back() * 2;
      if (next <= cap && total() + est_long(next) <= left) {
        long_seqs_.push_back(next);
        grew = true;
      }
    }
    if (grow_needle && !needle_seqs_.empty()) {
      const int64_t next = needle_seqs_.back() * 2;
      if (next <= cap && total() + est_needle(next) <= left) {
        needle_seqs_.push_back(next);
        grew = true;
      }
    }
    if (grow_cost && !cost_seqs_.empty()) {
      const int64_t next = cost_seqs_.back() * 2;
      if (next <= cap && total() + est_cost(next) <= left) {
        cost_seqs_.push_back(next);
        grew = true;
      }
    }
  }
  d_.needle_seqs = needle_seqs_;
  // Work for the progress bar.
  if (o_.run_exactness) progress_.AddWork(fixed + sum(long_seqs_, est_long));
  if (o_.run_needle) progress_.AddWork(sum(needle_seqs_, est_needle));
  if (o_.run_cost) progress_.AddWork(sum(cost_seqs_, est_cost));

  Json& p = d_.plan;
  p["time_budget_s"] = budget;
  p["memory_cap_seqlen"] = mem_cap_seq_;
  p["max_seq"] = o_.max_seq;
  p["matrix_seqlen"] = S_m;
  p["long_seqlens"] = long_seqs_;
  p["needle_seqlens"] = needle_seqs_;
  p["cost_seqlens"] = cost_seqs_;
  p["sweep_worlds"] = d_.worlds;
  p["sampled_rows"] = rows_;
  p["estimated_seconds"] = total();
}

absl::Status Runner::RunExactness() {
  const double t0 = Now();
  progress_.Note("== 1/3 exactness: ring vs float64 reference on sampled rows");
  struct Level {
    int64_t S;
    bool matrix;
  };
  std::vector<Level> levels = {{d_.matrix_seq, true}};
  for (int64_t S : long_seqs_) levels.push_back({S, false});
  const int cores = Cores();
  for (const Level& lv : levels) {
    const int64_t S = lv.S;
    const std::vector<int64_t> rows = SampleRows(S, 1), keys = SampleRows(S, 2);
    for (DType t : o_.dtypes) {
      progress_.Begin(absl::StrFormat("inputs S=%d %s", S, DTypeName(t)), 0);
      const Problem p = MakeProblem(S, o_.heads, o_.kv_heads, o_.head_dim, t, o_.seed + S);
      progress_.End();
      for (int k = 0; k < kNumMaskKinds; ++k) {
        if (!lv.matrix && k != d_.main_kind) continue;
        const Mask m = MaskFor(k, S);
        const double tr = Now();
        QueryRef ref;
        if (root()) ref = ComputeQueryRef(p, m, rows, cores);
        const double ref_seconds = Now() - tr;
        // (layout, W, phase) runs at this level and mask.
        std::vector<std::tuple<Sharding, int, const char*>> runs;
        if (lv.matrix) {
          for (Sharding sh : o_.shardings) runs.emplace_back(sh, o_.ranks, "matrix");
          for (int w : d_.worlds) {
            if (w != o_.ranks) runs.emplace_back(d_.main_sharding, w, "sweep");
          }
        } else {
          runs.emplace_back(d_.main_sharding, o_.ranks, "long");
        }
        for (const auto& [sh, w, phase] : runs) {
          const double est = EstRing(S, m, true) + EstCheck(S, m);
          progress_.Begin(absl::StrFormat("exact %s %s %s S=%d W=%d", DTypeName(t),
                                          ShardingName(sh), kMaskKinds[k], S, w),
                          est);
          FullOutputs out;
          ASSIGN_OR_RETURN(RunStats st, RunFull(Spec(S, t, sh, m, w, true), p.in, &out));
          if (!root()) continue;  // the other ranks only run their ranks
          const double tc = Now();
          ExactRun r;
          r.phase = phase;
          r.seqlen = S;
          r.dtype = t;
          r.sharding = sh;
          r.mask_kind = kMaskKinds[k];
          r.mask = m;
          r.world = w;
          r.rows = static_cast<int64_t>(rows.size());
          r.keys = static_cast<int64_t>(keys.size());
          r.err = CheckRun(p, ref, keys, out, true, cores);
          r.stats = st;
          r.check_seconds = Now() - tc + ref_seconds / runs.size();
          d_.exact.push_back(r);
          progress_.End();
        }
      }
    }
  }
  // Growth with W, per dtype, mask and quantity, on the main layout.
  if (d_.worlds.size() > 1) {
    for (DType t : o_.dtypes) {
      for (int k = 0; k < kNumMaskKinds; ++k) {
        std::map<int, const ExactRun*> by_w;
        for (const ExactRun& r : d_.exact) {
          if (r.seqlen == d_.matrix_seq && r.dtype == t && r.mask_kind == kMaskKinds[k] &&
              r.sharding == d_.main_sharding) {
            by_w[r.world] = &r;
          }
        }
        if (by_w.size() < 2 || !by_w.count(1)) continue;
        const char* names[] = {"out", "lse", "dq", "dk", "dv"};
        for (int q = 0; q < 5; ++q) {
          Growth g;
          g.dtype = t;
          g.mask_kind = kMaskKinds[k];
          g.quantity = names[q];
          g.noise = 0.1 * (q == 1 ? AbsTolerance(DType::kFloat32) : AbsTolerance(t));
          auto pick = [&](const Errors& e) {
            const ErrorStat* s[] = {&e.out, &e.lse, &e.dq, &e.dk, &e.dv};
            return s[q]->max_abs;
          };
          const double base = pick(by_w[1]->err);
          for (const auto& [w, r] : by_w) {
            g.worlds.push_back(w);
            g.errors.push_back(pick(r->err));
            if (pick(r->err) > 2 * base + g.noise) g.pass = false;
          }
          d_.growth.push_back(g);
        }
      }
    }
  }
  d_.phase_seconds[0] = Now() - t0;
  return absl::OkStatus();
}

absl::Status Runner::RunReachability() {
  const double t0 = Now();
  progress_.Note("== 2/3 reachability: needles at every depth, rank and shard boundary");
  for (Sharding sh : o_.shardings) {
    for (int k = 0; k < kNumMaskKinds; ++k) {
      NeedleConfig c;
      c.sharding = sh;
      c.mask_kind = kMaskKinds[k];
      d_.needles.push_back(c);
    }
  }
  for (int64_t S : needle_seqs_) {
    for (NeedleConfig& c : d_.needles) {
      const int k =
          static_cast<int>(std::find(kMaskKinds, kMaskKinds + kNumMaskKinds, c.mask_kind) - kMaskKinds);
      NeedleSpec ns;
      ns.seqlen = S;
      ns.heads = o_.heads;
      ns.kv_heads = o_.kv_heads;
      ns.head_dim = o_.head_dim;
      ns.dtype = d_.main_dtype;
      ns.sharding = c.sharding;
      ns.stripe = o_.stripe;
      ns.mask = MaskFor(k, S);
      ns.world = o_.ranks;
      ns.threads = ThreadsFor(o_.ranks);
      ns.depths = d_.depths;
      ns.seed = o_.seed;
      ns.fault = o_.fault;
      ns.drop_step = o_.drop_step;
      ns.comm = o_.comm;
      ns.arrive_timeout = arrive_;
      ns.strategy = o_.strategy;
      ns.ulysses = o_.ulysses;
      progress_.Begin(
          absl::StrFormat("needles %s %s S=%d", ShardingName(c.sharding), c.mask_kind, S),
          EstRing(S, ns.mask, false));
      ASSIGN_OR_RETURN(NeedleRun r, RunNeedles(ns));
      c.runs.push_back(std::move(r));
      progress_.End();
    }
  }
  d_.phase_seconds[1] = Now() - t0;
  return absl::OkStatus();
}

absl::Status Runner::RunCost() {
  const double t0 = Now();
  progress_.Note("== 3/3 cost: memory per rank and time at several lengths and W");
  CostResult& c = d_.cost;
  for (int64_t S : cost_seqs_) {
    for (int w : d_.worlds) {
      const Mask m = MaskFor(d_.main_kind, S);
      progress_.Begin(absl::StrFormat("cost S=%d W=%d", S, w), EstRing(S, m, true));
#if defined(__GLIBC__)
      malloc_trim(0);  // hand freed memory back, so the RSS figures start clean
#endif
      ASSIGN_OR_RETURN(
          RunStats st,
          RunSynthetic(Spec(S, d_.main_dtype, d_.main_sharding, m, w, true), o_.seed + S));
      CostPoint pt;
      pt.seqlen = S;
      pt.world = w;
      ASSIGN_OR_RETURN(const Layout layout, Layout::Create(d_.main_sharding, S, w, o_.stripe, m));
      pt.shard_len = layout.MaxShardLength();
      pt.fwd_flop = FwdFlop(S, m, o_.heads, o_.head_dim);
      pt.bwd_flop = 2.5 * pt.fwd_flop;
      pt.stats = st;
      c.points.push_back(pt);
      progress_.End();
    }
  }
  if (!root()) return absl::OkStatus();
  // Memory per rank against tokens per rank, over every (S, W).
  std::vector<double> n, bytes, rss_n, rss;
  c.rss_available = true;
  for (const CostPoint& p : c.points) {
    n.push_back(static_cast<double>(p.shard_len));
    bytes.push_back(static_cast<double>(p.stats.rank_bytes));
    if (p.stats.rss_peak_delta < 0) {
      c.rss_available = false;
    } else {
      rss_n.push_back(static_cast<double>(p.shard_len));
      rss.push_back(static_cast<double>(p.stats.rss_peak_delta) / p.world);
    }
  }
  c.mem_quad = FitPolynomial(n, bytes, 2);
  c.mem_lin = FitPolynomial(n, bytes, 1);
  if (c.rss_available) {
    c.rss_quad = FitPolynomial(rss_n, rss, 2);
    c.rss_lin = FitPolynomial(rss_n, rss, 1);
  }
  // RSS growth at the top two lengths of the main W.
  std::vector<const CostPoint*> main_w;
  for (const CostPoint& p : c.points) {
    if (p.world == o_.ranks) main_w.push_back(&p);
  }
  if (c.rss_available && main_w.size() >= 2) {
    const CostPoint* a = main_w[main_w.size() - 2];
    const CostPoint* b = main_w.back();
    c.rss_growth = static_cast<double>(b->stats.rss_peak_delta) /
                   std::max<double>(1.0, static_cast<double>(a->stats.rss_peak_delta));
    c.rss_growth_tokens = static_cast<double>(b->shard_len) / std::max<int64_t>(1, a->shard_len);
  }
  // Time against FLOPs, per W.
  for (int w : d_.worlds) {
    CostResult::TimeFit tf;
    tf.world = w;
    std::vector<double> ff, fb, tfw, tbw;
    std::vector<const CostPoint*> pts;
    for (const CostPoint& p : c.points) {
      if (p.world != w) continue;
      pts.push_back(&p);
      ff.push_back(p.fwd_flop);
      fb.push_back(p.bwd_flop);
      tfw.push_back(p.stats.fwd_seconds);
      tbw.push_back(p.stats.bwd_seconds);
    }
    tf.fwd = FitPolynomial(ff, tfw, 1);
    tf.bwd = FitPolynomial(fb, tbw, 1);
    if (pts.size() >= 2) {
      const CostPoint* a = pts[pts.size() - 2];
      const CostPoint* b = pts.back();
      const double ls = std::log(static_cast<double>(b->seqlen) / a->seqlen);
      tf.fwd_exponent = std::log(b->stats.fwd_seconds / a->stats.fwd_seconds) / ls;
      tf.bwd_exponent = std::log(b->stats.bwd_seconds / a->stats.bwd_seconds) / ls;
      tf.flop_exponent = std::log(b->fwd_flop / a->fwd_flop) / ls;
    }
    c.time_fits.push_back(tf);
    // Largest context within the memory budget per rank (extrapolated).
    CostResult::Extrapolation ex;
    ex.world = w;
    if (c.mem_lin.ok && c.mem_lin.b > 0) {
      ex.max_tokens_per_rank = static_cast<int64_t>(
          std::max(0.0, (static_cast<double>(o_.mem_budget_bytes) - c.mem_lin.a) / c.mem_lin.b));
      ex.max_seqlen = ex.max_tokens_per_rank * w;
      if (c.rss_available && c.rss_lin.ok && c.rss_lin.b > 0) {
        ex.max_seqlen_rss =
            static_cast<int64_t>(std::max(
                0.0, (static_cast<double>(o_.mem_budget_bytes) - c.rss_lin.a) / c.rss_lin.b)) *
            w;
      }
      const double f =
          FwdFlop(ex.max_seqlen, MaskFor(d_.main_kind, ex.max_seqlen), o_.heads, o_.head_dim);
      if (tf.fwd.ok) ex.fwd_seconds = tf.fwd.At(f);
      if (tf.bwd.ok) ex.bwd_seconds = tf.bwd.At(2.5 * f);
    }
    c.extrapolations.push_back(ex);
  }
  d_.phase_seconds[2] = Now() - t0;
  return absl::OkStatus();
}

void Runner::Verdicts() {
  if (o_.run_exactness) {
    Verdict v;
    v.check = "exactness";
    v.ran = true;
    std::vector<std::string> bad;
    double worst = 0;
    int64_t longest = 0;
    for (const ExactRun& r : d_.exact) {
      longest = std::max(longest, r.seqlen);
      const ErrorStat* s[] = {&r.err.out, &r.err.lse, &r.err.dq, &r.err.dk, &r.err.dv};
      const char* names[] = {"out", "lse", "dq", "dk", "dv"};
      for (int q = 0; q < 5; ++q) {
        worst = std::max(worst, s[q]->tol > 0 ? s[q]->max_abs / s[q]->tol : 0.0);
        if (!s[q]->pass() && bad.size() < 6) {
          bad.push_back(absl::StrFormat("%s %s %s %s S=%d W=%d: %s error %.3g > tolerance %.3g%s",
                                        r.phase, DTypeName(r.dtype), ShardingName(r.sharding),
                                        r.mask_kind, r.seqlen, r.world, names[q], s[q]->max_abs,
                                        s[q]->tol, s[q]->finite ? "" : " (non-finite values)"));
        }
      }
    }
    for (const Growth& g : d_.growth) {
      if (!g.pass && bad.size() < 8) {
        bad.push_back(absl::StrFormat(
            "%s %s %s error grows with W: %s at W = %s", DTypeName(g.dtype), g.mask_kind,
            g.quantity,
            absl::StrJoin(g.errors, ", ",
                          [](std::string* o, double e) { absl::StrAppendFormat(o, "%.3g", e); }),
            absl::StrJoin(g.worlds, ", ")));
      }
    }
    v.pass = bad.empty() && !d_.exact.empty();
    if (v.pass && !d_.sweep_note.empty()) {
      v.reason = absl::StrFormat(
          "%d ring runs up to S=%d within flash-attn's tolerance (worst error/tolerance %.2f); "
          "growth with W not checked: every run has the launched W=%d",
          d_.exact.size(), longest, worst, o_.ranks);
    } else if (v.pass) {
      v.reason = absl::StrFormat(
          "%d ring runs up to S=%d within flash-attn's tolerance (worst error/tolerance %.2f); "
          "no growth with W (%s)",
          d_.exact.size(), longest, worst, absl::StrJoin(d_.worlds, ", "));
    } else {
      v.reason = d_.exact.empty() ? "nothing ran" : absl::StrJoin(bad, "; ");
    }
    d_.verdicts.push_back(v);
  }
  if (o_.run_needle) {
    Verdict v;
    v.check = "reachability";
    v.ran = true;
    int64_t vis = 0, found = 0, masked = 0, leaked = 0, configs_ok = 0;
    double min_cos = 1, max_leak = 0;
    bool ranks_ok = true, boundaries_ok = true;
    std::vector<std::string> bad;
    for (const NeedleConfig& c : d_.needles) {
      if (c.pass()) ++configs_ok;
      for (const NeedleRun& r : c.runs) {
        vis += r.expected_visible;
        found += r.found;
        masked += r.expected_masked;
        leaked += r.leaked;
        min_cos = std::min(min_cos, r.min_visible_cosine);
        max_leak = std::max(max_leak, r.max_masked_recovered);
        ranks_ok = ranks_ok && (r.ranks_with_needle == std::min<int64_t>(o_.ranks, r.seqlen));
        boundaries_ok = boundaries_ok && (r.boundaries <= 16 ? r.boundaries_probed == r.boundaries
                                                             : r.boundaries_probed >= 8);
        for (const std::string& f : r.failures) {
          if (bad.size() < 4)
            bad.push_back(absl::StrCat(ShardingName(c.sharding), " ", c.mask_kind, ": ", f));
        }
      }
    }
    v.pass = vis > 0 && found == vis && leaked == 0 && bad.empty();
    const std::string summary = absl::StrFormat(
        "%d/%d visible probes retrieved (min cosine %.4f), %d/%d masked probes leaked (max "
        "recovered %.3f); %d/%d configurations pass",
        found, vis, min_cos, leaked, masked, max_leak, configs_ok, d_.needles.size());
    v.reason =
        v.pass ? summary : absl::StrCat(summary, ". First failures: ", absl::StrJoin(bad, "; "));
    if (v.pass && (!ranks_ok || !boundaries_ok)) {
      v.reason += " (note: some lengths were too short to put a needle on every rank or boundary)";
    }
    d_.verdicts.push_back(v);
  }
  if (o_.run_cost) {
    Verdict v;
    v.check = "cost";
    v.ran = true;
    const CostResult& c = d_.cost;
    double n_max = 0;
    for (const CostPoint& p : c.points) n_max = std::max(n_max, static_cast<double>(p.shard_len));
    const double share = c.mem_quad.ok ? c.mem_quad.QuadShare(n_max) : NAN;
    std::vector<std::string> bad;
    if (!c.mem_quad.ok) bad.push_back("too few distinct lengths to fit memory per token");
    if (c.mem_quad.ok && !(std::abs(share) <= 0.01)) {
      bad.push_back(absl::StrFormat(
          "memory per rank has an S^2 term: %.1f%% of the fitted value at %d tokens per rank",
          share * 100, static_cast<int64_t>(n_max)));
    }
    // The RSS is judged only where it is large enough to rise above the
    // allocator's noise: linear growth has exponent <= 1, S^2 has 2.
    double rss_exp = NAN;
    if (c.rss_available && c.rss_growth_tokens > 1.01 && !c.points.empty()) {
      rss_exp = std::log(std::max(c.rss_growth, 1e-9)) / std::log(c.rss_growth_tokens);
      int64_t top_delta = 0;
      for (const CostPoint& p : c.points) top_delta = std::max(top_delta, p.stats.rss_peak_delta);
      if (top_delta >= (int64_t{32} << 20) && rss_exp > 1.5) {
        bad.push_back(
            absl::StrFormat("process RSS grows like (S/W)^%.2f at the top lengths", rss_exp));
      }
    }
    v.pass = bad.empty();
    std::string time_note;
    for (const auto& tf : c.time_fits) {
      if (tf.world != o_.ranks || !tf.fwd.ok) continue;
      time_note = absl::StrFormat(
          "; time follows FLOPs at W=%d: %.1f GFLOP/s fwd (R^2 %.3f), %.1f bwd (R^2 %.3f), "
          "time exponent %.2f vs FLOP exponent %.2f",
          tf.world, tf.fwd.b > 0 ? 1e-9 / tf.fwd.b : 0.0, tf.fwd.r2,
          tf.bwd.b > 0 ? 1e-9 / tf.bwd.b : 0.0, tf.bwd.r2, tf.fwd_exponent, tf.flop_exponent);
    }
    if (v.pass) {
      v.reason = absl::StrFormat(
          "memory per rank linear in S/W: %.0f bytes/token + %.0f bytes, S^2 term %s of it at %d "
          "tokens/rank%s%s",
          c.mem_lin.b, std::abs(c.mem_lin.a) < 1 ? 0.0 : c.mem_lin.a,
          std::abs(share) < 1e-8 ? std::string("< 1e-6 %")
                                 : absl::StrFormat("%.2g %%", share * 100),
          static_cast<int64_t>(n_max),
          std::isfinite(rss_exp) ? absl::StrFormat("; RSS growth exponent %.2f", rss_exp) : "",
          time_note);
    } else {
      v.reason = absl::StrJoin(bad, "; ") + time_note;
    }
    d_.verdicts.push_back(v);
  }
}

// One rank per process: every rank tells rank 0 its host and available
// memory; rank 0 checks --out and answers with every rank's (for the
// threads per rank and the memory cap), or with the --out error that stops
// every rank.
absl::Status Runner::Connect() {
  comm::Communicator& c = *o_.comm;
  Json mine = Json::object();
  mine["host"] = HostName();
  mine["mem_available_bytes"] = tools::MemoryAvailableBytes();
  ASSIGN_OR_RETURN(const std::vector<std::string> all, Gather(c, DumpJson(mine), arrive_));
  std::string text;
  absl::Status out_dir;
  if (root()) {
    out_dir = PrepareOutDir(o_.out_dir);
    Json setup = Json::object();
    setup["error"] = std::string(out_dir.message());
    Json hosts = Json::array(), mem = Json::array();
    for (const std::string& blob : all) {
      ASSIGN_OR_RETURN(const Json j, ParseJson(blob));
      hosts.push_back(j.at("host"));
      mem.push_back(j.at("mem_available_bytes"));
    }
    setup["hosts"] = hosts;
    setup["mem_available_bytes"] = mem;
    text = DumpJson(setup);
  }
  RETURN_IF_ERROR(Broadcast(c, &text, arrive_));
  RETURN_IF_ERROR(out_dir);
  ASSIGN_OR_RETURN(const Json setup, ParseJson(text));
  const std::string error = setup.at("error").get<std::string>();
  if (!error.empty()) return absl::InvalidArgumentError(absl::StrCat("stopped by rank 0: ", error));
  const auto hosts = setup.at("hosts").get<std::vector<std::string>>();
  const auto mem = setup.at("mem_available_bytes").get<std::vector<int64_t>>();
  std::map<std::string, int> per_host;
  for (const std::string& h : hosts) ++per_host[h];
  hosts_.clear();
  for (const auto& [h, n] : per_host) hosts_.push_back(h);
  ranks_here_ = per_host[hosts[c.Rank()]];
  min_mem_per_rank_ = 0;
  for (size_t r = 0; r < hosts.size(); ++r) {
    const int64_t m = mem[r] / per_host[hosts[r]];
    if (r == 0 || m < min_mem_per_rank_) min_mem_per_rank_ = m;
  }
  return absl::OkStatus();
}

// One rank per process: rank 0's plan (sizes chosen from its timings and
// the time budget) to every rank, so that all make the same runs.
absl::Status Runner::SharePlan() {
  std::string text;
  if (root()) {
    Json p = Json::object();
    p["matrix_seq"] = d_.matrix_seq;
    p["long"] = long_seqs_;
    p["needle"] = needle_seqs_;
    p["cost"] = cost_seqs_;
    text = DumpJson(p);
  }
  RETURN_IF_ERROR(Broadcast(*o_.comm, &text, arrive_));
  if (root()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const Json p, ParseJson(text));
  d_.matrix_seq = p.at("matrix_seq").get<int64_t>();
  long_seqs_ = p.at("long").get<std::vector<int64_t>>();
  needle_seqs_ = p.at("needle").get<std::vector<int64_t>>();
  cost_seqs_ = p.at("cost").get<std::vector<int64_t>>();
  d_.needle_seqs = needle_seqs_;
  return absl::OkStatus();
}

// Verdicts and the report (rank 0); one rank per process, then rank 0's
// verdict (or its error writing the report) to every rank.
absl::Status Runner::Finish(EvalResult* res) {
  absl::Status written;
  if (root()) {
    const int64_t top =
        std::max<int64_t>({d_.matrix_seq, long_seqs_.empty() ? 0 : long_seqs_.back(),
                           needle_seqs_.empty() ? 0 : needle_seqs_.back(),
                           cost_seqs_.empty() ? 0 : cost_seqs_.back()});
    d_.main_mask = MaskFor(d_.main_kind, top);
    Verdicts();
    d_.wall_seconds = Now() - start_;
    progress_.Finish();
    res->verdicts = d_.verdicts;
    res->pass = true;
    for (const Verdict& v : d_.verdicts) res->pass = res->pass && v.pass;
    auto files = WriteReport(d_, o_.out_dir);
    if (files.ok()) res->files = *std::move(files);
    written = files.status();
  }
  if (o_.comm == nullptr) return written;
  std::string text;
  if (root()) {
    Json v = Json::object();
    v["pass"] = res->pass;
    v["error"] = std::string(written.message());
    text = DumpJson(v);
  }
  RETURN_IF_ERROR(Broadcast(*o_.comm, &text, arrive_));
  RETURN_IF_ERROR(written);
  ASSIGN_OR_RETURN(const Json v, ParseJson(text));
  const std::string error = v.at("error").get<std::string>();
  if (!error.empty()) return absl::InternalError(absl::StrCat("stopped by rank 0: ", error));
  res->pass = v.at("pass").get<bool>();
  return absl::OkStatus();
}

absl::StatusOr<EvalResult> Runner::Run() {
  start_ = Now();
  RETURN_IF_ERROR(Validate());
  // One rank per process: every wait for the others allows for rank 0's
  // checks between runs, which the time budget bounds.
  if (o_.comm != nullptr) arrive_ = absl::Seconds(std::max(600.0, 2 * o_.time_budget_s));
  if (o_.comm == nullptr) {
    RETURN_IF_ERROR(PrepareOutDir(o_.out_dir));
  } else {
    RETURN_IF_ERROR(Connect());
  }
  d_.options = o_;
  d_.main_sharding = o_.shardings.front();
  d_.main_dtype = o_.dtypes.front();
  const bool user_window = o_.mask.window_left >= 0 || o_.mask.window_right >= 0;
  d_.main_kind = o_.mask.sink > 0     ? 5
                 : o_.mask.prefix > 0 ? 6
                 : o_.mask.causal     ? (user_window ? 3 : 1)
                                      : (user_window ? 2 : 0);
  if (o_.sweep_ranks.empty()) {
    std::set<int> w = {1, 2, 4, o_.ranks};
    d_.worlds.assign(w.begin(), w.end());
  } else {
    std::set<int> w(o_.sweep_ranks.begin(), o_.sweep_ranks.end());
    d_.worlds.assign(w.begin(), w.end());
  }
  // Shard edges sampled are those of a local run of the same options, so
  // that the errors of the two compare (bitwise, at the same W).
  row_worlds_ = d_.worlds;
  if (o_.comm != nullptr) {
    d_.worlds = {o_.ranks};
    d_.sweep_note = absl::StrFormat(
        "one rank per process (%s): every ring run has the launched W=%d, so error against W "
        "(W = %s) was not measured; `ringattn-eval --comm local` sweeps W in one process",
        o_.comm->Name(), o_.ranks, absl::StrJoin(row_worlds_, ", "));
  }
  d_.depths = o_.depths;
  if (d_.depths.empty()) {
    for (int i = 0; i <= 10; ++i) d_.depths.push_back(i / 10.0);
  }
  rows_ = o_.sample_rows > 0 ? o_.sample_rows : o_.quick ? 12 : 32;
  d_.sample_rows = rows_;
  const int64_t mem = o_.comm == nullptr ? tools::MemoryAvailableBytes() : min_mem_per_rank_;
  const double per_token = 40.0 * o_.head_dim * (o_.heads + o_.kv_heads) + 64;
  mem_cap_seq_ = static_cast<int64_t>(0.6 * static_cast<double>(mem) / per_token);
  Json& env = d_.environment;
  env["cores"] = Cores();
  env["cpu"] = CpuModel();
  env["mem_available_bytes"] = o_.comm == nullptr ? mem : tools::MemoryAvailableBytes();
  env["cpu_tiles"] = cpu::SmallGemm::Backend();
  env["backend"] = "cpu";
  if (o_.comm == nullptr) {
    env["comm"] = "local";
  } else {
    env["comm"] = o_.comm->Name();
    env["comm_description"] = o_.comm_description;
    env["processes"] = o_.ranks;
    env["hosts"] = hosts_;
    env["threads_per_rank"] = ThreadsFor(o_.ranks);
    env["mem_available_per_rank_bytes"] = mem;
  }

  RETURN_IF_ERROR(Calibrate());
  if (root()) Plan();
  if (o_.comm != nullptr) RETURN_IF_ERROR(SharePlan());
  if (o_.run_exactness) RETURN_IF_ERROR(RunExactness());
  if (o_.run_needle) RETURN_IF_ERROR(RunReachability());
  if (o_.run_cost) RETURN_IF_ERROR(RunCost());
  EvalResult res;
  RETURN_IF_ERROR(Finish(&res));
  return res;
}

}  // namespace

absl::StatusOr<EvalResult> RunEval(const EvalOptions& options) {
  // Rank 0 (or the one process) owns --out: a directory this call creates
  // is removed again, with whatever it holds, when the eval fails.
  const bool owns_out = options.comm == nullptr || options.comm->Rank() == 0;
  std::error_code ec;
  const bool out_existed = !owns_out || std::filesystem::exists(options.out_dir, ec);
  Runner r(options);
  auto res = r.Run();
  if (!res.ok() && !out_existed && std::filesystem::is_directory(options.out_dir, ec)) {
    std::filesystem::remove_all(options.out_dir, ec);
  }
  // An error on one rank of a world of processes stops the others at once
  // (they would otherwise wait for it at the next run).
  if (!res.ok() && options.comm != nullptr) options.comm->Abort(res.status());
  return res;
}

}  // namespace ringattn::eval
