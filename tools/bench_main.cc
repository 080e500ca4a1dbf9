// ringattn-bench: the long-context benchmark. Runs the ring forward (and
// backward) over W ranks on one long sequence and prints a readable summary:
// time per call, GFLOP/s per rank and in all, bytes moved and bandwidth, the
// overlap efficiency, the speedup over one rank on the same problem, and
// memory per rank. With no flags it runs a CPU demo of about 30 s on 2 cores.
//
// Configurations measured in one run (docs/ARCHITECTURE.md, "Measuring"):
//   ring      W ranks, each owning cores/W threads (at least one)
//   1 rank    one rank owning the same share as one ring rank: the W-rank
//             run against it is strong scaling over devices (ideal min(W, cores))
//   1 rank, all cores: the kernel's own throughput
//
// --comm local runs the W ring ranks as threads of this process; --comm ucx
// runs one ring rank per process under mpirun / srun (comm/world.h): rank
// 0 gathers every rank's figures through the communicator, runs the 1-rank
// comparisons alone, and prints. The summary names the transport path.
//
// --backend cuda --comm nccl runs one rank per process and GPU under
// mpirun/srun; rank 0 gathers the figures as with ucx.
// --backend cuda runs the W ranks as virtual ranks on GPU 0 (--comm
// cuda-local, the default there; bf16 or fp16): random shards made on the
// host are copied to the device. The 1-rank comparison is then one rank on
// the same GPU (the W ranks share it, so the ideal speedup is 1: the ratio
// shows what the ring costs), and there is no all-cores run. The summary
// names the backend (device) and the communicator.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "attention/cpu/gemm.h"
#include "attention/cpu/kernels.h"
#include "runtime/plan.h"
#include "runtime/backend.h"
#include "runtime/planner.h"
#include "runtime/ringattn.h"
#include "runtime/validate.h"
#include "tools/cli.h"
#include "tools/flags.h"
#include "tools/npy.h"
#include "tools/mask_flags.h"
#include "tools/gather.h"
#include "tools/placement.h"
#include "tools/progress.h"
#include "tools/svg.h"

ABSL_FLAG(int64_t, seq, 8192, "global sequence length (tokens)");
ABSL_FLAG(int64_t, batch, 1, "batch size");
ABSL_FLAG(int64_t, heads, 8, "query heads H");
ABSL_FLAG(int64_t, kv_heads, 0, "(--kv-heads) key/value heads Hkv (0 = H; H % Hkv == 0 for GQA/MQA)");
ABSL_FLAG(int64_t, head_dim, 64, "(--head-dim) head dimension D");
ABSL_FLAG(int, ranks, 2, "ring size W (local ranks; with --comm ucx or nccl the launched world size)");
ABSL_FLAG(std::string, sharding, "zigzag",
          "contiguous | zigzag | striped | balanced (equal visible work; for --docs)");
ABSL_FLAG(std::string, docs, "",
          "packed documents: L1,L2,... (lengths summing to --seq) or longtail:MEAN[:SEED] "
          "(a long-tailed mix: each document a quarter of --seq with probability 1/32, else "
          "Pareto of shape 1.5 and mean MEAN, capped at a quarter of --seq; seed 2026)");
ABSL_FLAG(int64_t, stripe, 1, "tokens per stripe for --sharding striped");
ABSL_FLAG(double, softcap, 0.0, "score softcap (0 = off)");
ABSL_FLAG(std::string, dtype, "fp32", "fp32 | bf16 (cpu); bf16 | fp16 (cuda)");
ABSL_FLAG(int, iters, 2, "timed iterations (the median is reported)");
ABSL_FLAG(int, warmup, 1, "untimed iterations first");
ABSL_FLAG(bool, backward, true, "also time the backward");
ABSL_FLAG(bool, compare, true, "also run one rank on the same problem (speedup, kernel rate)");
ABSL_FLAG(int, threads, 0, "threads per ring rank (0 = cores / W, at least 1)");
ABSL_FLAG(std::string, comm, "",
          "communicator: local | cuda-local | ucx (one rank per process, under mpirun/srun) | "
          "nccl (--backend cuda, one process per GPU under mpirun/srun); "
          "default local for --backend cpu, cuda-local for --backend cuda");
ABSL_FLAG(std::string, backend, "cpu", "kernel backend: cpu | cuda (W virtual ranks on GPU 0)");
ABSL_FLAG(bool, deterministic, false, "cuda: bitwise reproducible backward (slower dQ pass)");
ABSL_FLAG(std::string, strategy, "ring",
          "ring | allgather | ulysses | hybrid:UxR | auto (how the ranks share the call; "
          "docs/PLANNER.md)");
ABSL_FLAG(bool, plan, false,
          "print every strategy's predicted time and the planner's choice (costs measured in "
          "this run unless --tflops and --link-gbps are given)");
ABSL_FLAG(bool, calibrate, false,
          "also run the planner's calibration on the ranks (what strategy=auto measures at its "
          "first call) and report its costs (JSON key calibrated)");
ABSL_FLAG(bool, simulate, false,
          "predict only, no run and no communication: every strategy at --devices ranks for "
          "--seq/--heads/--kv-heads/--head-dim, from --tflops, --link-gbps, --latency-us "
          "(and --node-size, --node-gbps)");
ABSL_FLAG(int, devices, 8, "--simulate: number of ranks");
ABSL_FLAG(double, tflops, 0, "planner: one rank's attention TFLOP/s (forward)");
ABSL_FLAG(double, bwd_tflops, 0, "(--bwd-tflops) planner: the backward's (0: 0.8 x --tflops)");
ABSL_FLAG(double, link_gbps, 0, "(--link-gbps) planner: link GB/s per rank, each way (across nodes)");
ABSL_FLAG(double, latency_us, 10, "(--latency-us) planner: latency per message, microseconds");
ABSL_FLAG(int, node_size, 0, "(--node-size) planner: ranks per node (0: one kind of link)");
ABSL_FLAG(double, node_gbps, 0, "(--node-gbps) planner: link GB/s within a node");
ABSL_FLAG(bool, overlap, true,
          "planner: transfers run beside the compute (GPUs); false for CPU ranks, whose copies "
          "take the kernels' cores");
ABSL_FLAG(std::string, json, "", "write the figures to this JSON file (a sweep: an array of them)");
ABSL_FLAG(std::string, json_format, "ringattn",
          "(--json-format) ringattn: the bench's own keys | gbench: Google Benchmark's JSON "
          "(its tools/compare.py diffs two runs)");
ABSL_FLAG(std::string, csv, "", "write the figures to this CSV file (a row per sweep point)");
ABSL_FLAG(std::string, plot, "",
          "write SVG charts of a sweep into this directory (GFLOP/s and fraction of the GEMM "
          "ceiling against --seq, speedup against --ranks, overlap efficiency)");
ABSL_FLAG(bool, ceiling, true,
          "cpu: measure the tile-GEMM ceiling of all cores in the same run (fraction of it)");

namespace ringattn::tools {
namespace {

using Json = nlohmann::ordered_json;

int Cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// The CPU ceiling measured in the same run: the kernels' own tile GEMM
// engine (cpu::SmallGemm: libxsmm's JIT for this CPU), 64x64x128 fp32
// tiles resident in cache, on every core at once (a thread each), the best
// of 3 rounds of 0.2 s (GFLOP/s); once per process. The attention kernels
// spend their FLOPs in such tiles, so this is the rate they can approach.
// (A large BLAS sgemm is not: OpenBLAS misreads some virtual CPUs and runs
// a generic kernel at a third of the machine's rate.)
double GemmCeilingGflops() {
  static const double ceiling = [] {
    constexpr int m = 64, n = 64, k = 128;
    const cpu::SmallGemm gemm(m, n, k, m, k, m, 1.0f);
    const int threads = Cores();
    double best = 0;
    for (int round = 0; round < 3; ++round) {
      std::vector<double> rate(threads, 0);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n, 0.0f);
          const auto t0 = std::chrono::steady_clock::now();
          int64_t calls = 0;
          double dt = 0;
          while (dt < 0.2) {
            for (int i = 0; i < 64; ++i) gemm(a.data(), b.data(), c.data());
            calls += 64;
            dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
          rate[t] = 2.0 * m * n * k * calls / dt * 1e-9;  // c: written by JIT code
        });
      }
      for (std::thread& th : pool) th.join();
      double sum = 0;
      for (double r : rate) sum += r;
      best = std::max(best, sum);
    }
    return best;
  }();
  return ceiling;
}

