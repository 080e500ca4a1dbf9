// ringattn-run: the file-level contract. Reads Q [B,S,H,D], K and V
// [B,S,Hkv,D] (and optionally dO) from little-endian float32 .npy files,
// runs ringattn on one or more local ranks, and writes out.npy [B,S,H,D],
// lse.npy [B,H,S] (and dq.npy, dk.npy, dv.npy) as float32. Every input is
// checked before anything runs; a bad file is refused with a message naming
// it and nothing is written.
//
// --comm local runs W ranks as threads; --comm ucx runs one rank per
// process under mpirun / srun: every process reads its own shard's rows of
// the inputs, and rank 0 gathers the outputs and writes the files (bitwise
// the same as --comm local with the same W and sharding). Each element is
// held once (see "The data path" below): peak memory about 1.2x the inputs
// plus the outputs, and --timing shows the kernels' share of the run.
//
// --backend cuda runs the W ranks on GPU 0 (--comm cuda-local, the default
// there): each rank's shards go to the device, the results come back, and
// the same files are written. The CUDA kernels take --dtype bf16 or fp16.
// --backend cuda --comm nccl runs one rank per process and GPU under
// mpirun / srun, gathering to rank 0 like --comm ucx.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/ringattn.h"
#include "runtime/validate.h"
#include "tools/cli.h"
#include "tools/flags.h"
#include "tools/mask_flags.h"
#include "tools/npy.h"
#include "tools/gather.h"
#include "tools/placement.h"

ABSL_FLAG(std::string, q, "", "query .npy, float32 [B, S, H, D]");
ABSL_FLAG(std::string, k, "", "key .npy, float32 [B, S, Hkv, D]");
ABSL_FLAG(std::string, v, "", "value .npy, float32 [B, S, Hkv, D]");
ABSL_FLAG(std::string, dout, "", "optional output gradient .npy [B, S, H, D]: also writes dq, dk, dv");
ABSL_FLAG(std::string, out_dir, "", "(--out-dir) directory for the output .npy files");
ABSL_FLAG(double, softcap, 0.0, "score softcap (0 = off)");
ABSL_FLAG(double, scale, 0.0, "softmax scale (0 = 1/sqrt(D))");
ABSL_FLAG(std::string, dtype, "fp32",
          "storage dtype for the computation: fp32 | bf16 (cpu); bf16 | fp16 (cuda)");
ABSL_FLAG(std::string, backend, "cpu", "kernel backend: cpu | cuda (W ranks on GPU 0)");
ABSL_FLAG(bool, deterministic, false, "cuda: bitwise reproducible backward (slower dQ pass)");
ABSL_FLAG(std::string, comm, "",
          "communicator: local | cuda-local | ucx (one rank per process, under mpirun/srun) | "
          "nccl (--backend cuda, one process per GPU); "
          "default local for --backend cpu, cuda-local for --backend cuda");
ABSL_FLAG(int, ranks, 1,
          "ring size W (local ranks; with --comm ucx or nccl the launched world size)");
ABSL_FLAG(std::string, sharding, "contiguous",
          "contiguous | zigzag | striped | balanced (equal visible work; for --cu-seqlens)");
ABSL_FLAG(std::string, cu_seqlens, "",
          "(--cu-seqlens) packed documents: a 1-D int32 or int64 .npy [0, e1, ..., S] of "
          "document boundaries; a query sees only keys of its own document");
ABSL_FLAG(int64_t, stripe, 1, "tokens per stripe for --sharding striped");
ABSL_FLAG(std::string, strategy, "ring",
          "ring | allgather | ulysses | hybrid:UxR | auto (docs/PLANNER.md; one rank always "
          "runs the kernels in place)");
ABSL_FLAG(int, threads, 0, "threads per rank (0 = cores / W)");
ABSL_FLAG(bool, timing, false,
          "print the kernels' time (forward, backward) against the whole run's, on stderr");

