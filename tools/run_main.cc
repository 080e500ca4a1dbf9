// ringattn-run: the file-level contract. Reads Q [B,S,H,D], K and V
// [B,S,Hkv,D] (and optionally dO) from little-endian float32 .npy files,
// runs ringattn on one or more local ranks, and writes out.npy [B,S,H,D],
// lse.npy [B,H,S] (and dq.npy, dk.npy, dv.npy) as float32. Every input is
// checked before anything runs; a bad file is refused with a message naming
// it and nothing is written.
//
// --comm local runs W ranks as threads; --comm ucx runs one rank per
// process under mpirun / srun: every process reads the inputs and takes its
// own shard, and rank 0 gathers the outputs and writes the files (bitwise
// the same as --comm local with the same W and sharding).
//
// --backend cuda runs the W ranks on GPU 0 (--comm cuda-local, the default
// there): each rank's shards go to the device, the results come back, and
// the same files are written. The CUDA kernels take --dtype bf16 or fp16.
// --backend cuda --comm nccl runs one rank per process and GPU under
// mpirun / srun, gathering to rank 0 like --comm ucx.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
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
ABSL_FLAG(int, threads, 0, "threads per rank (0 = cores / W)");

namespace ringattn::tools {
namespace {

// Full tensor in the storage dtype, as raw bytes, and back.
std::vector<uint8_t> ToStorage(const std::vector<float>& x, DType t) {
  std::vector<uint8_t> out(x.size() * DTypeSize(t));
  EncodeFloats(x.data(), static_cast<int64_t>(x.size()), t, out.data());
  return out;
}

std::vector<float> FromStorage(const std::vector<uint8_t>& b, DType t) {
  std::vector<float> x(b.size() / DTypeSize(t));
  DecodeFloats(b.data(), static_cast<int64_t>(x.size()), t, x.data());
  return x;
}

absl::Status Main(bool ranks_given) {
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
  // them: the float32 inputs, their copies in the storage dtype and each
  // rank's shards of them, and as much again for the outputs and gradients
  // (about 4x the input files; an estimate from below).
  {
    double input_bytes = 0;
    for (const std::string& p : {qp, kp, vp, dp}) {
      if (!p.empty() && stat(p.c_str(), &st) == 0) input_bytes += static_cast<double>(st.st_size);
    }
    RETURN_IF_ERROR(CheckFitsInMemory(
        absl::StrCat("the inputs (", HumanBytes(input_bytes), " of .npy files)"), 4 * input_bytes));
  }
  // Read and check every input before computing anything.
  ASSIGN_OR_RETURN(NpyArray q, ReadNpy(qp));
  if (q.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(qp, ": expected 4 dims [B, S, H, D], got shape ", ShapeToString(q.shape)));
  }
  const int64_t B = q.shape[0], S = q.shape[1], H = q.shape[2], D = q.shape[3];
  ASSIGN_OR_RETURN(NpyArray k, ReadNpy(kp));
  RETURN_IF_ERROR(CheckShape(k, kp, {B, S, -1, D}));
  const int64_t Hk = k.shape[2];
  ASSIGN_OR_RETURN(NpyArray v, ReadNpy(vp));
  RETURN_IF_ERROR(CheckShape(v, vp, {B, S, Hk, D}));
  NpyArray dout;
  const bool backward = !dp.empty();
  if (backward) {
    ASSIGN_OR_RETURN(dout, ReadNpy(dp));
    RETURN_IF_ERROR(CheckShape(dout, dp, {B, S, H, D}));
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

  const int64_t es = DTypeSize(dtype);
  const auto qs = ToStorage(q.data, dtype), ks = ToStorage(k.data, dtype),
             vs = ToStorage(v.data, dtype), ds = backward ? ToStorage(dout.data, dtype) : std::vector<uint8_t>();
  std::vector<uint8_t> out_full(qs.size()), dq_full(qs.size()), dk_full(ks.size()), dv_full(ks.size());
  std::vector<float> lse_full(B * H * S);

  ASSIGN_OR_RETURN(auto ranks,
                   MakeWorld(comm_name, ranks_flag, ranks_given, backend == Backend::kCuda));
  opt.device_index = ranks->device();  // nccl, staged ucx: this process's GPU
  ASSIGN_OR_RETURN(const absl::Duration timeout, comm::DefaultTimeout());
  RETURN_IF_ERROR(ranks->Run([&](comm::Communicator& cm) -> absl::Status {
        const int r = cm.Rank();
        ASSIGN_OR_RETURN(auto ring, RingAttention::Create(&cm, opt));
        const Layout& layout = ring->layout();
        const int64_t Sr = ring->ShardLength();
        std::vector<uint8_t> qr(B * Sr * H * D * es), kr(B * Sr * Hk * D * es), vr(kr.size()),
            outr(qr.size()), dor(qr.size()), dqr(qr.size()), dkr(kr.size()), dvr(kr.size());
        std::vector<float> lser(B * H * Sr);
        layout.ShardRows(qs.data(), r, B, H * D * es, qr.data());
        layout.ShardRows(ks.data(), r, B, Hk * D * es, kr.data());
        layout.ShardRows(vs.data(), r, B, Hk * D * es, vr.data());
        if (backward) layout.ShardRows(ds.data(), r, B, H * D * es, dor.data());
        // The shards where the backend reads them (device copies on cuda).
        Placement place(backend);
        auto V = [&](std::vector<uint8_t>& x, int64_t heads, bool input) {
          return place.Place(x, dtype, {B, Sr, heads, D}, input);
        };
        ASSIGN_OR_RETURN(const TensorView qv, V(qr, H, true));
        ASSIGN_OR_RETURN(const TensorView kv, V(kr, Hk, true));
        ASSIGN_OR_RETURN(const TensorView vv, V(vr, Hk, true));
        ASSIGN_OR_RETURN(const TensorView ov, V(outr, H, false));
        ASSIGN_OR_RETURN(const TensorView lv, place.Place(lser, DType::kFloat32, {B, H, Sr}, false));
        RETURN_IF_ERROR(ring->Forward(qv, kv, vv, ov, lv));
        if (backward) {
          ASSIGN_OR_RETURN(const TensorView dov, V(dor, H, true));
          ASSIGN_OR_RETURN(const TensorView dqv, V(dqr, H, false));
          ASSIGN_OR_RETURN(const TensorView dkv, V(dkr, Hk, false));
          ASSIGN_OR_RETURN(const TensorView dvv, V(dvr, Hk, false));
          RETURN_IF_ERROR(ring->Backward(qv, kv, vv, ov, lv, dov, dqv, dkv, dvv));
        }
        RETURN_IF_ERROR(place.Download());
        // Distinct rows per rank: gathering concurrently is safe.
        layout.GatherRows(outr.data(), r, B, H * D * es, out_full.data());
        layout.GatherRows(lser.data(), r, B * H, 4, lse_full.data());
        if (backward) {
          layout.GatherRows(dqr.data(), r, B, H * D * es, dq_full.data());
          layout.GatherRows(dkr.data(), r, B, Hk * D * es, dk_full.data());
          layout.GatherRows(dvr.data(), r, B, Hk * D * es, dv_full.data());
        }
        if (!ranks->one_rank_per_process()) return absl::OkStatus();
        // One rank per process: the other ranks' shards come to rank 0.
        struct Part {
          std::vector<uint8_t>* mine;
          int64_t row_bytes;  // per token row (lse: per (b, h) row of 4 bytes)
          int64_t rows_per_token;
          int64_t batch;
          std::vector<uint8_t>* full;
        };
        std::vector<uint8_t> lse_mine(lser.size() * 4);
        std::memcpy(lse_mine.data(), lser.data(), lse_mine.size());
        std::vector<Part> parts = {{&outr, H * D * es, 1, B, &out_full},
                                   {&lse_mine, 4, B * H, B * H, nullptr}};
        if (backward) {
          parts.push_back({&dqr, H * D * es, 1, B, &dq_full});
          parts.push_back({&dkr, Hk * D * es, 1, B, &dk_full});
          parts.push_back({&dvr, Hk * D * es, 1, B, &dv_full});
        }
        for (size_t i = 0; i < parts.size(); ++i) {
          const Part& p = parts[i];
          auto bytes_of = [&](int rank) {
            return (p.rows_per_token == 1 ? B : B * H) * layout.ShardLength(rank) * p.row_bytes;
          };
          std::vector<std::vector<uint8_t>> inbox(cm.Size());
          RETURN_IF_ERROR(GatherToRoot(
              cm, static_cast<int>(i), p.mine->data(), bytes_of,
              [&](int rank) {
                inbox[rank].resize(bytes_of(rank));
                return static_cast<void*>(inbox[rank].data());
              },
              timeout));
          if (r != 0) continue;
          for (int from = 1; from < cm.Size(); ++from) {
            layout.GatherRows(inbox[from].data(), from, p.batch, p.row_bytes,
                              i == 1 ? static_cast<void*>(lse_full.data()) : p.full->data());
          }
        }
        return absl::OkStatus();
      }));
  if (!ranks->root()) return absl::OkStatus();

  // All or nothing: the files of this run replace the earlier set only when
  // every one is written, and the gradients of an earlier run with --dout
  // do not survive beside a forward-only set.
  const std::string dir = out_dir + "/";
  OutputFiles files;
  RETURN_IF_ERROR(files.AddNpy(dir + "out.npy", {B, S, H, D}, FromStorage(out_full, dtype).data()));
  RETURN_IF_ERROR(files.AddNpy(dir + "lse.npy", {B, H, S}, lse_full.data()));
  std::vector<std::string> stale;
  if (!backward) stale = {dir + "dq.npy", dir + "dk.npy", dir + "dv.npy"};
  if (backward) {
    RETURN_IF_ERROR(files.AddNpy(dir + "dq.npy", {B, S, H, D}, FromStorage(dq_full, dtype).data()));
    RETURN_IF_ERROR(files.AddNpy(dir + "dk.npy", {B, S, Hk, D}, FromStorage(dk_full, dtype).data()));
    RETURN_IF_ERROR(files.AddNpy(dir + "dv.npy", {B, S, Hk, D}, FromStorage(dv_full, dtype).data()));
  }
  RETURN_IF_ERROR(files.Commit(stale));
  return absl::OkStatus();
}

}  // namespace
}  // namespace ringattn::tools

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ringattn-run --q Q.npy --k K.npy --v V.npy [--dout DO.npy] --out-dir DIR [options]");
  auto line = ringattn::tools::ParseCommandLine(argc, argv);
  const absl::Status s = line.ok() ? ringattn::tools::Main(line->ranks_given) : line.status();
  if (!s.ok()) {
    std::fprintf(stderr, "ringattn-run: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return 0;
}