struct Config {
  int64_t S, B, H, Hk, D;
  Sharding sharding;
  int64_t stripe;
  Mask mask;
  float softcap;
  DType dtype;
  int iters, warmup;
  bool backward;
  Backend backend;
  bool deterministic;
  Strategy strategy = Strategy::kRing;
  int ulysses = 0;
};

// Median over iterations of the slowest rank's figures.
struct RunResult {
  std::string label;
  int world = 1, threads = 1;
  double fwd_s = 0, bwd_s = 0;               // wall per call (max over ranks)
  double fwd_overlap = 1, bwd_overlap = 1;   // min over ranks of compute / wall
  double fwd_compute_max = 0, fwd_compute_min = 0;  // per-rank compute, for balance
  int64_t fwd_bytes = 0, bwd_bytes = 0;      // per rank, max over ranks
  int steps = 0;
  int64_t rank_bytes = 0;                    // tensors + workspace, max over ranks
  double link_gbps = 0;                      // isolated SendRecv of one KV block
  double link_one_way_gbps = 0;              // the same block, rank 0 -> 1 alone
  std::string backend;                       // rank 0's backend, described
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<uint8_t> RandomShard(int64_t n, DType t, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> x(n);
  for (float& f : x) f = dist(gen);
  std::vector<uint8_t> bytes(n * DTypeSize(t));
  EncodeFloats(x.data(), n, t, bytes.data());
  return bytes;
}

// The progress bar (tools/progress.h, on a terminal only) and the label of
// the sweep point running, for the iterations of Run to name themselves.
Progress* g_progress = nullptr;
// --calibrate: the planner's calibrated costs (rank 0's, which every rank uses).
std::optional<PlanCosts> g_calibrated;
std::string g_point;

// Per-rank figures as doubles, for the gather to rank 0.
constexpr int kStatFields = 7;
void PackStats(const RingStats& s, std::vector<double>* out) {
  out->insert(out->end(), {s.wall_seconds, s.compute_seconds, s.wait_seconds,
                           static_cast<double>(s.bytes_sent), static_cast<double>(s.steps),
                           static_cast<double>(s.steps_with_work),
                           static_cast<double>(s.workspace_bytes)});
}
RingStats UnpackStats(const double* d) {
  RingStats s;
  s.wall_seconds = d[0];
  s.compute_seconds = d[1];
  s.wait_seconds = d[2];
  s.bytes_sent = static_cast<int64_t>(d[3]);
  s.steps = static_cast<int>(d[4]);
  s.steps_with_work = static_cast<int>(d[5]);
  s.workspace_bytes = static_cast<int64_t>(d[6]);
  return s;
}

// Runs the ring on `ranks`. With one rank per process, only rank 0's result
// is filled in (the others return an empty one).
absl::StatusOr<RunResult> Run(const Config& c, comm::World& ranks, int threads,
                              const std::string& label) {
  const int world = ranks.size();
  const int total = c.warmup + c.iters;
  // [rank][iter]
  std::vector<std::vector<RingStats>> fwd(world, std::vector<RingStats>(total)),
      bwd(world, std::vector<RingStats>(total));
  std::vector<int64_t> rank_bytes(world, 0);
  std::vector<double> link(world, 0), link_one_way(world, 0);
  std::string backend_description;
  // Every wait on the other ranks: the configured timeout (--comm ucx/nccl:
  // RINGATTN_TIMEOUT_MS, else 60 s), as in the ring itself.
  const absl::Duration timeout = ranks.timeout();
  RETURN_IF_ERROR(ranks.Run([&](comm::Communicator& cm) -> absl::Status {
        const int r = cm.Rank();
        RingOptions opt;
        opt.seqlen = c.S;
        opt.sharding = c.sharding;
        opt.stripe = c.stripe;
        opt.mask = c.mask;
        opt.softcap = c.softcap;
        opt.dtype = c.dtype;
        opt.num_threads = threads;
        opt.backend = c.backend;
        opt.deterministic = c.deterministic;
        opt.device_index = ranks.device();  // nccl: this process's GPU (cuda-local: 0)
        // One rank runs the local strategy's kernels through the ring of one.
        opt.strategy = world == 1 ? Strategy::kRing : c.strategy;
        opt.ulysses = world == 1 ? 0 : c.ulysses;
        ASSIGN_OR_RETURN(auto ring, RingAttention::Create(&cm, opt));
        if (r == 0) backend_description = ring->BackendDescription();
        if (absl::GetFlag(FLAGS_calibrate) && world > 1) {
          std::unique_ptr<KernelBackend> be;
          if (c.backend == Backend::kCuda) {
            ASSIGN_OR_RETURN(be, MakeCudaBackend(ranks.device(), c.deterministic));
          } else {
            be = MakeCpuBackend(threads);
          }
          const int64_t block = 2 * c.B * ring->layout().MaxShardLength() * c.Hk * c.D * DTypeSize(c.dtype);
          ASSIGN_OR_RETURN(const PlanCosts costs, Calibrate(&cm, be.get(), c.dtype, c.D, block, timeout));
          if (r == 0) g_calibrated = costs;
        }
        const int64_t Sr = ring->ShardLength();
        const int64_t nq = c.B * Sr * c.H * c.D, nk = c.B * Sr * c.Hk * c.D;
        auto q = RandomShard(nq, c.dtype, 10 * r + 1), k = RandomShard(nk, c.dtype, 10 * r + 2),
             v = RandomShard(nk, c.dtype, 10 * r + 3), dout = RandomShard(nq, c.dtype, 10 * r + 4);
        std::vector<uint8_t> out(q.size()), dq(q.size()), dk(k.size()), dv(k.size());
        std::vector<float> lse(c.B * c.H * Sr);
        // The shards where the backend reads them (device copies on cuda).
        Placement place(c.backend);
        auto V = [&](std::vector<uint8_t>& x, int64_t heads, bool input) {
          return place.Place(x, c.dtype, {c.B, Sr, heads, c.D}, input);
        };
        ASSIGN_OR_RETURN(const TensorView qv, V(q, c.H, true));
        ASSIGN_OR_RETURN(const TensorView kv, V(k, c.Hk, true));
        ASSIGN_OR_RETURN(const TensorView vv, V(v, c.Hk, true));
        ASSIGN_OR_RETURN(const TensorView dov, V(dout, c.H, true));
        ASSIGN_OR_RETURN(const TensorView ov, V(out, c.H, false));
        ASSIGN_OR_RETURN(const TensorView dqv, V(dq, c.H, false));
        ASSIGN_OR_RETURN(const TensorView dkv, V(dk, c.Hk, false));
        ASSIGN_OR_RETURN(const TensorView dvv, V(dv, c.Hk, false));
        ASSIGN_OR_RETURN(const TensorView lv,
                         place.Place(lse, DType::kFloat32, {c.B, c.H, Sr}, false));
        // Isolated bandwidth of one KV block around the ring (between
        // device buffers on cuda).
        if (world > 1) {
          const int64_t bytes = 2 * c.B * ring->layout().MaxShardLength() * c.Hk * c.D * DTypeSize(c.dtype);
          std::vector<uint8_t> a(bytes, 1), b(bytes, 0);
          ASSIGN_OR_RETURN(const TensorView av, place.Place(a, DType::kFloat32, {bytes / 4}, true));
          ASSIGN_OR_RETURN(const TensorView bv, place.Place(b, DType::kFloat32, {bytes / 4}, true));
          comm::MessageMeta meta;
          meta.kind = 99;
          meta.ndim = 1;
          meta.shape[0] = bytes;
          double best = 0;
          for (int rep = 0; rep < 4; ++rep) {
            meta.step = rep;
            RETURN_IF_ERROR(cm.Barrier(timeout));
            const auto t0 = std::chrono::steady_clock::now();
            ASSIGN_OR_RETURN(auto req, cm.SendRecv(av.data, bytes, (r + 1) % world, meta, bv.data,
                                                   bytes, (r + world - 1) % world, meta));
            RETURN_IF_ERROR(req->Wait(timeout));
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, bytes / dt / 1e9);
          }
          link[r] = best;
          // One direction only (rank 0 -> rank 1, the others idle): the
          // figure to set beside a one-way tool such as ucx_perftest tag_bw.
          best = 0;
          for (int rep = 0; rep < 4; ++rep) {
            meta.step = 100 + rep;
            RETURN_IF_ERROR(cm.Barrier(timeout));
            const auto t0 = std::chrono::steady_clock::now();
            if (r == 0 || r == 1) {
              ASSIGN_OR_RETURN(
                  auto req, r == 0 ? cm.SendRecv(av.data, bytes, 1, meta, nullptr, 0, 0, comm::MessageMeta{})
                                   : cm.SendRecv(nullptr, 0, 0, comm::MessageMeta{}, bv.data, bytes, 0, meta));
              RETURN_IF_ERROR(req->Wait(timeout));
            }
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, bytes / dt / 1e9);
          }
          link_one_way[r] = r == 1 ? best : 0;
        }
        for (int it = 0; it < total; ++it) {
          RETURN_IF_ERROR(cm.Barrier(timeout));
          RETURN_IF_ERROR(ring->Forward(qv, kv, vv, ov, lv));
          fwd[r][it] = ring->LastStats();
          if (c.backward) {
            RETURN_IF_ERROR(cm.Barrier(timeout));
            RETURN_IF_ERROR(ring->Backward(qv, kv, vv, ov, lv, dov, dqv, dkv, dvv));
            bwd[r][it] = ring->LastStats();
          }
          if (r == 0 && g_progress != nullptr) {
            g_progress->Label(absl::StrCat(g_point, label, ": iteration ", it + 1, "/", total));
          }
        }
        rank_bytes[r] = static_cast<int64_t>(q.size() * 4 + k.size() * 4 + lse.size() * 4) +
                        std::max(fwd[r].back().workspace_bytes, bwd[r].back().workspace_bytes);
        if (!ranks.one_rank_per_process()) return absl::OkStatus();
        // Every rank's figures to rank 0.
        std::vector<double> mine;
        for (int it = 0; it < total; ++it) {
          PackStats(fwd[r][it], &mine);
          PackStats(bwd[r][it], &mine);
        }
        mine.push_back(static_cast<double>(rank_bytes[r]));
        mine.push_back(link[r]);
        mine.push_back(link_one_way[r]);
        const int64_t bytes = static_cast<int64_t>(mine.size() * sizeof(double));
        std::vector<std::vector<double>> inbox(world);
        RETURN_IF_ERROR(GatherToRoot(
            cm, 0, mine.data(), [bytes](int) { return bytes; },
            [&](int from) {
              inbox[from].resize(mine.size());
              return static_cast<void*>(inbox[from].data());
            },
            timeout));
        for (int from = 1; from < world && r == 0; ++from) {
          const double* d = inbox[from].data();
          for (int it = 0; it < total; ++it, d += 2 * kStatFields) {
            fwd[from][it] = UnpackStats(d);
            bwd[from][it] = UnpackStats(d + kStatFields);
          }
          rank_bytes[from] = static_cast<int64_t>(d[0]);
          link[from] = d[1];
          link_one_way[from] = d[2];
        }
        return absl::OkStatus();
      }));
  if (!ranks.root()) return RunResult{};
  RunResult res;
  res.label = label;
  res.world = world;
  res.threads = threads;
  std::vector<double> fw, bw, fo, bo, cmax, cmin;
  for (int it = c.warmup; it < total; ++it) {
    double fwall = 0, bwall = 0, fov = 1, bov = 1, cx = 0, cn = 1e30;
    for (int r = 0; r < world; ++r) {
      fwall = std::max(fwall, fwd[r][it].wall_seconds);
      bwall = std::max(bwall, bwd[r][it].wall_seconds);
      fov = std::min(fov, fwd[r][it].compute_seconds / fwd[r][it].wall_seconds);
      if (c.backward) bov = std::min(bov, bwd[r][it].compute_seconds / bwd[r][it].wall_seconds);
      cx = std::max(cx, fwd[r][it].compute_seconds);
      cn = std::min(cn, fwd[r][it].compute_seconds);
    }
    fw.push_back(fwall);
    bw.push_back(bwall);
    fo.push_back(fov);
    bo.push_back(bov);
    cmax.push_back(cx);
    cmin.push_back(cn);
  }
  res.fwd_s = Median(fw);
  res.bwd_s = Median(bw);
  res.fwd_overlap = Median(fo);
  res.bwd_overlap = Median(bo);
  res.fwd_compute_max = Median(cmax);
  res.fwd_compute_min = Median(cmin);
  for (int r = 0; r < world; ++r) {
    res.fwd_bytes = std::max(res.fwd_bytes, fwd[r].back().bytes_sent);
    res.bwd_bytes = std::max(res.bwd_bytes, bwd[r].back().bytes_sent);
    res.rank_bytes = std::max(res.rank_bytes, rank_bytes[r]);
    res.link_gbps = r == 0 ? link[r] : std::min(res.link_gbps, link[r]);
    res.link_one_way_gbps = std::max(res.link_one_way_gbps, link_one_way[r]);
  }
  res.steps = fwd[0].back().steps;
  res.backend = backend_description;
  return res;
}


