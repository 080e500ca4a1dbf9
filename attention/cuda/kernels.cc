// Host dispatch of the CUDA attention kernels: validates AttnParams and the
// device once, picks the instantiation (dispatch.h: dtype x head dim x
// softcap, and deterministic for the backward), launches on the caller's
// stream, and turns every CUDA error into a Status naming the call and its
// file:line (base/cuda_status.h). Built only when the CUDA toolkit is found
// (stub.cc otherwise).
#include "attention/cuda/kernels.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attention/cuda/dispatch.h"
#include "attention/cuda/launch.h"
#include "attention/cuda/traits.h"
#include "base/cuda_status.h"
#include "base/status.h"

namespace ringattn::cuda {
namespace internal {

// INT_MAX for a head dim with no kernel: it never fits (CheckParams refuses first).
int ForwardSmemBytes(int head_dim) {
  return WithHeadDim(
      head_dim, []<int kD>() { return FwdTraits<kD>::kSmemBytes; }, [] { return INT_MAX; });
}
int ForwardSm90SmemBytes(int head_dim) {
  return WithHeadDim(
      head_dim, []<int kD>() { return FwdSm90Traits<kD>::kSmemBytes; }, [] { return INT_MAX; });
}
int BackwardSmemBytes(int head_dim) {
  return WithHeadDim(
      head_dim,
      []<int kD>() { return std::max(BwdTraits<kD>::kSmemBytes, BwdDqTraits<kD>::kSmemBytes); },
      [] { return INT_MAX; });
}

}  // namespace internal

namespace {

bool Aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}

// 16-bit inputs are read in 16-byte chunks: base and strides must allow it.
absl::Status CheckInput(const void* ptr, const TensorStrides& s, absl::string_view name) {
  if (ptr == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null pointer"));
  if (!Aligned(ptr, 16) || s.batch % 8 != 0 || s.seq % 8 != 0 || s.head % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": the CUDA kernels need 16-byte aligned rows (pointer aligned to 16 bytes, ",
        "strides multiples of 8 elements); got strides (", s.batch, ", ", s.seq, ", ", s.head,
        ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckAccumulator(const float* ptr, absl::string_view name) {
  if (ptr == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null pointer"));
  if (!Aligned(ptr, 8)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must be 8-byte aligned"));
  }
  return absl::OkStatus();
}

// The current device must be sm_80+ and grant `smem` bytes per block.
absl::Status CheckDevice(int smem) {
  int dev = 0;
  RINGATTN_CUDA_CHECK(cudaGetDevice(&dev), "CUDA attention");
  int major = 0, minor = 0, optin = 0;
  RINGATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
                      "CUDA attention");
  RINGATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev),
                      "CUDA attention");
  RINGATTN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                      "CUDA attention");
  if (major < 8) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA attention kernels need compute capability 8.0 or newer (mma.sync bf16, "
                     "cp.async); device ",
                     dev, " is sm_", major, minor));
  }
  if (optin < smem) {
    return absl::UnimplementedError(absl::StrCat("CUDA attention kernel needs ", smem,
                                                 " bytes of shared memory per block; device ", dev,
                                                 " grants ", optin));
  }
  // An error left by earlier work would be reported as ours after the
  // launch: report it now, under its own name, and clear it.
  const cudaError_t pending = cudaGetLastError();
  if (pending != cudaSuccess) {
    return CudaStatus(pending, __FILE__, __LINE__, "CUDA error pending before the launch");
  }
  return absl::OkStatus();
}

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Which forward kernels run, from RINGATTN_CUDA_KERNELS:
//   sm80          the mma.sync kernels (fwd_kernel.cuh), on every sm_80+ device;
//   sm90a         the Hopper kernels (fwd_sm90_kernel.cuh), compute capability
//                 9.0 only (an error elsewhere);
//   auto (unset)  the sm80 kernels for now. The Hopper kernels have run only
//                 on the emulator (tests/attention/cuda_emu_check --sm90);
//                 auto takes them on 9.0 once tools/gpu_check.sh has passed
//                 them on an H100, which no session has had yet.
// Whether TMA maps can describe q, k and v: a map wants every dimension
// non-empty and strides that are positive multiples of 16 bytes. Calls
// without keys (S_k = 0: out 0, lse -inf) and tensors with zero or negative
// strides, which CheckParams allows, take the sm_80 kernels instead.
bool TensorMapsCanDescribe(const AttnParams& p) {
  if (p.seqlen_k == 0) return false;
  const auto positive = [](const TensorStrides& s, int64_t seq, int64_t heads, int64_t batch) {
    return (seq == 1 || s.seq > 0) && (heads == 1 || s.head > 0) && (batch == 1 || s.batch > 0);
  };
  return positive(p.q_stride, p.seqlen_q, p.num_heads, p.batch) &&
         positive(p.k_stride, p.seqlen_k, p.num_heads_k, p.batch) &&
         positive(p.v_stride, p.seqlen_k, p.num_heads_k, p.batch);
}