namespace ringattn::tools {
namespace {

// The data path holds each element once: a rank's rows are read from the
// .npy files straight into its shard buffers (in the storage dtype), the
// kernels write the outputs into per-rank shards, and the output files are
// written from those shards in chunks. No full-size copy of any tensor, and
// no zero-fill of a buffer that is about to be written whole.

// A buffer that is written whole before it is read: not zero-filled.
struct Buffer {
  std::unique_ptr<uint8_t[]> data;
  int64_t bytes = 0;
  static Buffer Uninitialized(int64_t bytes) {
    return Buffer{std::unique_ptr<uint8_t[]>(new uint8_t[std::max<int64_t>(bytes, 1)]), bytes};
  }
};

// A run of consecutive global positions in a shard's local order.
struct Run {
  int64_t local, global, length;
};
std::vector<Run> RunsOf(const std::vector<int64_t>& pos) {
  std::vector<Run> runs;
  for (int64_t i = 0; i < static_cast<int64_t>(pos.size());) {
    int64_t j = i + 1;
    while (j < static_cast<int64_t>(pos.size()) && pos[j] == pos[j - 1] + 1) ++j;
    runs.push_back({i, pos[i], j - i});
    i = j;
  }
  return runs;
}

// The rows of `runs` of a [B, S, heads, D] file (row_elems = heads * D
// floats), into `dst` [B, S_r, heads, D] in the storage dtype `t`.
absl::Status ReadShard(const NpyFloatFile& f, const std::vector<Run>& runs, int64_t B, int64_t S,
                       int64_t Sr, int64_t row_elems, DType t, uint8_t* dst) {
  const int64_t es = DTypeSize(t);
  std::vector<float> chunk;
  constexpr int64_t kChunk = 1 << 16;  // elements converted at a time (16-bit storage)
  for (int64_t b = 0; b < B; ++b) {
    for (const Run& run : runs) {
      const int64_t first = (b * S + run.global) * row_elems, n = run.length * row_elems;
      uint8_t* out = dst + (b * Sr + run.local) * row_elems * es;
      if (t == DType::kFloat32) {
        RETURN_IF_ERROR(f.ReadElements(first, n, reinterpret_cast<float*>(out)));
        continue;
      }
      chunk.resize(static_cast<size_t>(std::min(n, kChunk)));
      for (int64_t i = 0; i < n; i += kChunk) {
        const int64_t m = std::min(kChunk, n - i);
        RETURN_IF_ERROR(f.ReadElements(first + i, m, chunk.data()));
        EncodeFloats(chunk.data(), m, t, out + i * es);
      }
    }
  }
  return absl::OkStatus();
}

// Every rank's output shards, by rank (rank 0 of a launched world receives
// the others').
struct Shards {
  std::vector<int64_t> pos;  // global positions, local order
  Buffer out, dq, dk, dv;    // storage dtype
  std::vector<float> lse;    // [B, H, S_r]
};

// Where each global position lives: (rank, local index).
struct Owners {
  std::vector<int32_t> rank;
  std::vector<int64_t> local;
  Owners(const std::vector<Shards>& shards, int64_t S) : rank(S, -1), local(S, -1) {
    for (size_t r = 0; r < shards.size(); ++r) {
      for (size_t i = 0; i < shards[r].pos.size(); ++i) {
        rank[shards[r].pos[i]] = static_cast<int32_t>(r);
        local[shards[r].pos[i]] = static_cast<int64_t>(i);
      }
    }
  }
};

// out, dq, dk or dv [B, S, heads, D] as float32 from the shards: elements
// [first, first + count) of the full tensor into dst.
void Assemble(const std::vector<Shards>& shards, const Owners& own, Buffer Shards::*which,
              int64_t S, int64_t row_elems, DType t, int64_t first, int64_t count, float* dst) {
  const int64_t es = DTypeSize(t);
  for (int64_t i = first; i < first + count;) {
    const int64_t row = i / row_elems, in_row = i % row_elems, b = row / S, s = row % S;
    const int64_t take = std::min(row_elems - in_row, first + count - i);
    const Shards& sh = shards[own.rank[s]];
    const int64_t Sr = static_cast<int64_t>(sh.pos.size());
    const uint8_t* src = (sh.*which).data.get() + ((b * Sr + own.local[s]) * row_elems + in_row) * es;
    DecodeFloats(src, take, t, dst + (i - first));
    i += take;
  }
}

absl::Status Main(bool ranks_given, std::chrono::steady_clock::time_point start) {
  const std::string qp = absl::GetFlag(FLAGS_q), kp = absl::GetFlag(FLAGS_k),
                    vp = absl::GetFlag(FLAGS_v), dp = absl::GetFlag(FLAGS_dout),
                    out_dir = absl::GetFlag(FLAGS_out_dir);
  if (qp.empty() || kp.empty() || vp.empty()) return absl::InvalidArgumentError("--q, --k and --v are required");
  if (out_dir.empty()) return absl::InvalidArgumentError("--out-dir is required");
  struct stat st;
  if (stat(out_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("--out-dir ", out_dir, ": not a directory"));
  }
  RETURN_IF_ERROR(CheckCanCreate("--out-dir", out_dir + "/out.npy"));
  ASSIGN_OR_RETURN(const Backend backend, ParseBackendFlag(absl::GetFlag(FLAGS_backend)));
  ASSIGN_OR_RETURN(const std::string comm_name, CommFor(backend, absl::GetFlag(FLAGS_comm)));
  ASSIGN_OR_RETURN(const DType dtype, DTypeFor(backend, absl::GetFlag(FLAGS_dtype)));
  RETURN_IF_ERROR(CheckBackendUsable(backend));
  const int ranks_flag = absl::GetFlag(FLAGS_ranks);
  RETURN_IF_ERROR(CheckRange("--ranks", ranks_flag, 1, kMaxRanks));
  RETURN_IF_ERROR(CheckRange("--threads", absl::GetFlag(FLAGS_threads), 0, RingOptions::kMaxThreads));
  RETURN_IF_ERROR(CheckRange("--stripe", absl::GetFlag(FLAGS_stripe), 1, int64_t{1} << 48));
  RETURN_IF_ERROR(CheckRealRange("--softcap", absl::GetFlag(FLAGS_softcap), 0.0, 1e30));
  RETURN_IF_ERROR(CheckRealRange("--scale", absl::GetFlag(FLAGS_scale), 0.0, 1e30));
  ASSIGN_OR_RETURN(const Sharding sharding, ParseSharding(absl::GetFlag(FLAGS_sharding)));
  ASSIGN_OR_RETURN(Mask mask, MaskFromFlags());

  // The memory the run will hold, from the inputs' sizes, before reading
  // them: each rank's shards of the inputs (their size in fp32, at most),
  // as much again for the outputs and gradients, and the ring's workspace
  // (about 2x the input files; an estimate from below).
  {
    double input_bytes = 0;
    for (const std::string& p : {qp, kp, vp, dp}) {
      if (!p.empty() && stat(p.c_str(), &st) == 0) input_bytes += static_cast<double>(st.st_size);
    }
    RETURN_IF_ERROR(CheckFitsInMemory(
        absl::StrCat("the inputs (", HumanBytes(input_bytes), " of .npy files)"), 2 * input_bytes));
  }
  // Open and check every input before computing anything (each rank then
  // reads its own rows).
  ASSIGN_OR_RETURN(const NpyFloatFile q, NpyFloatFile::Open(qp));
  if (q.shape().size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(qp, ": expected 4 dims [B, S, H, D], got shape ", ShapeToString(q.shape())));
  }
  const int64_t B = q.shape()[0], S = q.shape()[1], H = q.shape()[2], D = q.shape()[3];
  ASSIGN_OR_RETURN(const NpyFloatFile k, NpyFloatFile::Open(kp));
  RETURN_IF_ERROR(CheckShape(k.shape(), kp, {B, S, -1, D}));
  const int64_t Hk = k.shape()[2];
  ASSIGN_OR_RETURN(const NpyFloatFile v, NpyFloatFile::Open(vp));
  RETURN_IF_ERROR(CheckShape(v.shape(), vp, {B, S, Hk, D}));
  std::optional<NpyFloatFile> dout;
  const bool backward = !dp.empty();
  if (backward) {
    ASSIGN_OR_RETURN(dout, NpyFloatFile::Open(dp));
    RETURN_IF_ERROR(CheckShape(dout->shape(), dp, {B, S, H, D}));
  }