// The document lengths --docs asks for (empty: no documents), as
// cu_seqlens boundaries [0, ..., S].
absl::StatusOr<std::vector<int64_t>> DocumentsFromFlag(int64_t S) {
  const std::string spec = absl::GetFlag(FLAGS_docs);
  std::vector<int64_t> bounds{0};
  if (spec.empty()) return std::vector<int64_t>();
  if (absl::StartsWith(spec, "longtail:")) {
    std::vector<std::string> parts = absl::StrSplit(spec.substr(9), ':');
    int64_t mean = 0;
    uint64_t seed = 2026;
    if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &mean) || mean < 1 ||
        (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &seed))) {
      return ArgError("--docs", "longtail:MEAN[:SEED] with MEAN >= 1", absl::StrCat("'", spec, "'"));
    }
    // Most documents short (Pareto(scale, 1.5) has mean 3 * scale, a long
    // tail of its own), a few of a quarter of the context.
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const double scale = static_cast<double>(mean) / 3.0;
    const int64_t cap = std::max<int64_t>(1, S / 4);
    while (bounds.back() < S) {
      const bool quarter = u(rng) < 1.0 / 32;
      const double x = scale / std::pow(1.0 - u(rng), 1.0 / 1.5);
      const int64_t len =
          quarter ? cap : std::clamp<int64_t>(static_cast<int64_t>(std::llround(x)), 1, cap);
      bounds.push_back(std::min(S, bounds.back() + len));
    }
    return bounds;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    int64_t len = 0;
    if (!absl::SimpleAtoi(part, &len) || len < 0 || len > S - bounds.back()) {
      return ArgError("--docs", absl::StrCat("lengths >= 0 summing to --seq ", S, " (or longtail:MEAN[:SEED])"),
                      absl::StrCat("'", spec, "'"));
    }
    bounds.push_back(bounds.back() + len);
  }
  if (bounds.back() != S) {
    return ArgError("--docs", absl::StrCat("lengths summing to --seq ", S),
                    absl::StrCat("lengths summing to ", bounds.back()));
  }
  return bounds;
}

// Every numeric flag against its stated range (the help text's units), before
// anything is allocated.
absl::Status CheckFlags() {
  RETURN_IF_ERROR(CheckRange("--seq", absl::GetFlag(FLAGS_seq), 1, int64_t{1} << 40));
  RETURN_IF_ERROR(CheckRange("--batch", absl::GetFlag(FLAGS_batch), 1, 65536));
  RETURN_IF_ERROR(CheckRange("--heads", absl::GetFlag(FLAGS_heads), 1, 4096));
  RETURN_IF_ERROR(CheckRange("--kv-heads", absl::GetFlag(FLAGS_kv_heads), 0, absl::GetFlag(FLAGS_heads)));
  RETURN_IF_ERROR(CheckRange("--head-dim", absl::GetFlag(FLAGS_head_dim), 1, 512));
  RETURN_IF_ERROR(CheckRange("--ranks", absl::GetFlag(FLAGS_ranks), 1, kMaxRanks));
  RETURN_IF_ERROR(CheckRange("--stripe", absl::GetFlag(FLAGS_stripe), 1, int64_t{1} << 48));
  RETURN_IF_ERROR(CheckRealRange("--softcap", absl::GetFlag(FLAGS_softcap), 0.0, 1e30));
  RETURN_IF_ERROR(CheckRange("--iters", absl::GetFlag(FLAGS_iters), 1, 1000000));
  RETURN_IF_ERROR(CheckRange("--warmup", absl::GetFlag(FLAGS_warmup), 0, 1000000));
  RETURN_IF_ERROR(CheckRange("--threads", absl::GetFlag(FLAGS_threads), 0, RingOptions::kMaxThreads));
  return absl::OkStatus();
}