// Returns whether to run the Hopper kernels.
absl::StatusOr<bool> UseSm90aForward() {
  const char* env = std::getenv("RINGATTN_CUDA_KERNELS");
  const absl::string_view v = env != nullptr ? env : "auto";
  if (v == "auto" || v == "sm80") return false;
  if (v != "sm90a") {
    return absl::InvalidArgumentError(absl::StrCat(
        "RINGATTN_CUDA_KERNELS: expected auto, sm80 or sm90a; got \"", v, "\""));
  }
  const int cc = DeviceComputeCapability();
  if (cc != 90) {
    return absl::UnimplementedError(
        absl::StrCat("RINGATTN_CUDA_KERNELS=sm90a: the Hopper kernels (sm_90a) need compute "
                     "capability 9.0; the current device is ",
                     cc == 0 ? std::string("not usable") : absl::StrCat("sm_", cc)));
  }
  return true;
}

}  // namespace

bool DeviceAvailable() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear "no device" so that it is not reported later
    return false;
  }
  return n > 0;
}

int DeviceComputeCapability() {
  if (!DeviceAvailable()) return 0;
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return 10 * major + minor;
}

absl::Status CheckParams(const AttnParams& p, bool backward) {
  if (p.batch <= 0 || p.seqlen_q < 0 || p.seqlen_k < 0 || p.num_heads <= 0 || p.num_heads_k <= 0 ||
      p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention sizes must be positive: B=", p.batch, " S_q=", p.seqlen_q, " S_k=", p.seqlen_k,
        " H=", p.num_heads, " Hkv=", p.num_heads_k, " D=", p.head_dim));
  }
  if (p.num_heads % p.num_heads_k != 0) {
    return ArgError("num_heads % num_heads_k", 0, p.num_heads % p.num_heads_k);
  }
  if (p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat16) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA kernels take bf16 or fp16 inputs, not ", DTypeName(p.dtype)));
  }
  if (!HeadDimBuilt(p.head_dim)) {
    return absl::UnimplementedError(
        absl::StrCat("CUDA kernels are built for head dim 64, 128 and 256, not ", p.head_dim));
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) return ArgError("scale", "finite > 0", p.scale);
  if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap)) {
    return ArgError("softcap", "finite >= 0", p.softcap);
  }
  if (p.q_pos.Length() != p.seqlen_q) return ArgError("q_pos length", p.seqlen_q, p.q_pos.Length());
  if (p.k_pos.Length() != p.seqlen_k) return ArgError("k_pos length", p.seqlen_k, p.k_pos.Length());
  if (p.q_pos.many != nullptr || p.k_pos.many != nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "positions: the CUDA kernels take at most ", PositionMap::kMaxSegments,
        " position segments per block (the balanced sharding of packed documents is CPU only)"));
  }
  if (p.mask.HasBlocks() && p.mask.block_heads != 1 && p.mask.block_heads != p.num_heads) {
    return ArgError("block_mask heads", absl::StrCat("1 or num_heads = ", p.num_heads),
                    p.mask.block_heads);
  }
  // Grid limits: query tiles in x, heads in y, batch in z.
  if (p.batch > 65535 || p.num_heads > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA kernels take at most 65535 batches and heads; got B=", p.batch, " H=", p.num_heads));
  }
  // The kernels count tiles and rows with 32-bit integers (fewer registers
  // in the main loops); 2^31 tokens of one head would be 256 GiB at D=64.
  constexpr int64_t kMaxSeq = (int64_t{1} << 31) - 1;
  if (p.seqlen_q > kMaxSeq || p.seqlen_k > kMaxSeq) {
    return absl::InvalidArgumentError(absl::StrCat("S_q and S_k: the CUDA kernels take at most ",
                                                    kMaxSeq, " tokens per call; got S_q=",
                                                    p.seqlen_q, " S_k=", p.seqlen_k));
  }
  RETURN_IF_ERROR(CheckInput(p.q, p.q_stride, "q"));
  RETURN_IF_ERROR(CheckInput(p.k, p.k_stride, "k"));
  RETURN_IF_ERROR(CheckInput(p.v, p.v_stride, "v"));
  if (p.lse == nullptr) return absl::InvalidArgumentError("lse: null pointer");
  if (backward) {
    RETURN_IF_ERROR(CheckInput(p.dout, p.dout_stride, "dout"));
    if (p.dsum == nullptr) return absl::InvalidArgumentError("dsum: null pointer");
    RETURN_IF_ERROR(CheckAccumulator(p.dq_accum, "dq_accum"));
    RETURN_IF_ERROR(CheckAccumulator(p.dk_accum, "dk_accum"));
    RETURN_IF_ERROR(CheckAccumulator(p.dv_accum, "dv_accum"));
  } else {
    if (p.out == nullptr) return absl::InvalidArgumentError("out: null pointer");
    const TensorStrides& s = p.out_stride;
    // Outputs are stored as pairs of adjacent elements.
    if (!Aligned(p.out, 2 * DTypeSize(p.out_dtype)) || s.batch % 2 != 0 || s.seq % 2 != 0 ||
        s.head % 2 != 0) {
      return absl::InvalidArgumentError(
          "out: the CUDA kernels store element pairs: pointer aligned to two elements and "
          "even strides");
    }
  }
  return absl::OkStatus();
}