  // Packed documents: read and checked against S before anything runs.
  NpyIntArray cu_seqlens;
  if (const std::string cp = absl::GetFlag(FLAGS_cu_seqlens); !cp.empty()) {
    ASSIGN_OR_RETURN(cu_seqlens, ReadNpyInt(cp));
    if (cu_seqlens.shape.size() != 1 || cu_seqlens.shape[0] < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cu-seqlens ", cp, ": expected a 1-D array of at least 2 boundaries [0, ..., S], "
          "got shape ", ShapeToString(cu_seqlens.shape)));
    }
    mask = mask.WithDocuments(cu_seqlens.data.data(), cu_seqlens.shape[0]);
    if (absl::Status s = ValidateMask(mask, S); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--cu-seqlens ", cp, ": ", s.message()));
    }
  }
  if (absl::Status s = ValidateMask(mask, S); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--mask: ", s.message()));
  }
  // A block mask: read, shaped and checked against S and H the same way.
  ASSIGN_OR_RETURN(const BlockMaskFlags blocks, BlockMaskFromFlags(S, H));
  mask = blocks.Apply(mask);
  if (absl::Status s = ValidateMask(mask, S); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--block-mask ", blocks.spec, ": ", s.message()));
  }

  RingOptions opt;
  opt.seqlen = S;
  opt.sharding = sharding;
  opt.stripe = absl::GetFlag(FLAGS_stripe);
  opt.mask = mask;
  opt.softcap = static_cast<float>(absl::GetFlag(FLAGS_softcap));
  if (absl::GetFlag(FLAGS_scale) != 0.0) opt.scale = static_cast<float>(absl::GetFlag(FLAGS_scale));
  opt.dtype = dtype;
  opt.num_threads = absl::GetFlag(FLAGS_threads);
  opt.backend = backend;
  opt.deterministic = absl::GetFlag(FLAGS_deterministic);
  absl::StatusOr<StrategySpec> spec_or = ParseStrategySpec(absl::GetFlag(FLAGS_strategy));
  if (!spec_or.ok()) return absl::InvalidArgumentError(absl::StrCat("--", spec_or.status().message()));
  const StrategySpec spec = *spec_or;
  opt.strategy = spec.strategy;
  opt.ulysses = spec.ulysses;

  const int64_t es = DTypeSize(dtype);
  ASSIGN_OR_RETURN(auto ranks,
                   MakeWorld(comm_name, ranks_flag, ranks_given, backend == Backend::kCuda));
  opt.device_index = ranks->device();  // nccl, staged ucx: this process's GPU
  ASSIGN_OR_RETURN(const absl::Duration timeout, comm::DefaultTimeout());
  // One rank: the local strategy, the kernels on the shards in place (the
  // ring of one rank would pack K and V into its workspace first).
  if (ranks->size() == 1) {
    opt.strategy = Strategy::kLocal;
    opt.ulysses = 0;
  } else if (absl::Status c = CheckStrategy(spec, ranks->size(), H); !c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--strategy ", absl::GetFlag(FLAGS_strategy), ": ", c.message()));
  }
  std::vector<Shards> shards(ranks->size());
  double call_seconds[2] = {0, 0};  // rank 0's forward and backward calls
  RETURN_IF_ERROR(ranks->Run([&](comm::Communicator& cm) -> absl::Status {
        const int r = cm.Rank();
        ASSIGN_OR_RETURN(auto ring, RingAttention::Create(&cm, opt));
        const Layout& layout = ring->layout();
        const int64_t Sr = ring->ShardLength();
        Shards& mine = shards[r];
        mine.pos = layout.Positions(r);
        const std::vector<Run> runs = RunsOf(mine.pos);
        const int64_t nq = B * Sr * H * D * es, nk = B * Sr * Hk * D * es;
        Buffer qr = Buffer::Uninitialized(nq), kr = Buffer::Uninitialized(nk),
               vr = Buffer::Uninitialized(nk), dor;
        RETURN_IF_ERROR(ReadShard(q, runs, B, S, Sr, H * D, dtype, qr.data.get()));
        RETURN_IF_ERROR(ReadShard(k, runs, B, S, Sr, Hk * D, dtype, kr.data.get()));
        RETURN_IF_ERROR(ReadShard(v, runs, B, S, Sr, Hk * D, dtype, vr.data.get()));
        mine.out = Buffer::Uninitialized(nq);
        mine.lse.resize(B * H * Sr);
        if (backward) {
          dor = Buffer::Uninitialized(nq);
          RETURN_IF_ERROR(ReadShard(*dout, runs, B, S, Sr, H * D, dtype, dor.data.get()));
          mine.dq = Buffer::Uninitialized(nq);
          mine.dk = Buffer::Uninitialized(nk);
          mine.dv = Buffer::Uninitialized(nk);
        }
        // The shards where the backend reads them (device copies on cuda).
        Placement place(backend);
        auto V = [&](Buffer& x, int64_t heads, bool input) {
          return place.Place(x.data.get(), x.bytes, dtype, {B, Sr, heads, D}, input);
        };
        ASSIGN_OR_RETURN(const TensorView qv, V(qr, H, true));
        ASSIGN_OR_RETURN(const TensorView kv, V(kr, Hk, true));
        ASSIGN_OR_RETURN(const TensorView vv, V(vr, Hk, true));
        ASSIGN_OR_RETURN(const TensorView ov, V(mine.out, H, false));
        ASSIGN_OR_RETURN(const TensorView lv, place.Place(mine.lse, DType::kFloat32, {B, H, Sr}, false));
        RETURN_IF_ERROR(ring->Forward(qv, kv, vv, ov, lv));
        if (r == 0) call_seconds[0] = ring->LastStats().wall_seconds;
        if (backward) {
          ASSIGN_OR_RETURN(const TensorView dov, V(dor, H, true));
          ASSIGN_OR_RETURN(const TensorView dqv, V(mine.dq, H, false));
          ASSIGN_OR_RETURN(const TensorView dkv, V(mine.dk, Hk, false));
          ASSIGN_OR_RETURN(const TensorView dvv, V(mine.dv, Hk, false));
          RETURN_IF_ERROR(ring->Backward(qv, kv, vv, ov, lv, dov, dqv, dkv, dvv));
          if (r == 0) call_seconds[1] = ring->LastStats().wall_seconds;
        }
        RETURN_IF_ERROR(place.Download());
        if (!ranks->one_rank_per_process()) return absl::OkStatus();
        // One rank per process: the other ranks' shards come to rank 0.
        struct Part {
          uint8_t* mine;
          int64_t row_bytes;  // per token row (lse: per (b, h) row of 4 bytes)
          int64_t rows;       // per position: B (tensors) or B * H (lse)
          Buffer Shards::*buffer;  // null: lse
        };
        std::vector<Part> parts = {{mine.out.data.get(), H * D * es, B, &Shards::out},
                                   {reinterpret_cast<uint8_t*>(mine.lse.data()), 4, B * H, nullptr}};
        if (backward) {
          parts.push_back({mine.dq.data.get(), H * D * es, B, &Shards::dq});
          parts.push_back({mine.dk.data.get(), Hk * D * es, B, &Shards::dk});
          parts.push_back({mine.dv.data.get(), Hk * D * es, B, &Shards::dv});
        }
        for (int from = 0; from < cm.Size(); ++from) shards[from].pos = layout.Positions(from);
        for (size_t i = 0; i < parts.size(); ++i) {
          const Part& p = parts[i];
          auto bytes_of = [&](int rank) { return p.rows * layout.ShardLength(rank) * p.row_bytes; };
          RETURN_IF_ERROR(GatherToRoot(
              cm, static_cast<int>(i), p.mine, bytes_of,
              [&](int rank) -> void* {
                Shards& theirs = shards[rank];
                if (p.buffer == nullptr) {
                  theirs.lse.resize(bytes_of(rank) / 4);
                  return theirs.lse.data();
                }
                theirs.*p.buffer = Buffer::Uninitialized(bytes_of(rank));
                return (theirs.*p.buffer).data.get();
              },
              timeout));
        }
        return absl::OkStatus();
      }));
  if (!ranks->root()) return absl::OkStatus();

  // All or nothing: the files of this run replace the earlier set only when
  // every one is written, and the gradients of an earlier run with --dout
  // do not survive beside a forward-only set. Each file is assembled from
  // the shards a chunk at a time.
  const Owners own(shards, S);
  const std::string dir = out_dir + "/";
  OutputFiles files;
  auto tensor = [&](const std::string& name, Buffer Shards::*which, int64_t heads) {
    return files.AddNpyFrom(dir + name, {B, S, heads, D}, [&](int64_t first, int64_t n, float* dst) {
      Assemble(shards, own, which, S, heads * D, dtype, first, n, dst);
    });
  };
  RETURN_IF_ERROR(tensor("out.npy", &Shards::out, H));
  RETURN_IF_ERROR(files.AddNpyFrom(dir + "lse.npy", {B, H, S}, [&](int64_t first, int64_t n, float* dst) {
    for (int64_t i = first; i < first + n; ++i) {
      const int64_t bh = i / S, s = i % S;
      const Shards& sh = shards[own.rank[s]];
      dst[i - first] = sh.lse[bh * static_cast<int64_t>(sh.pos.size()) + own.local[s]];
    }
  }));
  std::vector<std::string> stale;
  if (!backward) stale = {dir + "dq.npy", dir + "dk.npy", dir + "dv.npy"};
  if (backward) {
    RETURN_IF_ERROR(tensor("dq.npy", &Shards::dq, H));
    RETURN_IF_ERROR(tensor("dk.npy", &Shards::dk, Hk));
    RETURN_IF_ERROR(tensor("dv.npy", &Shards::dv, Hk));
  }
  RETURN_IF_ERROR(files.Commit(stale));
  if (absl::GetFlag(FLAGS_timing)) {
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double calls = call_seconds[0] + call_seconds[1];
    std::fprintf(stderr,
                 "ringattn-run: attention calls %.1f ms (forward %.1f%s) of the whole run's %.1f ms "
                 "(reading, sharding, writing included): %.2f of the time in the kernels\n",
                 calls * 1e3, call_seconds[0] * 1e3,
                 backward ? absl::StrFormat(", backward %.1f", call_seconds[1] * 1e3).c_str() : "",
                 total * 1e3, calls / total);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace ringattn::tools

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  absl::SetProgramUsageMessage(
      "ringattn-run --q Q.npy --k K.npy --v V.npy [--dout DO.npy] --out-dir DIR [options]");
  auto line = ringattn::tools::ParseCommandLine(argc, argv);
  const absl::Status s =
      line.ok() ? ringattn::tools::Main(line->ranks_given, start) : line.status();
  if (!s.ok()) {
    std::fprintf(stderr, "ringattn-run: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return 0;
}