// Bytes a run of the bench holds at once on all its ranks together
// (estimated from the shapes: the inputs, outputs and gradients in the
// storage dtype, the ring's double-buffered K/V and fp32 dK/dV accumulators,
// the fp32 lse, and the fp32 staging of the random inputs).
double EstimatedBytes(const Config& c, int world) {
  const double es = DTypeSize(c.dtype);
  const double q = static_cast<double>(c.B) * c.S * c.H * c.D, kv = static_cast<double>(c.B) * c.S * c.Hk * c.D;
  const double per_block = kv / world;  // one rank's K (or V) shard
  return (4 * q + 4 * kv) * es + world * per_block * (2 * 2 * es + 2 * 2 * 4) +
         2.0 * c.B * c.H * c.S * 4 + q / world * 4;
}

// The problem's shape from the flags (sizes, stripe, backward): what a
// run and a --simulate share.
Config ShapeFromFlags() {
  Config c;
  c.S = absl::GetFlag(FLAGS_seq);
  c.B = absl::GetFlag(FLAGS_batch);
  c.H = absl::GetFlag(FLAGS_heads);
  c.Hk = absl::GetFlag(FLAGS_kv_heads) == 0 ? c.H : absl::GetFlag(FLAGS_kv_heads);
  c.D = absl::GetFlag(FLAGS_head_dim);
  c.stripe = absl::GetFlag(FLAGS_stripe);
  c.backward = absl::GetFlag(FLAGS_backward);
  return c;
}

PlanCosts CostsFromFlags() {
  PlanCosts c = PlanCosts::Given(absl::GetFlag(FLAGS_tflops), absl::GetFlag(FLAGS_bwd_tflops),
                                 absl::GetFlag(FLAGS_link_gbps), absl::GetFlag(FLAGS_latency_us));
  c.node_size = absl::GetFlag(FLAGS_node_size);
  c.node_bytes_per_s = absl::GetFlag(FLAGS_node_gbps) * 1e9;
  c.overlap = absl::GetFlag(FLAGS_overlap);
  return c;
}

// The planner's table for `c` on `world` ranks: every strategy's predicted
// forward and backward, the choice, and (after a run) the measured time of
// the strategy that ran beside its prediction. Returns it as JSON.
Json PrintPlan(const Config& c, int world, const PlanCosts& costs, const RunResult* measured,
               const std::string& ran) {
  PlanShape shape;
  shape.batch = c.B;
  shape.heads = c.H;
  shape.kv_heads = c.Hk;
  shape.head_dim = c.D;
  shape.dtype = c.dtype;
  const std::vector<PlanEntry> plan =
      PredictAll(c.sharding, c.S, c.stripe, c.mask, world, shape, costs);
  const PlanEntry& choice = Choose(plan, c.backward);
  std::printf("\n  plan (%.3g TFLOP/s fwd, %.3g bwd per rank; %.3g GB/s, %.3g us per message%s)\n",
              costs.forward_flops_per_s * 1e-12, costs.backward_flops_per_s * 1e-12,
              costs.bytes_per_s * 1e-9, costs.latency_s * 1e6,
              costs.node_size > 0 ? absl::StrFormat("; nodes of %d at %.3g GB/s", costs.node_size,
                                                    costs.node_bytes_per_s * 1e-9).c_str()
                                  : "");
  std::printf("  %-14s %12s %12s %12s %12s %14s\n", "strategy", "fwd ms", "bwd ms", "compute ms",
              "comm ms", "bytes/rank");
  Json rows = Json::array();
  for (const PlanEntry& e : plan) {
    if (!e.feasible) {
      std::printf("  %-14s %s\n", e.name.c_str(), absl::StrCat("cannot run: ", e.why_not).c_str());
    } else {
      std::printf("  %-14s %12.1f %12.1f %12.1f %12.1f %14s%s\n", e.name.c_str(), e.forward_s * 1e3,
                  e.backward_s * 1e3, e.compute_s * 1e3, e.comm_s * 1e3,
                  HumanBytes(static_cast<int64_t>(e.bytes_per_rank)).c_str(),
                  &e == &choice ? "   <- choice" : "");
    }
    Json r;
    r["strategy"] = e.name;
    r["feasible"] = e.feasible;
    r["predicted_fwd_ms"] = e.feasible ? Json(e.forward_s * 1e3) : Json(nullptr);
    r["predicted_bwd_ms"] = e.feasible ? Json(e.backward_s * 1e3) : Json(nullptr);
    rows.push_back(r);
  }
  Json j;
  j["choice"] = choice.name;
  j["entries"] = rows;
  if (measured != nullptr) {
    for (const PlanEntry& e : plan) {
      if (e.name != ran) continue;
      std::printf("  measured %-14s fwd %.1f ms (predicted %.1f, %+.0f%%)", ran.c_str(),
                  measured->fwd_s * 1e3, e.forward_s * 1e3,
                  100 * (e.forward_s / measured->fwd_s - 1));
      if (c.backward) {
        std::printf("; bwd %.1f ms (predicted %.1f, %+.0f%%)", measured->bwd_s * 1e3,
                    e.backward_s * 1e3, 100 * (e.backward_s / measured->bwd_s - 1));
      }
      std::printf("\n");
      j["measured_fwd_ms"] = measured->fwd_s * 1e3;
      j["predicted_fwd_ms"] = e.forward_s * 1e3;
      j["measured_bwd_ms"] = c.backward ? Json(measured->bwd_s * 1e3) : Json(nullptr);
      j["predicted_bwd_ms"] = e.backward_s * 1e3;
    }
  }
  std::fflush(stdout);
  return j;
}
Json PrintPlan(const Config& c, int world, const PlanCosts& costs, const RunResult& measured,
               const std::string& ran) {
  return PrintPlan(c, world, costs, &measured, ran);
}

// --simulate: the plan at a scale this machine need not have; no run.
absl::Status Simulate() {
  RETURN_IF_ERROR(CheckFlags());
  RETURN_IF_ERROR(CheckRange("--devices", absl::GetFlag(FLAGS_devices), 1, 1 << 20));
  Config c = ShapeFromFlags();
  ASSIGN_OR_RETURN(c.sharding, ParseSharding(absl::GetFlag(FLAGS_sharding)));
  const std::string dt = absl::GetFlag(FLAGS_dtype);
  c.dtype = dt == "fp32" ? DType::kFloat32 : dt == "fp16" ? DType::kFloat16 : DType::kBFloat16;
  ASSIGN_OR_RETURN(Mask mask, MaskFromFlags());
  c.mask = mask;
  RETURN_IF_ERROR(ValidateMask(c.mask, c.S));
  const PlanCosts costs = CostsFromFlags();
  if (!(costs.forward_flops_per_s > 0) || !(costs.bytes_per_s > 0)) {
    return absl::InvalidArgumentError("--simulate: give --tflops and --link-gbps (both > 0)");
  }
  if (costs.node_size > 0 && !(costs.node_bytes_per_s > 0)) {
    return absl::InvalidArgumentError("--node-size: give --node-gbps too");
  }
  const int world = absl::GetFlag(FLAGS_devices);
  std::printf("ringattn-bench --simulate: %d ranks, S=%lld B=%lld H=%lld Hkv=%lld D=%lld %s, mask %s, "
              "%s sharding (predicted, nothing run)\n",
              world, static_cast<long long>(c.S), static_cast<long long>(c.B),
              static_cast<long long>(c.H), static_cast<long long>(c.Hk),
              static_cast<long long>(c.D), DTypeName(c.dtype), c.mask.ToString().c_str(),
              ShardingName(c.sharding));
  const Json plan = PrintPlan(c, world, costs, nullptr, "");
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream f(path);
    f << plan.dump(1) << "\n";
    if (!f) return absl::UnavailableError(absl::StrCat("--json ", path, ": cannot write"));
  }
  return absl::OkStatus();
}