absl::Status Forward(const AttnParams& p, void* stream) {
  RETURN_IF_ERROR(CheckParams(p, /*backward=*/false));
  if (p.seqlen_q == 0) return absl::OkStatus();
  if (p.mask.HasSink()) {
    // The two parts of the mask, merged exactly: each part's result in fp32,
    // then one merge. Into fp32 contiguous outputs (the ring's partial
    // results) the main part goes straight to the outputs and the sink part
    // merges in place; into any other output (16-bit, strided) both parts go
    // to fp32 scratch and the merge stores the result, rounded once.
    AttnParams main = p;
    main.mask = p.mask.MainPart();
    if (!p.HasSinkKeys()) return Forward(main, stream);
    const int64_t B = p.batch, Sq = p.seqlen_q, H = p.num_heads, D = p.head_dim;
    const TensorStrides contiguous = TensorStrides::Contiguous(Sq, H, D);
    const bool in_place = p.out_dtype == DType::kFloat32 &&
                          p.out_stride.batch == contiguous.batch &&
                          p.out_stride.seq == contiguous.seq &&
                          p.out_stride.head == contiguous.head && p.lse_batch_stride == H * Sq &&
                          p.lse_head_stride == Sq;
    const cudaStream_t s = AsStream(stream);
    const size_t out_bytes = static_cast<size_t>(B * Sq * H * D) * 4, lse_bytes = B * H * Sq * 4;
    const int parts_in_scratch = in_place ? 1 : 2;
    char* scratch = nullptr;
    RINGATTN_CUDA_CHECK(
        cudaMallocAsync(reinterpret_cast<void**>(&scratch),
                        parts_in_scratch * (out_bytes + lse_bytes), s),
        "mask.sink scratch");
    const auto to_scratch = [&](AttnParams& a, int slot) {
      char* base = scratch + slot * (out_bytes + lse_bytes);
      a.out = base;
      a.out_dtype = DType::kFloat32;
      a.out_stride = contiguous;
      a.lse = reinterpret_cast<float*>(base + out_bytes);
      a.lse_batch_stride = H * Sq;
      a.lse_head_stride = Sq;
    };
    AttnParams part = p;
    part.mask = p.mask.SinkPart();
    to_scratch(part, 0);
    if (!in_place) to_scratch(main, 1);
    absl::Status st = Forward(main, stream);
    if (st.ok()) st = Forward(part, stream);
    if (st.ok() && in_place) {
      st = MergePartial(static_cast<float*>(p.out), p.lse, static_cast<const float*>(part.out),
                        part.lse, B, Sq, H, D, stream);
    } else if (st.ok()) {
      st = ToStatus(internal::LaunchMergeStore(
          static_cast<const float*>(main.out), main.lse, static_cast<const float*>(part.out),
          part.lse, p.out, p.out_stride, p.out_dtype, p.lse, p.lse_batch_stride,
          p.lse_head_stride, B, Sq, H, D, s));
    }
    const cudaError_t freed = cudaFreeAsync(scratch, s);
    RETURN_IF_ERROR(st);
    RINGATTN_CUDA_CHECK(freed, "mask.sink scratch");
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(bool sm90a, UseSm90aForward());
  sm90a = sm90a && TensorMapsCanDescribe(p);
  const int head_dim = static_cast<int>(p.head_dim);
  RETURN_IF_ERROR(CheckDevice(sm90a ? internal::ForwardSm90SmemBytes(head_dim)
                                    : internal::ForwardSmemBytes(head_dim)));
  const cudaStream_t s = AsStream(stream);
  return DispatchForward(
      p,
      [&]<DType kT, int kD, bool kCap>() {
        return ToStatus(sm90a ? internal::LaunchForwardSm90<kT, kD, kCap>(p, s)
                              : internal::LaunchForward<kT, kD, kCap>(p, s));
      },
      [&] { return absl::InternalError(absl::StrCat("no forward kernel for D=", p.head_dim)); });
}

absl::Status Backward(const AttnParams& p, bool deterministic, void* stream) {
  RETURN_IF_ERROR(CheckParams(p, /*backward=*/true));
  if (p.seqlen_q == 0 || p.seqlen_k == 0) return absl::OkStatus();  // nothing to add
  if (p.mask.HasSink()) {
    // The two parts' gradients add up (disjoint keys, the same global lse).
    AttnParams part = p;
    part.mask = p.mask.MainPart();
    RETURN_IF_ERROR(Backward(part, deterministic, stream));
    if (!p.HasSinkKeys()) return absl::OkStatus();
    part.mask = p.mask.SinkPart();
    return Backward(part, deterministic, stream);
  }
  RETURN_IF_ERROR(CheckDevice(internal::BackwardSmemBytes(static_cast<int>(p.head_dim))));
  const cudaStream_t s = AsStream(stream);
  return DispatchBackward(
      p, deterministic,
      [&]<DType kT, int kD, bool kCap, bool kDeterministic>() {
        return ToStatus(internal::LaunchBackward<kT, kD, kCap, kDeterministic>(p, s));
      },
      [&] { return absl::InternalError(absl::StrCat("no backward kernel for D=", p.head_dim)); });
}

absl::Status MergePartial(float* acc_out, float* acc_lse, const float* part_out,
                          const float* part_lse, int64_t batch, int64_t seqlen, int64_t heads,
                          int64_t head_dim, void* stream) {
  if (batch < 0 || seqlen < 0 || heads < 0 || head_dim < 0) {
    return absl::InvalidArgumentError(absl::StrCat("merge sizes must be >= 0: B=", batch,
                                                   " S=", seqlen, " H=", heads, " D=", head_dim));
  }
  if (batch * seqlen * heads == 0) return absl::OkStatus();
  if (!acc_out || !acc_lse || !part_out || !part_lse) {
    return absl::InvalidArgumentError("merge: null pointer");
  }
  RETURN_IF_ERROR(CheckDevice(0));
  return ToStatus(internal::LaunchMergePartial(acc_out, acc_lse, part_out, part_lse, batch, seqlen,
                                               heads, head_dim, AsStream(stream)));
}

absl::Status RowDot(const void* dout, TensorStrides dout_stride, DType dout_dtype, const void* out,
                    TensorStrides out_stride, DType out_dtype, float* dsum, int64_t batch,
                    int64_t seqlen, int64_t heads, int64_t head_dim, void* stream) {
  if (batch < 0 || seqlen < 0 || heads < 0 || head_dim < 0) {
    return absl::InvalidArgumentError(absl::StrCat("RowDot sizes must be >= 0: B=", batch,
                                                   " S=", seqlen, " H=", heads, " D=", head_dim));
  }
  if (batch * seqlen * heads == 0) return absl::OkStatus();
  if (!dout || !out || !dsum) return absl::InvalidArgumentError("RowDot: null pointer");
  RETURN_IF_ERROR(CheckDevice(0));
  return ToStatus(internal::LaunchRowDot(dout, dout_stride, dout_dtype, out, out_stride, out_dtype,
                                         dsum, batch, seqlen, heads, head_dim, AsStream(stream)));
}

}  // namespace ringattn::cuda
