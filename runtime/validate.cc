// Argument validation of the public API: see validate.h.
#include "runtime/validate.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/crc32c.h"
#include "base/status.h"

namespace ringattn {
namespace {

// The product of `xs` in *out; true when one is negative or it overflows.
bool MulOverflows(std::initializer_list<int64_t> xs, int64_t* out) {
  int64_t acc = 1;
  for (int64_t x : xs) {
    if (x < 0 || __builtin_mul_overflow(acc, x, &acc)) return true;
  }
  *out = acc;
  return false;
}

// The block mask's size and shape: [heads, ceil(seqlen / block_size)]^2.
absl::Status ValidateBlocks(const Mask& m, int64_t seqlen) {
  if (!m.HasBlocks()) {
    if (m.block_size != 0 || m.block_heads != 0 || m.block_rows != 0 || m.block_cols != 0) {
      return ArgError("block_mask", "an array with its sizes", "sizes without an array");
    }
    return absl::OkStatus();
  }
  if (m.block_size < 1) return ArgError("block_size", ">= 1", m.block_size);
  const int64_t n = seqlen / m.block_size + (seqlen % m.block_size != 0);
  if (m.block_heads < 1 || m.block_rows != n || m.block_cols != n) {
    return ArgError("block_mask shape",
                    absl::StrCat("[", n, ", ", n, "] or [H, ", n, ", ", n,
                                 "] (ceil(seqlen = ", seqlen, " / block_size = ", m.block_size,
                                 ") blocks per side)"),
                    absl::StrCat(m.block_heads > 1 ? absl::StrCat("[", m.block_heads, ", ") : "[",
                                 m.block_rows, ", ", m.block_cols, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateMaskHeads(const Mask& m, int64_t heads) {
  if (m.HasBlocks() && m.block_heads != 1 && m.block_heads != heads) {
    return ArgError("block_mask heads", absl::StrCat("1 or the query heads H = ", heads),
                    m.block_heads);
  }
  return absl::OkStatus();
}

absl::Status ValidateMask(const Mask& m, int64_t seqlen) {
  if (m.prefix < 0 || m.prefix > seqlen) {
    return ArgError("mask.prefix", absl::StrCat("in [0, seqlen = ", seqlen, "]"), m.prefix);
  }
  if (m.prefix > 0 && !m.HasRight()) {
    return ArgError("mask.prefix", "0 unless the mask is causal or has a right window "
                    "(without a right edge every key is already visible)", m.prefix);
  }
  if (m.sink < 0 || m.sink > seqlen) {
    return ArgError("mask.sink", absl::StrCat("in [0, seqlen = ", seqlen, "]"), m.sink);
  }
  if (m.sink > 0 && !m.HasLeft()) {
    return ArgError("mask.sink", "0 unless the mask has a left window (without one every "
                    "earlier key is already visible)", m.sink);
  }
  if (m.sink_part) return ArgError("mask.sink_part", "false (the kernels' own split)", "true");
  if (m.num_docs < 0) return ArgError("mask.num_docs", ">= 0", m.num_docs);
  if (m.num_docs == 0 && m.cu_seqlens != nullptr) {
    return ArgError("cu_seqlens", "[0, ..., seqlen] (at least 2 boundaries)", "one entry");
  }
  RETURN_IF_ERROR(ValidateBlocks(m, seqlen));
  if (m.num_docs == 0) return absl::OkStatus();
  if (m.cu_seqlens == nullptr) return ArgError("cu_seqlens", "an array of num_docs + 1 boundaries", "null");
  const int64_t n = m.num_docs;
  if (m.cu_seqlens[0] != 0) return ArgError("cu_seqlens[0]", 0, m.cu_seqlens[0]);
  for (int64_t d = 1; d <= n; ++d) {
    if (m.cu_seqlens[d] < m.cu_seqlens[d - 1]) {
      return ArgError(absl::StrCat("cu_seqlens[", d, "]"),
                      absl::StrCat(">= cu_seqlens[", d - 1, "] = ", m.cu_seqlens[d - 1],
                                   " (boundaries never decrease)"),
                      m.cu_seqlens[d]);
    }
  }
  if (m.cu_seqlens[n] != seqlen) {
    return ArgError(absl::StrCat("cu_seqlens[", n, "] (the last boundary)"),
                    absl::StrCat("seqlen = ", seqlen), m.cu_seqlens[n]);
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const RingOptions& o) {
  if (o.seqlen < 0) return ArgError("seqlen", ">= 0", o.seqlen);
  if (o.stripe < 1) return ArgError("stripe", ">= 1", o.stripe);
  if (o.mask.window_left < -1) {
    return ArgError("mask.window_left", ">= -1 (-1 = unbounded)", o.mask.window_left);
  }
  if (o.mask.window_right < -1) {
    return ArgError("mask.window_right", ">= -1 (-1 = unbounded)", o.mask.window_right);
  }
  RETURN_IF_ERROR(ValidateMask(o.mask, o.seqlen));
  if (static_cast<int>(o.strategy) > static_cast<int>(Strategy::kAuto)) {
    return ArgError("strategy", "a Strategy value", static_cast<int>(o.strategy));
  }
  if (o.strategy == Strategy::kHybrid ? o.ulysses < 1 : o.ulysses != 0) {
    return ArgError("ulysses", o.strategy == Strategy::kHybrid ? ">= 1 (hybrid's U)"
                                                               : "0 (only hybrid takes U)",
                    o.ulysses);
  }
  if (!std::isfinite(o.softcap) || o.softcap < 0) return ArgError("softcap", "finite >= 0", o.softcap);
  if (o.scale.has_value() && (!std::isfinite(*o.scale) || *o.scale <= 0)) {
    return ArgError("scale", "finite > 0", *o.scale);
  }
  if (o.backend != Backend::kCpu && o.backend != Backend::kCuda) {
    return ArgError("backend", "kCpu or kCuda", static_cast<int>(o.backend));
  }
  if (o.backend == Backend::kCpu && o.dtype == DType::kFloat16) {
    return absl::UnimplementedError("dtype: fp16 needs the CUDA backend; the CPU backend stores fp32 or bf16");
  }
  if (o.backend == Backend::kCuda && o.dtype == DType::kFloat32) {
    return absl::UnimplementedError(
        "dtype: the CUDA backend takes bf16 or fp16 tensors, not fp32 (partial results and "
        "gradients are still accumulated in fp32)");
  }
  if (o.device_index < 0) return ArgError("device_index", ">= 0", o.device_index);
  if (o.timeout < absl::ZeroDuration()) return ArgError("timeout", ">= 0", absl::FormatDuration(o.timeout));
  if (o.num_threads < 0 || o.num_threads > RingOptions::kMaxThreads) {
    return ArgError("num_threads", absl::StrCat("in [0, ", RingOptions::kMaxThreads, "] (0 = automatic)"),
                    o.num_threads);
  }
  return absl::OkStatus();
}

OptionsDigest DigestOf(const RingOptions& o) {
  OptionsDigest d;
  d.sharding = static_cast<int32_t>(o.sharding);
  d.strategy = static_cast<int32_t>(o.strategy);
  d.ulysses = o.ulysses;
  d.dtype = static_cast<int32_t>(o.dtype);
  d.backend = static_cast<int32_t>(o.backend);
  d.causal = o.mask.causal;
  d.deterministic = o.deterministic;
  d.has_scale = o.scale.has_value();
  d.seqlen = o.seqlen;
  d.stripe = o.stripe;
  d.window_left = o.mask.window_left;
  d.window_right = o.mask.window_right;
  d.prefix = o.mask.prefix;
  d.sink = o.mask.sink;
  d.num_docs = o.mask.num_docs;
  d.docs_crc = o.mask.HasDocuments()
                   ? Crc32c(o.mask.cu_seqlens, sizeof(int64_t) * (o.mask.num_docs + 1))
                   : 0;
  if (o.mask.HasBlocks()) {
    d.block_size = o.mask.block_size;
    d.block_heads = o.mask.block_heads;
    // Over the bits as 0/1, whatever nonzero byte a caller stored.
    const int64_t n = o.mask.block_heads * o.mask.block_rows * o.mask.block_cols;
    std::vector<uint8_t> bits(o.mask.blocks, o.mask.blocks + n);
    for (uint8_t& x : bits) x = x != 0;
    d.blocks_crc = Crc32c(bits.data(), bits.size());
  }
  d.softcap = o.softcap;
  d.scale = o.scale.value_or(0.0f);
  return d;
}

absl::Status CompareDigests(const OptionsDigest& mine, int my_rank, const OptionsDigest& theirs,
                            int their_rank) {
  if (theirs.magic != mine.magic) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", their_rank,
                                                   " sent no options message (magic 0x",
                                                   absl::Hex(theirs.magic), ")"));
  }
  std::vector<std::string> diffs;
  auto check = [&](const char* name, auto a, auto b, auto show) {
    if (a == b) return;
    diffs.push_back(absl::StrCat(name, ": rank ", my_rank, " has ", show(a), ", rank ",
                                 their_rank, " has ", show(b)));
  };
  auto plain = [](auto x) { return absl::StrCat(x); };
  auto flag = [](int32_t x) { return x ? "true" : "false"; };
  check("seqlen", mine.seqlen, theirs.seqlen, plain);
  check("sharding", mine.sharding, theirs.sharding,
        [](int32_t s) { return ShardingName(static_cast<Sharding>(s)); });
  check("stripe", mine.stripe, theirs.stripe, plain);
  check("strategy", mine.strategy, theirs.strategy,
        [](int32_t s) { return StrategyName(static_cast<Strategy>(s)); });
  check("ulysses (hybrid's U)", mine.ulysses, theirs.ulysses, plain);
  check("causal", mine.causal, theirs.causal, flag);
  check("window_left", mine.window_left, theirs.window_left, plain);
  check("window_right", mine.window_right, theirs.window_right, plain);
  check("mask.prefix", mine.prefix, theirs.prefix, plain);
  check("mask.sink", mine.sink, theirs.sink, plain);
  check("cu_seqlens: number of documents", mine.num_docs, theirs.num_docs, plain);
  if (mine.num_docs == theirs.num_docs) {
    check("cu_seqlens: checksum of the boundaries", mine.docs_crc, theirs.docs_crc,
          [](uint32_t c) { return absl::StrCat("0x", absl::Hex(c)); });
  }
  check("block_size", mine.block_size, theirs.block_size, plain);
  check("block_mask heads", mine.block_heads, theirs.block_heads, plain);
  if (mine.block_size == theirs.block_size && mine.block_heads == theirs.block_heads) {
    check("block_mask: checksum of the bits", mine.blocks_crc, theirs.blocks_crc,
          [](uint32_t c) { return absl::StrCat("0x", absl::Hex(c)); });
  }
  check("softcap", mine.softcap, theirs.softcap, plain);
  check("scale", mine.has_scale ? mine.scale : -1.0f, theirs.has_scale ? theirs.scale : -1.0f,
        [](float s) { return s < 0 ? std::string("default (1/sqrt(D))") : absl::StrCat(s); });
  check("dtype", mine.dtype, theirs.dtype,
        [](int32_t t) { return DTypeName(static_cast<DType>(t)); });
  check("backend", mine.backend, theirs.backend,
        [](int32_t b) { return BackendName(static_cast<Backend>(b)); });
  check("deterministic", mine.deterministic, theirs.deterministic, flag);
  if (diffs.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("options differ across ranks: ", absl::StrJoin(diffs, "; ")));
}

absl::Status CheckView(const TensorView& t, const char* name, DType dtype,
                       const KernelBackend& backend, std::initializer_list<int64_t> shape) {
  if (t.ndim != static_cast<int>(shape.size())) {
    return ArgError(absl::StrCat(name, " rank"), shape.size(), t.ndim);
  }
  int i = 0;
  for (int64_t want : shape) {
    if (t.shape[i] != want) {
      std::string expected = "[";
      int j = 0;
      for (int64_t w : shape) absl::StrAppend(&expected, j++ ? ", " : "", w);
      absl::StrAppend(&expected, "]");
      return ArgError(absl::StrCat(name, " shape"), expected, t.ShapeString());
    }
    ++i;
  }
  if (t.dtype != dtype) return ArgError(absl::StrCat(name, " dtype"), DTypeName(dtype), DTypeName(t.dtype));
  if (t.device != backend.device()) {
    return ArgError(absl::StrCat(name, " device"), backend.Name(),
                    t.device == Device::kCpu ? "cpu" : "cuda");
  }
  int64_t numel = 1;
  for (int d = 0; d < t.ndim; ++d) numel *= t.shape[d];
  if (numel > 0 && t.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null data"));
  if (numel > 0 && t.strides[t.ndim - 1] != 1) {
    return ArgError(absl::StrCat(name, " innermost stride"), 1, t.strides[t.ndim - 1]);
  }
  for (int d = 0; d < t.ndim; ++d) {
    if (t.strides[d] < 0) return ArgError(absl::StrCat(name, " stride ", d), ">= 0", t.strides[d]);
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardDims> ValidateForwardArgs(const Layout& layout, int rank, DType dtype,
                                              const KernelBackend& backend, const TensorView& q,
                                              const TensorView& k, const TensorView& v,
                                              const TensorView& out, const TensorView& lse) {
  if (q.ndim != 4) return ArgError("q rank", 4, q.ndim);
  if (k.ndim != 4) return ArgError("k rank", 4, k.ndim);
  ShardDims d{q.shape[0], layout.ShardLength(rank), q.shape[2], k.shape[2], q.shape[3]};
  if (d.B < 1) return ArgError("q batch", ">= 1", d.B);
  if (d.H < 1) return ArgError("q heads", ">= 1", d.H);
  if (d.Hk < 1) return ArgError("k heads (Hkv)", ">= 1", d.Hk);
  if (d.H % d.Hk != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q heads % k heads: expected 0 (H a multiple of Hkv), got H=", d.H, " Hkv=", d.Hk));
  }
  if (d.D < 1 || d.D > 512) return ArgError("head dim", "1..512", d.D);
  int64_t bytes;
  if (MulOverflows({d.B, std::max<int64_t>(d.S, 1), d.H, d.D, 8}, &bytes) ||
      MulOverflows({d.B, layout.MaxShardLength(), d.Hk, d.D, 16}, &bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("sizes overflow 64 bits: B=", d.B, " S_r=", d.S,
                                                   " H=", d.H, " Hkv=", d.Hk, " D=", d.D));
  }
  RETURN_IF_ERROR(CheckView(q, "q", dtype, backend, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(backend.CheckKernelInput(q, "q"));
  RETURN_IF_ERROR(CheckView(k, "k", dtype, backend, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckView(v, "v", dtype, backend, {d.B, d.S, d.Hk, d.D}));
  RETURN_IF_ERROR(CheckView(out, "out", dtype, backend, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(CheckView(lse, "lse", DType::kFloat32, backend, {d.B, d.H, d.S}));
  if (d.S > 0 && (lse.strides[0] != d.H * d.S || lse.strides[1] != d.S)) {
    return ArgError("lse strides", absl::StrCat("contiguous (", d.H * d.S, ", ", d.S, ", 1)"),
                    absl::StrCat("(", lse.strides[0], ", ", lse.strides[1], ", ", lse.strides[2], ")"));
  }
  return d;
}

absl::Status ValidateBackwardArgs(const ShardDims& d, DType dtype, const KernelBackend& backend,
                                  const TensorView& dout, const TensorView& dq,
                                  const TensorView& dk, const TensorView& dv) {
  RETURN_IF_ERROR(CheckView(dout, "dout", dtype, backend, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(backend.CheckKernelInput(dout, "dout"));
  RETURN_IF_ERROR(CheckView(dq, "dq", dtype, backend, {d.B, d.S, d.H, d.D}));
  RETURN_IF_ERROR(CheckView(dk, "dk", dtype, backend, {d.B, d.S, d.Hk, d.D}));
  return CheckView(dv, "dv", dtype, backend, {d.B, d.S, d.Hk, d.D});
}

}  // namespace ringattn