// One configuration, the flags as they are now: runs it and prints the
// summary on rank 0, and returns its figures there (null on other ranks).
absl::StatusOr<Json> RunPoint(bool ranks_given) {
  RETURN_IF_ERROR(CheckFlags());
  Config c = ShapeFromFlags();
  c.softcap = static_cast<float>(absl::GetFlag(FLAGS_softcap));
  c.iters = absl::GetFlag(FLAGS_iters);
  c.warmup = absl::GetFlag(FLAGS_warmup);
  const int ranks_flag = absl::GetFlag(FLAGS_ranks);
  auto backend = ParseBackendFlag(absl::GetFlag(FLAGS_backend));
  if (!backend.ok()) return backend.status();
  c.backend = *backend;
  c.deterministic = absl::GetFlag(FLAGS_deterministic);
  auto spec = ParseStrategySpec(absl::GetFlag(FLAGS_strategy));
  if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat("--", spec.status().message()));
  if (spec->strategy == Strategy::kLocal) {
    return absl::InvalidArgumentError("--strategy: local is one rank's own; use ring with --ranks 1");
  }
  c.strategy = spec->strategy;
  c.ulysses = spec->ulysses;
  const bool gpu = c.backend == Backend::kCuda;
  // The CPU tiles' vector code (RINGATTN_CPU_ISA), for the header and the
  // JSON: the gate keeps its CPU baselines per instruction set. Null on a GPU.
  const char* cpu_isa = nullptr;
  if (!gpu) {
    const absl::StatusOr<const cpu::TileOps*> ops = cpu::ChooseTileOps();
    if (ops.ok()) cpu_isa = (*ops)->isa;
  }
  auto comm_name = CommFor(c.backend, absl::GetFlag(FLAGS_comm));
  if (!comm_name.ok()) return comm_name.status();
  auto sharding = ParseSharding(absl::GetFlag(FLAGS_sharding));
  if (!sharding.ok()) return sharding.status();
  c.sharding = *sharding;
  auto dtype = DTypeFor(c.backend, absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return dtype.status();
  c.dtype = *dtype;
  if (const absl::Status usable = CheckBackendUsable(c.backend); !usable.ok()) return usable;
  auto mask = MaskFromFlags();
  if (!mask.ok()) return mask.status();
  auto docs = DocumentsFromFlag(c.S);
  if (!docs.ok()) return docs.status();
  c.mask = mask->WithDocuments(docs->data(), static_cast<int64_t>(docs->size()));
  auto blocks = BlockMaskFromFlags(c.S, c.H);  // outlives c.mask, which views its bits
  if (!blocks.ok()) return blocks.status();
  c.mask = blocks->Apply(c.mask);
  if (const absl::Status s = ValidateMask(c.mask, c.S); !s.ok()) return s;
  if (const absl::Status s = ValidateMaskHeads(c.mask, c.H); !s.ok()) return s;

  auto ring_ranks = MakeWorld(*comm_name, ranks_flag, ranks_given, gpu);
  if (!ring_ranks.ok()) return ring_ranks.status();
  comm::World& ranks = **ring_ranks;
  const int world = ranks.size();
  if (absl::Status s = CheckStrategy(*spec, world, c.H); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--strategy ", absl::GetFlag(FLAGS_strategy), ": ", s.message()));
  }
  const bool root = ranks.root();
  // One rank per process: the machine's cores are shared by the processes
  // on it, as by the local ranks of one process.
  const int cores = Cores();
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads == 0) threads = std::max(1, cores / world);
  if (!ranks.one_rank_per_process()) {
    if (const absl::Status s = CheckThreadsPerProcess(world, threads); !s.ok()) return s;
  }
  {
    // This process's share of the run, and the one-rank comparison run (on
    // rank 0 alone), before anything is allocated.
    const double ring_bytes = EstimatedBytes(c, world) / (ranks.one_rank_per_process() ? world : 1);
    const double compare_bytes = absl::GetFlag(FLAGS_compare) && ranks.root() ? EstimatedBytes(c, 1) : 0;
    if (const absl::Status s = CheckFitsInMemory(
            absl::StrCat("--seq ", c.S, " x --batch ", c.B, " x --heads ", c.H, " x --head-dim ", c.D),
            std::max(ring_bytes, compare_bytes));
        !s.ok()) {
      return s;
    }
  }
  // Visible pairs per head (a per-head block mask's are summed over its heads).
  const double pairs = static_cast<double>(VisiblePairs(c.S, c.mask)) /
                       static_cast<double>(c.mask.HasBlocks() ? c.mask.block_heads : 1);
  const double fwd_flop = 4.0 * c.B * c.H * c.D * pairs;
  // Balance of the visible work over the ranks (max / mean), this sharding
  // and plain zigzag.
  double imbalance = 1, zigzag_imbalance = 1;
  if (root) {
    auto mine = Layout::Create(c.sharding, c.S, world, c.stripe, c.mask);
    auto zigzag = Layout::Create(Sharding::kZigzag, c.S, world, 1, c.mask);
    if (!mine.ok()) return mine.status();
    if (!zigzag.ok()) return zigzag.status();
    imbalance = Imbalance(VisiblePairsPerRank(*mine, c.mask));
    zigzag_imbalance = Imbalance(VisiblePairsPerRank(*zigzag, c.mask));
  }
  const double bwd_flop = 2.5 * fwd_flop;

  const std::string strategy_name = StrategySpecName(c.strategy, c.ulysses, world);
  if (root) {
  std::printf("ringattn-bench: S=%lld B=%lld H=%lld Hkv=%lld D=%lld %s, mask %s, %s sharding, "
              "strategy %s\n",
              static_cast<long long>(c.S), static_cast<long long>(c.B),
              static_cast<long long>(c.H), static_cast<long long>(c.Hk),
              static_cast<long long>(c.D), DTypeName(c.dtype), c.mask.ToString().c_str(),
              ShardingName(c.sharding), strategy_name.c_str());
  if (gpu) {
    if (ranks.one_rank_per_process()) {
      std::printf("  backend cuda: %d processes, one GPU each; visible pairs %.3g\n", world, pairs);
    } else {
      std::printf("  backend cuda: %d virtual ranks on GPU %d; visible pairs %.3g\n", world,
                  ranks.device(), pairs);
    }
  } else {
    std::printf("  backend cpu: %d %s x %d threads on %d cores; CPU tiles: %s GEMMs, %s vector "
                "code; visible pairs %.3g\n",
                world, ranks.one_rank_per_process() ? "processes" : "local ranks", threads, cores,
                cpu::SmallGemm::Backend(), cpu_isa ? cpu_isa : "no", pairs);
  }
  if (c.mask.HasDocuments()) {
    int64_t longest = 0;
    for (int64_t d = 0; d < c.mask.num_docs; ++d) {
      longest = std::max(longest, c.mask.cu_seqlens[d + 1] - c.mask.cu_seqlens[d]);
    }
    std::printf("  documents: %lld, mean %.0f tokens, longest %lld; visible pairs %.3g of causal %.3g\n",
                static_cast<long long>(c.mask.num_docs), static_cast<double>(c.S) / c.mask.num_docs,
                static_cast<long long>(longest), pairs,
                static_cast<double>(VisiblePairs(c.S, Mask::Causal())));
  }
  if (c.mask.HasBlocks()) {
    const Mask without = c.mask.WithBlocks(nullptr, 0, 0, 0, 0);
    std::printf("  block mask %s in blocks of %lld: %.1f%% of block pairs on; visible pairs %.3g "
                "of %.3g without it\n",
                blocks->spec.c_str(), static_cast<long long>(blocks->size),
                100.0 * blocks->Density(), pairs, static_cast<double>(VisiblePairs(c.S, without)));
  }
  if (world > 1) {
    std::printf("  work imbalance (max/mean visible pairs per rank): %.3f %s; zigzag %.3f\n",
                imbalance, ShardingName(c.sharding), zigzag_imbalance);
  }
  std::printf("  communicator %s\n", ranks.Describe().c_str());
  std::fflush(stdout);
  }

  // The GEMM ceiling of the machine (cpu): what the ring's GFLOP/s on all
  // cores compares with. Measured before the runs (and once per process),
  // while no OpenMP thread of the kernels spins on a core.
  const bool ceiling_measured = root && !gpu && absl::GetFlag(FLAGS_ceiling);
  const double ceiling = ceiling_measured ? GemmCeilingGflops() : 0;

  std::vector<RunResult> runs;
  auto run = [&](int w, int t, const std::string& label) -> absl::Status {
    ASSIGN_OR_RETURN(auto one, MakeWorld(gpu ? "cuda-local" : "local", w, true, gpu, ranks.device()));
    ASSIGN_OR_RETURN(RunResult r, Run(c, *one, t, label));
    runs.push_back(r);
    return absl::OkStatus();
  };
  absl::Status s;
  {
    auto ring_run = Run(c, ranks, threads, absl::StrCat(strategy_name, ", W=", world));
    s = ring_run.status();
    if (s.ok()) runs.push_back(*ring_run);
  }
  if (!root) return s.ok() ? Json(nullptr) : absl::StatusOr<Json>(s);
  if (s.ok() && absl::GetFlag(FLAGS_compare) && world > 1) {
    if (gpu) {
      s = run(1, threads, "1 rank, same GPU");
    } else {
      s = run(1, threads, absl::StrCat("1 rank, ", threads, " thread(s)"));
      if (s.ok() && threads != cores) s = run(1, cores, absl::StrCat("1 rank, ", cores, " threads"));
    }
  }
  if (!s.ok()) return s;

  const RunResult& ring = runs[0];
  std::printf("\n  backend                   %s\n", ring.backend.c_str());
  std::printf("  communicator              %s\n", ranks.Describe().c_str());
  std::printf("\n  %-24s %12s %12s %14s %10s\n", "run", "fwd ms", "fwd GFLOP/s", "bwd ms",
              "bwd GFLOP/s");
  for (const RunResult& r : runs) {
    std::printf("  %-24s %12.1f %12.1f %14s %10s\n", r.label.c_str(), r.fwd_s * 1e3,
                fwd_flop / r.fwd_s * 1e-9,
                c.backward ? absl::StrFormat("%.1f", r.bwd_s * 1e3).c_str() : "-",
                c.backward ? absl::StrFormat("%.1f", bwd_flop / r.bwd_s * 1e-9).c_str() : "-");
  }
  const double fwd_gflops = fwd_flop / ring.fwd_s * 1e-9;
  const double bwd_gflops = c.backward ? bwd_flop / ring.bwd_s * 1e-9 : 0;
  std::printf("\n  GFLOP/s per rank          fwd %.1f%s\n", fwd_gflops / world,
              c.backward ? absl::StrFormat("   bwd %.1f", bwd_gflops / world).c_str() : "");
  double speed_f = 0, speed_b = 0;
  if (runs.size() > 1) {
    speed_f = runs[1].fwd_s / ring.fwd_s;
    speed_b = c.backward ? runs[1].bwd_s / ring.bwd_s : 0;
    if (gpu) {
      std::printf("  speedup vs 1 rank         fwd %.2fx%s   (1 rank on the same GPU; the %d virtual ranks share it: ideal 1)\n",
                  speed_f, c.backward ? absl::StrFormat("   bwd %.2fx", speed_b).c_str() : "",
                  world);
    } else {
      std::printf("  speedup vs 1 rank         fwd %.2fx%s   (1 rank with the share of one ring rank; ideal %d)\n",
                  speed_f, c.backward ? absl::StrFormat("   bwd %.2fx", speed_b).c_str() : "",
                  std::min(world, cores));
    }
  }
  std::printf("  overlap efficiency        fwd %.3f%s   (compute / wall, min over ranks)\n",
              ring.fwd_overlap, c.backward ? absl::StrFormat("   bwd %.3f", ring.bwd_overlap).c_str() : "");
  if (world > 1) {
    std::printf("  load balance              fwd compute per rank max/min %.2f\n",
                ring.fwd_compute_min > 0 ? ring.fwd_compute_max / ring.fwd_compute_min : 0.0);
    std::printf("  ring steps                %d of %d (%s)\n", ring.steps, world,
                ring.steps < world ? "the mask ended the ring early" : "full ring");
    std::printf("  bytes sent per rank       fwd %s%s\n", HumanBytes(ring.fwd_bytes).c_str(),
                c.backward ? absl::StrFormat("   bwd %s", HumanBytes(ring.bwd_bytes)).c_str() : "");
    std::printf("  rotation bandwidth        %.2f GB/s needed by fwd at this speed; %.2f GB/s link (isolated block transfer, all ranks at once)\n",
                ring.fwd_bytes / ring.fwd_s * 1e-9, ring.link_gbps);
    std::printf("  one-way link              %.2f GB/s (the same block, rank 0 -> rank 1 alone; compare ucx_perftest tag_bw)\n",
                ring.link_one_way_gbps);
  }
  if (ceiling_measured) {
    std::printf("  GEMM ceiling              %.1f GFLOP/s (the kernels' tile GEMM, libxsmm 64x64x128 "
                "in cache, all %d cores): fwd %.2f%s of it\n",
                ceiling, cores, fwd_gflops / ceiling,
                c.backward ? absl::StrFormat(", bwd %.2f", bwd_gflops / ceiling).c_str() : "");
  }
  // The planner's view of this configuration, with this run's measured
  // costs (the one-rank run's kernel rate, the isolated link) unless given.
  Json plan_json = nullptr;
  if (absl::GetFlag(FLAGS_plan)) {
    PlanCosts costs = CostsFromFlags();
    if (!(absl::GetFlag(FLAGS_tflops) > 0) && runs.size() > 1) {
      costs.forward_flops_per_s = fwd_flop / runs[1].fwd_s;
      costs.backward_flops_per_s = c.backward ? bwd_flop / runs[1].bwd_s : costs.forward_flops_per_s * 0.8;
    }
    if (!(absl::GetFlag(FLAGS_link_gbps) > 0) && ring.link_gbps > 0) {
      costs.bytes_per_s = ring.link_gbps * 1e9;
    }
    if (g_calibrated.has_value()) costs = *g_calibrated;  // --calibrate: what auto would use
    else costs.overlap = gpu;
    if (costs.forward_flops_per_s > 0 && costs.bytes_per_s > 0) {
      plan_json = PrintPlan(c, world, costs, ring, strategy_name);
    } else {
      std::printf("  plan                      needs --compare (the kernel rate) and W > 1, or "
                  "--tflops and --link-gbps\n");
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const int64_t peak_rss = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  std::printf("  memory per rank           %s (shard tensors + ring workspace); process peak RSS %s\n",
              HumanBytes(ring.rank_bytes).c_str(), HumanBytes(peak_rss).c_str());

  // The keys keep this order (runs diff line by line); null where a figure
  // was not measured (no backward, no 1-rank comparison, one rank) or is
  // not finite.
  Json j;
  auto if_measured = [](bool measured, double x) -> Json { return measured ? Json(x) : nullptr; };
  j["seq_len"] = c.S;
  j["batch"] = c.B;
  j["heads"] = c.H;
  j["kv_heads"] = c.Hk;
  j["head_dim"] = c.D;
  j["dtype"] = DTypeName(c.dtype);
  j["backend"] = BackendName(c.backend);
  j["backend_description"] = ring.backend;
  j["cpu_isa"] = cpu_isa ? Json(cpu_isa) : Json(nullptr);
  j["comm"] = *comm_name;
  j["deterministic"] = c.deterministic;
  j["ranks"] = world;
  j["threads_per_rank"] = threads;
  j["sharding"] = ShardingName(c.sharding);
  j["causal"] = c.mask.causal;
  j["window_left"] = c.mask.window_left;
  j["window_right"] = c.mask.window_right;
  j["mask"] = c.mask.ToString();
  j["documents"] = c.mask.num_docs;
  j["block_mask"] = blocks->spec;
  j["block_size"] = blocks->size;
  j["block_density"] = blocks->Density();
  j["work_imbalance"] = imbalance;
  j["zigzag_work_imbalance"] = zigzag_imbalance;
  j["fwd_ms"] = ring.fwd_s * 1e3;
  j["bwd_ms"] = if_measured(c.backward, ring.bwd_s * 1e3);
  j["fwd_gflops"] = fwd_gflops;
  j["bwd_gflops"] = if_measured(c.backward, bwd_gflops);
  j["fwd_gflops_per_rank"] = fwd_gflops / world;
  j["overlap_efficiency"] = ring.fwd_overlap;
  j["bwd_overlap_efficiency"] = if_measured(c.backward, ring.bwd_overlap);
  j["speedup_vs_1_rank"] = if_measured(runs.size() > 1, speed_f);
  j["bwd_speedup_vs_1_rank"] = if_measured(runs.size() > 1 && c.backward, speed_b);
  if (runs.size() > 2) j["single_rank_all_cores_fwd_gflops"] = fwd_flop / runs[2].fwd_s * 1e-9;
  j["ring_steps"] = ring.steps;
  j["fwd_bytes_sent_per_rank"] = ring.fwd_bytes;
  j["bwd_bytes_sent_per_rank"] = ring.bwd_bytes;
  j["link_gbps"] = ring.link_gbps;
  j["link_one_way_gbps"] = if_measured(world > 1, ring.link_one_way_gbps);
  j["gemm_ceiling_gflops"] = if_measured(ceiling_measured, ceiling);
  j["fwd_fraction_of_ceiling"] = if_measured(ceiling_measured, fwd_gflops / ceiling);
  j["bwd_fraction_of_ceiling"] = if_measured(ceiling_measured && c.backward, bwd_gflops / ceiling);
  j["rank_memory_bytes"] = ring.rank_bytes;
  j["peak_rss_bytes"] = peak_rss;
  j["strategy"] = strategy_name;
  j["plan"] = plan_json;
  if (g_calibrated.has_value()) {
    Json cal;
    cal["tflops"] = g_calibrated->forward_flops_per_s * 1e-12;
    cal["bwd_tflops"] = g_calibrated->backward_flops_per_s * 1e-12;
    cal["link_gbps"] = g_calibrated->bytes_per_s * 1e-9;
    cal["latency_us"] = g_calibrated->latency_s * 1e6;
    cal["overlap"] = g_calibrated->overlap;
    j["calibrated"] = cal;
    std::printf("  planner calibration       %.3g TFLOP/s fwd, %.3g bwd per rank; link %.3g GB/s, %.3g us\n",
                cal["tflops"].get<double>(), cal["bwd_tflops"].get<double>(),
                cal["link_gbps"].get<double>(), cal["latency_us"].get<double>());
  }
  return j;
}

// --sweep FLAG=V1,V2,... (repeatable): the axes of a sweep, taken out of
// argv before absl sees it (absl keeps only the last of a repeated flag).
struct Axis {
  std::string flag;  // as absl names it (underscores)
  std::vector<std::string> values;
};

absl::StatusOr<std::vector<Axis>> ExtractSweeps(int* argc, char** argv) {
  std::vector<Axis> axes;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string a = argv[i];
    std::string spec;
    if (a == "--sweep" || a == "-sweep") {
      if (i + 1 >= *argc) return absl::InvalidArgumentError("--sweep: expected FLAG=V1,V2,...");
      spec = argv[++i];
    } else if (absl::StartsWith(a, "--sweep=") || absl::StartsWith(a, "-sweep=")) {
      spec = a.substr(a.find('=') + 1);
    } else {
      argv[out++] = argv[i];
      continue;
    }
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sweep ", spec, ": expected FLAG=V1,V2,... (for example seq=4096,8192)"));
    }
    Axis axis;
    axis.flag = spec.substr(0, eq);
    absl::StrReplaceAll({{"-", "_"}}, &axis.flag);
    for (absl::string_view v : absl::StrSplit(spec.substr(eq + 1), ',')) {
      if (v.empty()) return absl::InvalidArgumentError(absl::StrCat("--sweep ", spec, ": an empty value"));
      axis.values.emplace_back(v);
    }
    static const char* const kNotSwept[] = {"sweep", "json", "csv", "plot", "json_format",
                                            "comm", "backend"};
    for (const char* f : kNotSwept) {
      if (axis.flag == f) {
        return absl::InvalidArgumentError(absl::StrCat("--sweep ", spec, ": --", f,
                                                       " is one per run, not an axis"));
      }
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(axis.flag);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--sweep ", spec, ": no flag --", axis.flag));
    }
    for (const Axis& other : axes) {
      if (other.flag == axis.flag) {
        return absl::InvalidArgumentError(absl::StrCat("--sweep: --", axis.flag, " swept twice"));
      }
    }
    // Every value must parse now, not at its point (the flag is restored).
    const std::string before = flag->CurrentValue();
    for (const std::string& v : axis.values) {
      std::string error;
      if (!flag->ParseFrom(v, &error)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--sweep ", spec, ": --", axis.flag, " ", v, ": ", error));
      }
    }
    std::string ignored;
    flag->ParseFrom(before, &ignored);
    axes.push_back(std::move(axis));
  }
  *argc = out;
  return axes;
}

// CSV of the points: one column per key of the first point, in its order;
// strings quoted, null empty.
std::string ToCsv(const std::vector<Json>& points) {
  std::string csv;
  if (points.empty()) return csv;
  std::vector<std::string> keys;
  for (auto it = points[0].begin(); it != points[0].end(); ++it) keys.push_back(it.key());
  csv += absl::StrJoin(keys, ",") + "\n";
  for (const Json& p : points) {
    std::vector<std::string> cells;
    for (const std::string& k : keys) {
      const Json& v = p.contains(k) ? p.at(k) : Json(nullptr);
      if (v.is_null()) {
        cells.emplace_back();
      } else if (v.is_string()) {
        std::string q = v.get<std::string>();
        absl::StrReplaceAll({{"\"", "\"\""}}, &q);
        cells.push_back(absl::StrCat("\"", q, "\""));
      } else {
        cells.push_back(v.dump());
      }
    }
    csv += absl::StrJoin(cells, ",") + "\n";
  }
  return csv;
}

// A rough time for one point (seconds at 50 GFLOP/s per core): only for the
// progress bar, whose ETA rescales the estimates by how they come true.
double EstimateSeconds() {
  const double S = static_cast<double>(absl::GetFlag(FLAGS_seq));
  const double flop = 4.0 * absl::GetFlag(FLAGS_batch) * absl::GetFlag(FLAGS_heads) *
                      absl::GetFlag(FLAGS_head_dim) * S * S * (absl::GetFlag(FLAGS_causal) ? 0.5 : 1) *
                      (absl::GetFlag(FLAGS_backward) ? 3.5 : 1.0) *
                      (absl::GetFlag(FLAGS_iters) + absl::GetFlag(FLAGS_warmup)) *
                      (absl::GetFlag(FLAGS_compare) ? 3 : 1);
  return flop / (50e9 * Cores()) + 0.5;
}

// A point's name in Google Benchmark's style: "ringattn/fwd/seq:4096/ranks:2"
// (its swept flags), or the configuration for a single run.
std::string PointName(const Json& r, const char* direction) {
  std::string name = absl::StrCat("ringattn/", direction);
  if (r.contains("sweep")) {
    for (auto it = r["sweep"].begin(); it != r["sweep"].end(); ++it) {
      absl::StrAppend(&name, "/", it.key(), ":", it.value().get<std::string>());
    }
  } else {
    absl::StrAppend(&name, "/seq:", r["seq_len"].dump(), "/ranks:", r["ranks"].dump());
  }
  return name;
}

// Google Benchmark's JSON (what its tools/compare.py reads): one benchmark
// per point and direction, the median time as real_time in ms, GFLOP/s as
// a counter.
Json GoogleBenchmarkJson(const std::vector<Json>& results) {
  Json doc;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  Json ctx;
  ctx["date"] = absl::FormatTime("%Y-%m-%dT%H:%M:%S%Ez", absl::Now(), absl::LocalTimeZone());
  ctx["host_name"] = host;
  ctx["executable"] = "ringattn-bench";
  ctx["num_cpus"] = Cores();
  ctx["mhz_per_cpu"] = 0;
  ctx["cpu_scaling_enabled"] = false;
  ctx["caches"] = Json::array();
  ctx["load_avg"] = Json::array();
  ctx["library_build_type"] = "release";
  doc["context"] = ctx;
  Json list = Json::array();
  int family = 0;
  for (const Json& r : results) {
    for (const char* dir : {"fwd", "bwd"}) {
      const Json& ms = r[absl::StrCat(dir, "_ms")];
      if (ms.is_null()) continue;
      Json b;
      b["name"] = PointName(r, dir);
      b["family_index"] = family++;
      b["per_family_instance_index"] = 0;
      b["run_name"] = b["name"];
      b["run_type"] = "iteration";
      b["repetitions"] = 1;
      b["repetition_index"] = 0;
      b["threads"] = 1;
      b["iterations"] = 1;
      b["real_time"] = ms;
      b["cpu_time"] = ms;
      b["time_unit"] = "ms";
      b["GFLOP/s"] = r[absl::StrCat(dir, "_gflops")];
      list.push_back(b);
    }
  }
  doc["benchmarks"] = list;
  return doc;
}

// The SVG charts of a sweep (tools/svg.h), by file name: against --seq,
// GFLOP/s and the fraction of the GEMM ceiling; against --ranks, the
// speedup over one rank with the ideal line; overlap efficiency against the
// first axis. One line per combination of the other axes.
std::vector<std::pair<std::string, std::string>> SweepCharts(const std::vector<Axis>& axes,
                                                             const std::vector<Json>& results) {
  std::vector<std::pair<std::string, std::string>> charts;
  auto number = [](const Json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  // Lines over axis `x`: points grouped by the other axes' values.
  // A point's line: its values of the axes other than x ("ranks=2 dtype=bf16").
  auto group_of = [&](const Json& r, const std::string& x) {
    std::string g;
    for (const Axis& a : axes) {
      if (a.flag != x) {
        absl::StrAppend(&g, g.empty() ? "" : " ", a.flag, "=", r["sweep"][a.flag].get<std::string>());
      }
    }
    return g;
  };
  auto lines = [&](const std::string& x, const std::vector<std::pair<std::string, std::string>>& ys) {
    std::vector<Series> out;
    std::vector<std::string> groups;
    for (const Json& r : results) {
      const std::string g = group_of(r, x);
      if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
    }
    for (const auto& [key, what] : ys) {
      for (const std::string& g : groups) {
        Series s;
        s.name = absl::StrCat(what, g.empty() ? "" : ", ", g);
        s.dashed = key.rfind("bwd", 0) == 0;
        for (const Json& r : results) {
          double xv = 0;
          if (group_of(r, x) != g || !absl::SimpleAtod(r["sweep"][x].get<std::string>(), &xv)) continue;
          double yv = number(r[key]);
          // One rank against itself: a speedup of 1 by definition (null in the JSON).
          if (x == "ranks" && xv == 1 && key.find("speedup") != std::string::npos) yv = 1;
          if (!std::isfinite(yv)) continue;
          s.x.push_back(xv);
          s.y.push_back(yv);
        }
        if (!s.x.empty()) out.push_back(std::move(s));
      }
    }
    return out;
  };
  const auto has = [&](const std::string& flag) {
    return std::any_of(axes.begin(), axes.end(), [&](const Axis& a) { return a.flag == flag; });
  };
  if (has("seq")) {
    ChartSpec c;
    c.title = "Throughput against sequence length";
    c.subtitle = "visible-pair GFLOP/s of the ring on all ranks (fwd solid, bwd dashed)";
    c.x_label = "sequence length (tokens)";
    c.y_label = "GFLOP/s";
    c.log_x = c.binary_x = true;
    c.series = lines("seq", {{"fwd_gflops", "fwd"}, {"bwd_gflops", "bwd"}});
    if (!c.series.empty()) charts.emplace_back("gflops_vs_seq.svg", LineChart(c));
    c.title = "Fraction of the GEMM ceiling against sequence length";
    c.subtitle = "ring GFLOP/s over the kernels' tile GEMM on all cores, measured in the same run";
    c.y_label = "fraction of the ceiling";
    c.series = lines("seq", {{"fwd_fraction_of_ceiling", "fwd"}, {"bwd_fraction_of_ceiling", "bwd"}});
    if (!c.series.empty()) charts.emplace_back("ceiling_fraction_vs_seq.svg", LineChart(c));
  }
  if (has("ranks")) {
    ChartSpec c;
    c.title = "Speedup against ranks";
    c.subtitle = "over one rank with the share of one ring rank (fwd solid, bwd dashed); grey: ideal";
    c.x_label = "ranks W";
    c.y_label = "speedup";
    c.series = lines("ranks", {{"speedup_vs_1_rank", "fwd"}, {"bwd_speedup_vs_1_rank", "bwd"}});
    Series ideal;
    ideal.name = "ideal (min(W, cores))";
    ideal.color = "#999999";
    ideal.dashed = true;
    ideal.points = false;
    for (const std::string& v : std::find_if(axes.begin(), axes.end(),
                                             [](const Axis& a) { return a.flag == "ranks"; })->values) {
      double w = 0;
      if (!absl::SimpleAtod(v, &w)) continue;
      ideal.x.push_back(w);
      ideal.y.push_back(std::min<double>(w, Cores()));
    }
    if (!c.series.empty()) {
      c.series.push_back(ideal);
      charts.emplace_back("speedup_vs_ranks.svg", LineChart(c));
    }
  }
  {
    const std::string x = axes[0].flag;
    ChartSpec c;
    c.title = absl::StrCat("Overlap efficiency against --", x);
    c.subtitle = "compute / wall, the slowest rank (fwd solid, bwd dashed): 1 = rotation hidden";
    c.x_label = x;
    c.y_label = "overlap efficiency";
    c.log_x = c.binary_x = x == "seq";
    c.series = lines(x, {{"overlap_efficiency", "fwd"}, {"bwd_overlap_efficiency", "bwd"}});
    if (!c.series.empty()) charts.emplace_back(absl::StrCat("overlap_vs_", x, ".svg"), LineChart(c));
  }
  return charts;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage("ringattn-bench: long-context ring attention benchmark (see README)");
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "ringattn-bench: %s\n", std::string(s.message()).c_str());
    return 2;
  };
  auto axes = ExtractSweeps(&argc, argv);
  if (!axes.ok()) return fail(axes.status());
  auto line = ParseCommandLine(argc, argv);
  if (!line.ok()) return fail(line.status());
  if (absl::GetFlag(FLAGS_simulate)) {
    const absl::Status s = Simulate();
    return s.ok() ? 0 : fail(s);
  }
  // The outputs: an output that cannot be written is an error now, not
  // after the run.
  const std::string json_path = absl::GetFlag(FLAGS_json), csv_path = absl::GetFlag(FLAGS_csv),
                    plot_dir = absl::GetFlag(FLAGS_plot), format = absl::GetFlag(FLAGS_json_format);
  if (format != "ringattn" && format != "gbench") {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("--json-format: expected ringattn or gbench, got ", format)));
  }
  if (!json_path.empty()) {
    if (const absl::Status s = CheckCanCreate("--json", json_path); !s.ok()) return fail(s);
  }
  if (!csv_path.empty()) {
    if (const absl::Status s = CheckCanCreate("--csv", csv_path); !s.ok()) return fail(s);
  }
  if (!plot_dir.empty()) {
    if (axes->empty()) {
      return fail(absl::InvalidArgumentError("--plot: charts are of a sweep; add --sweep FLAG=V1,V2,..."));
    }
    if (const absl::Status s = PrepareOutDir("--plot", plot_dir); !s.ok()) return fail(s);
  }

  // The points: the cartesian product of the axes, the last axis fastest.
  std::vector<std::vector<std::string>> points = {{}};
  for (const Axis& axis : *axes) {
    std::vector<std::vector<std::string>> next;
    for (const auto& p : points)
      for (const std::string& v : axis.values) {
        next.push_back(p);
        next.back().push_back(v);
      }
    points = std::move(next);
  }
  bool ranks_given = line->ranks_given;
  for (const Axis& axis : *axes) ranks_given = ranks_given || axis.flag == "ranks";
  auto set_point = [&](size_t i) {
    std::string label;
    for (size_t a = 0; a < axes->size(); ++a) {
      std::string ignored;  // every value parsed in ExtractSweeps
      absl::FindCommandLineFlag((*axes)[a].flag)->ParseFrom(points[i][a], &ignored);
      absl::StrAppend(&label, a ? " " : "", (*axes)[a].flag, "=", points[i][a]);
    }
    return label;
  };
  Progress progress(stderr, /*lines_off_terminal=*/false);
  g_progress = &progress;
  std::vector<double> estimates;
  for (size_t i = 0; i < points.size(); ++i) {
    set_point(i);
    estimates.push_back(EstimateSeconds());
    progress.AddWork(estimates.back());
  }
  std::vector<Json> results;
  for (size_t i = 0; i < points.size(); ++i) {
    const std::string label = set_point(i);
    if (!axes->empty()) {
      g_point = absl::StrCat("point ", i + 1, "/", points.size(), " ", label, ": ");
      progress.Note(absl::StrCat("== sweep point ", i + 1, " of ", points.size(), ": ", label));
      std::printf("%s== sweep point %zu of %zu: %s\n", i ? "\n" : "", i + 1, points.size(),
                  label.c_str());
      std::fflush(stdout);
    }
    progress.Begin(absl::StrCat(g_point, "starting"), estimates[i]);
    absl::StatusOr<Json> r = RunPoint(ranks_given);
    progress.End();
    if (!r.ok()) {
      progress.Finish();
      return fail(axes->empty() ? r.status()
                                : absl::Status(r.status().code(),
                                               absl::StrCat("sweep point ", label, ": ",
                                                            r.status().message())));
    }
    if (r->is_null()) continue;  // a rank other than 0 of a launched world
    if (!axes->empty()) {
      Json swept;
      for (size_t a = 0; a < axes->size(); ++a) swept[(*axes)[a].flag] = points[i][a];
      (*r)["sweep"] = swept;
    }
    results.push_back(*std::move(r));
  }
  progress.Finish();
  g_progress = nullptr;
  if (results.empty()) return 0;

  OutputFiles files;
  absl::Status written;
  if (!json_path.empty()) {
    Json doc;
    if (format == "gbench") {
      doc = GoogleBenchmarkJson(results);
    } else if (axes->empty()) {
      doc = results[0];
    } else {
      doc = Json::array();
      for (const Json& r : results) doc.push_back(r);
    }
    written.Update(files.AddText(
        json_path, doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n"));
  }
  if (!csv_path.empty()) written.Update(files.AddText(csv_path, ToCsv(results)));
  if (!plot_dir.empty()) {
    for (const auto& [name, svg] : SweepCharts(*axes, results)) {
      written.Update(files.AddText(plot_dir + "/" + name, svg));
    }
  }
  if (written.ok()) written = files.Commit();
  if (!written.ok()) return fail(written);
  return 0;
}

}  // namespace
}  // namespace ringattn::tools

int main(int argc, char** argv) { return ringattn::tools::Main(argc, argv); }
