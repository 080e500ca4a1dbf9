// CUDA kernels against the float64 reference, with flash-attn's tolerance
// rule (error <= 2x the error of a naive same-precision implementation +
// atol): forward and backward (fast and deterministic) over dtypes (bf16,
// fp16), head dims (64, 128, 256), masks, GQA ratios, odd lengths, S_q != S_k,
// global offsets, softcap, aligned non-contiguous strides and 64-bit
// offsets; fp32 partial outputs merged on the device; fully masked rows;
// NaN at masked keys; poisoned outputs; bitwise determinism; RowDot; the
// refusals. Without a device every test is skipped with "no CUDA device",
// except the host-side check of the parameters (CudaKernelParams), which
// skips only in a build without CUDA.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention/cuda/kernels.h"
#include "attention/merge.h"
#include "base/cuda_memory.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"

namespace ringattn::testing {
namespace {

#define SKIP_WITHOUT_DEVICE() \
  if (!cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device"

Mask Causal() { return Mask{true, -1, -1}; }
Mask Window(int64_t l, int64_t r) { return Mask{false, l, r}; }
Mask CausalWindow(int64_t l) { return Mask{true, l, -1}; }

// Device buffer filled from host bytes (or poisoned with 0xff bytes: NaN in
// fp32, bf16 and fp16).
cuda::DeviceBuffer Upload(const void* src, int64_t bytes) {
  absl::StatusOr<cuda::DeviceBuffer> buf = cuda::DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(buf.ok()) << buf.status();
  if (!buf.ok()) return {};
  const absl::Status s = cuda::CopyToDevice(buf->data(), src, bytes);
  EXPECT_TRUE(s.ok()) << s;
  return *std::move(buf);
}
template <typename T>
cuda::DeviceBuffer Upload(const std::vector<T>& v) {
  return Upload(v.data(), static_cast<int64_t>(v.size() * sizeof(T)));
}
cuda::DeviceBuffer Poisoned(int64_t bytes) {
  absl::StatusOr<cuda::DeviceBuffer> buf = cuda::DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(buf.ok()) << buf.status();
  if (!buf.ok()) return {};
  EXPECT_TRUE(cuda::Fill(buf->data(), 0xff, bytes).ok());
  return *std::move(buf);
}
cuda::DeviceBuffer Zeros(int64_t bytes) {
  absl::StatusOr<cuda::DeviceBuffer> buf = cuda::DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(buf.ok()) << buf.status();
  if (!buf.ok()) return {};
  EXPECT_TRUE(cuda::Fill(buf->data(), 0, bytes).ok());
  return *std::move(buf);
}
template <typename T>
std::vector<T> Download(const cuda::DeviceBuffer& buf, int64_t count) {
  std::vector<T> v(count);
  const absl::Status s = cuda::CopyToHost(v.data(), buf.data(), count * sizeof(T));
  EXPECT_TRUE(s.ok()) << s;
  return v;
}

// Contiguous [B, S, H, D] values of a dtype-typed device tensor as float.
std::vector<float> ToFloats(const cuda::DeviceBuffer& buf, DType t, int64_t count) {
  if (t == DType::kFloat32) return Download<float>(buf, count);
  const std::vector<uint16_t> w = Download<uint16_t>(buf, count);
  std::vector<float> f(count);
  for (int64_t i = 0; i < count; ++i) f[i] = FromBits(t, w[i]);
  return f;
}

// The problem's inputs on the device, with the same strides as on the host.
struct DeviceInputs {
  cuda::DeviceBuffer q, k, v, dout, docs, blocks;  // the mask's cu_seqlens and block bits, if any
};
DeviceInputs UploadInputs(const Problem& pr) {
  DeviceInputs in{Upload(pr.tq.words), Upload(pr.tk.words), Upload(pr.tv.words),
                  Upload(pr.tdout.words), {}, {}};
  const Mask& m = pr.c.mask;
  if (m.HasDocuments()) in.docs = Upload(m.cu_seqlens, (m.num_docs + 1) * 8);
  if (m.HasBlocks()) in.blocks = Upload(m.blocks, m.block_heads * m.block_rows * m.block_cols);
  return in;
}
AttnParams DeviceParams(const Problem& pr, const DeviceInputs& in) {
  AttnParams p = pr.Params();
  p.q = in.q.data();
  p.k = in.k.data();
  p.v = in.v.data();
  p.dout = in.dout.data();
  if (p.mask.HasDocuments()) p.mask.cu_seqlens = in.docs.as<const int64_t>();
  if (p.mask.HasBlocks()) p.mask.blocks = in.blocks.as<const uint8_t>();
  return p;
}

struct ForwardResult {
  std::vector<float> out, lse;  // out contiguous, as float
};

ForwardResult RunForward(const Problem& pr, DType out_dtype) {
  const Case& c = pr.c;
  const DeviceInputs in = UploadInputs(pr);
  AttnParams p = DeviceParams(pr, in);
  const int64_t n_out = c.batch * c.seqlen_q * c.heads * c.head_dim;
  const int64_t n_lse = c.batch * c.heads * c.seqlen_q;
  cuda::DeviceBuffer out = Poisoned(n_out * DTypeSize(out_dtype));
  cuda::DeviceBuffer lse = Poisoned(n_lse * 4);
  p.out = out.data();
  p.out_stride = TensorStrides::Contiguous(c.seqlen_q, c.heads, c.head_dim);
  p.out_dtype = out_dtype;
  p.lse = lse.as<float>();
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  const absl::Status s = cuda::Forward(p, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  const absl::Status sync = cuda::Synchronize(nullptr);
  EXPECT_TRUE(sync.ok()) << sync;
  return {ToFloats(out, out_dtype, n_out), Download<float>(lse, n_lse)};
}

// Backward from the reference out (rounded to dtype) and lse, as a ring
// would run it from the merged forward results; grads rounded to dtype.
Grads RunBackward(const Problem& pr, const std::vector<double>& out_ref,
                  const std::vector<double>& lse_ref, bool deterministic) {
  const Case& c = pr.c;
  const DeviceInputs in = UploadInputs(pr);
  AttnParams p = DeviceParams(pr, in);
  std::vector<float> lse(lse_ref.begin(), lse_ref.end());
  std::vector<uint16_t> out(out_ref.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = ToBits(c.dtype, static_cast<float>(out_ref[i]));
  const cuda::DeviceBuffer d_lse = Upload(lse), d_out = Upload(out);
  const cuda::DeviceBuffer dsum = Poisoned(static_cast<int64_t>(lse.size()) * 4);
  const TensorStrides contiguous = TensorStrides::Contiguous(c.seqlen_q, c.heads, c.head_dim);
  absl::Status s =
      cuda::RowDot(in.dout.data(), pr.tdout.stride, c.dtype, d_out.data(), contiguous, c.dtype,
                   dsum.as<float>(), c.batch, c.seqlen_q, c.heads, c.head_dim, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  const int64_t nq = c.batch * c.seqlen_q * c.heads * c.head_dim;
  const int64_t nk = c.batch * c.seqlen_k * c.heads_k * c.head_dim;
  const cuda::DeviceBuffer dq = Zeros(nq * 4), dk = Zeros(nk * 4), dv = Zeros(nk * 4);
  p.lse = d_lse.as<float>();
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  p.dsum = dsum.as<float>();
  p.dq_accum = dq.as<float>();
  p.dk_accum = dk.as<float>();
  p.dv_accum = dv.as<float>();
  s = cuda::Backward(p, deterministic, nullptr);
  EXPECT_TRUE(s.ok()) << s;
  s = cuda::Synchronize(nullptr);
  EXPECT_TRUE(s.ok()) << s;
  Grads g{Download<float>(dq, nq), Download<float>(dk, nk), Download<float>(dv, nk)};
  for (auto* x : {&g.dq, &g.dk, &g.dv})
    for (float& val : *x) val = RoundToDType(c.dtype, val);
  return g;
}

// Checks forward results against the reference with flash-attn's rule.
void ExpectForwardClose(const Problem& pr, const ForwardResult& r, DType out_dtype) {
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  std::vector<float> out_naive, lse_naive;
  NaiveForward(pr, &out_naive, &lse_naive);
  // An fp32 output of 16-bit inputs is held to the 16-bit bound (its error
  // is smaller: the output is not rounded).
  const DType t = out_dtype == DType::kFloat32 ? pr.c.dtype : out_dtype;
  EXPECT_LE(MaxError(r.out, out_ref), Tolerance(MaxError(out_naive, out_ref), t));
  EXPECT_LE(MaxError(r.lse, lse_ref), Tolerance(MaxError(lse_naive, lse_ref), DType::kFloat32));
  for (float o : r.out) ASSERT_FALSE(std::isnan(o)) << "output not written";
  for (float l : r.lse) ASSERT_FALSE(std::isnan(l)) << "lse not written";
}

std::vector<Case> SweepCases() {
  std::vector<Case> cases;
  // Every dtype, head dim and mask.
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int64_t d : {64, 128, 256})
      for (Mask m : {Mask{}, Causal(), Window(40, 8), CausalWindow(33)}) {
        Case c;
        c.seqlen_q = 129;
        c.seqlen_k = 129;
        c.heads = 2;
        c.heads_k = 1;
        c.head_dim = d;
        c.dtype = t;
        c.mask = m;
        cases.push_back(c);
      }
  // Odd lengths (tails of every tile size), S_q != S_k.
  for (auto [sq, sk] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 7}, {1000, 1000}, {4097, 4097}, {129, 300}, {300, 65}, {1, 1000}}) {
    for (Mask m : {Mask{}, Causal()}) {
      if (sq == 4097 && m.IsNone()) continue;  // keeps the float64 reference short
      Case c;
      c.seqlen_q = sq;
      c.seqlen_k = sk;
      c.heads = 1;
      c.heads_k = 1;
      c.head_dim = sq >= 1000 ? (sq == 1000 && m.causal ? 256 : 64) : sq == 7 ? 256 : 128;
      c.dtype = DType::kBFloat16;
      c.mask = m;
      cases.push_back(c);
    }
  }
  // GQA ratios.
  for (int64_t ratio : {1, 2, 4, 8}) {
    Case c;
    c.heads = 8;
    c.heads_k = 8 / ratio;
    c.seqlen_q = 97;
    c.seqlen_k = 150;
    c.head_dim = ratio == 4 ? 128 : ratio == 2 ? 256 : 64;
    c.dtype = DType::kBFloat16;
    c.mask = Window(40, 3);
    cases.push_back(c);
  }
  // Softcap and batch, both dtypes; D=256 with softcap is Gemma's shape
  // (unmasked: full tiles; causal: masked ones).
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (Mask m : {Mask{}, Causal()})
      for (int64_t d : {128, 256}) {
        Case c;
        c.batch = 2;
        c.seqlen_q = 150;
        c.seqlen_k = 150;
        c.head_dim = d;
        c.softcap = 1.5f;
        c.dtype = t;
        c.mask = m;
        cases.push_back(c);
      }
  // Global offsets as a sharded rank sees them: offsets, zigzag, striped.
  for (PosKind qk : {PosKind::kOffset, PosKind::kTwoRanges, PosKind::kStriped})
    for (PosKind kk : {PosKind::kFromZero, PosKind::kTwoRanges, PosKind::kStriped})
      for (Mask m : {Causal(), Window(50, 10)}) {
        Case c;
        c.seqlen_q = 150;
        c.seqlen_k = 170;
        c.head_dim = kk == PosKind::kStriped ? 256 : 64;
        c.dtype = DType::kBFloat16;
        c.q_pos = qk;
        c.k_pos = kk;
        c.mask = m;
        cases.push_back(c);
      }
  // Packed documents (device memory) with every rule, prefix-LM.
  int turn = 0;
  for (DocKind dk : {DocKind::kTiny, DocKind::kMixed, DocKind::kTileEdges})
    for (Mask m : {Causal(), Mask{}, CausalWindow(30), Mask::PrefixLM(70)}) {
      Case c;
      c.seqlen_q = c.seqlen_k = 300;
      c.heads = 4;
      c.heads_k = 2;
      c.head_dim = turn % 3 == 0 ? 64 : turn % 3 == 1 ? 128 : 256;
      c.dtype = turn % 2 == 0 ? DType::kBFloat16 : DType::kFloat16;
      c.q_pos = c.k_pos = turn % 4 < 2 ? PosKind::kFromZero : PosKind::kTwoRanges;
      c.mask = WithTestDocuments(m, dk);
      ++turn;
      cases.push_back(c);
    }
  // Block masks (device memory): every kind, per head with GQA, blocks
  // smaller than a tile, tile-sized and unaligned, sharded positions.
  turn = 0;
  for (BlockKind bk : {BlockKind::kRandom, BlockKind::kAllOff, BlockKind::kAllOn, BlockKind::kDiagonal})
    for (int64_t size : {16, 64, 50}) {
      Case c;
      c.seqlen_q = c.seqlen_k = 300;
      c.heads = 4;
      c.heads_k = 2;
      c.head_dim = turn % 3 == 0 ? 64 : turn % 3 == 1 ? 128 : 256;
      c.dtype = turn % 2 == 0 ? DType::kBFloat16 : DType::kFloat16;
      c.q_pos = c.k_pos = turn % 3 == 0 ? PosKind::kFromZero
                          : turn % 3 == 1 ? PosKind::kTwoRanges : PosKind::kStriped;
      const Mask base = turn % 2 == 0 ? Causal() : WithTestDocuments(CausalWindow(40), DocKind::kMixed);
      c.mask = WithTestBlocks(base, bk, size, size == 16 ? 4 : 1);
      ++turn;
      cases.push_back(c);
    }
  return cases;
}

class CudaKernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(CudaKernelTest, ForwardMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  const Problem pr = MakeProblem(GetParam(), 1234);
  ExpectForwardClose(pr, RunForward(pr, pr.c.dtype), pr.c.dtype);
}

// The backward of `pr` in both dQ modes against the float64 reference.
void ExpectBackwardClose(const Problem& pr) {
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref, &dk_ref,
                    &dv_ref);
  std::vector<float> dq_n, dk_n, dv_n;
  NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
  const DType t = pr.c.dtype;
  for (bool deterministic : {false, true}) {
    SCOPED_TRACE(deterministic ? "deterministic" : "atomic dQ");
    const Grads g = RunBackward(pr, out_ref, lse_ref, deterministic);
    EXPECT_LE(MaxError(g.dq, dq_ref), Tolerance(MaxError(dq_n, dq_ref), t));
    EXPECT_LE(MaxError(g.dk, dk_ref), Tolerance(MaxError(dk_n, dk_ref), t));
    EXPECT_LE(MaxError(g.dv, dv_ref), Tolerance(MaxError(dv_n, dv_ref), t));
  }
}

TEST_P(CudaKernelTest, BackwardMatchesReference) {
  SKIP_WITHOUT_DEVICE();
  ExpectBackwardClose(MakeProblem(GetParam(), 99));
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaKernelTest, ::testing::ValuesIn(SweepCases()),
                         [](const auto& info) {
                           return info.param.Name() + "_" + std::to_string(info.index);
                         });

// Attention sinks: the mask runs as two parts, each in fp32, merged on the
// stream: in place into fp32 outputs (the ring's partials), or stored into a
// 16-bit output (the single-device call), rounded once; the backward adds
// both parts.
TEST(CudaKernel, SinkPartsMergeIntoEveryOutput) {
  SKIP_WITHOUT_DEVICE();
  int turn = 0;
  for (Mask m : {Mask::Sink(4, 30), Mask::Sink(70, 20), WithTestDocuments(Mask::Sink(5, 25), DocKind::kMixed)}) {
    Case c;
    c.seqlen_q = 260;
    c.seqlen_k = 300;
    c.heads = 4;
    c.heads_k = 2;
    c.head_dim = 64;
    c.dtype = turn++ == 1 ? DType::kFloat16 : DType::kBFloat16;
    c.mask = m;
    SCOPED_TRACE(c.Name());
    const Problem pr = MakeProblem(c, 5);
    for (DType out_dtype : {DType::kFloat32, c.dtype}) {
      ExpectForwardClose(pr, RunForward(pr, out_dtype), out_dtype);
    }
    ExpectBackwardClose(pr);
  }
}

// A ring's partial results: each half of the keys in fp32, merged on the
// device, must match the whole.
TEST(CudaKernel, Fp32PartialsMergeToTheWhole) {
  SKIP_WITHOUT_DEVICE();
  for (int64_t d : {64, 128, 256}) {
    Case c;
    c.seqlen_q = 200;
    c.seqlen_k = 300;
    c.heads = 4;
    c.heads_k = 2;
    c.head_dim = d;
    c.dtype = DType::kBFloat16;
    c.mask = Causal();
    c.q_pos = PosKind::kOffset;  // queries at 38.., keys at 0..: a later rank
    const Problem pr = MakeProblem(c, 21);
    const DeviceInputs in = UploadInputs(pr);
    const int64_t n_out = c.seqlen_q * c.heads * d, n_lse = c.heads * c.seqlen_q;
    cuda::DeviceBuffer acc_out = Poisoned(n_out * 4), acc_lse = Poisoned(n_lse * 4);
    cuda::DeviceBuffer part_out = Poisoned(n_out * 4), part_lse = Poisoned(n_lse * 4);
    const int64_t split = 137;  // keys [0, split) and [split, S_k)
    for (int half = 0; half < 2; ++half) {
      AttnParams p = DeviceParams(pr, in);
      const int64_t j0 = half == 0 ? 0 : split;
      p.seqlen_k = half == 0 ? split : c.seqlen_k - split;
      p.k = static_cast<const uint16_t*>(p.k) + j0 * p.k_stride.seq;
      p.v = static_cast<const uint16_t*>(p.v) + j0 * p.v_stride.seq;
      p.k_pos = PositionMap::Contiguous(pr.kmap.Global(j0), p.seqlen_k);
      p.out = (half == 0 ? acc_out : part_out).data();
      p.out_stride = TensorStrides::Contiguous(c.seqlen_q, c.heads, d);
      p.out_dtype = DType::kFloat32;
      p.lse = (half == 0 ? acc_lse : part_lse).as<float>();
      p.lse_batch_stride = n_lse;
      p.lse_head_stride = c.seqlen_q;
      const absl::Status s = cuda::Forward(p, nullptr);
      ASSERT_TRUE(s.ok()) << s;
    }
    const absl::Status s =
        cuda::MergePartial(acc_out.as<float>(), acc_lse.as<float>(), part_out.as<float>(),
                           part_lse.as<float>(), 1, c.seqlen_q, c.heads, d, nullptr);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(cuda::Synchronize(nullptr).ok());
    ExpectForwardClose(pr, {Download<float>(acc_out, n_out), Download<float>(acc_lse, n_lse)},
                       DType::kFloat32);
  }
}

// Both input dtypes into fp32 and 16-bit outputs, a window and offset keys.
void ExpectFp32And16BitOutputsClose() {
  Case c;
  c.seqlen_q = 300;
  c.seqlen_k = 250;
  c.mask = CausalWindow(100);
  c.k_pos = PosKind::kOffset;
  for (DType in : {DType::kBFloat16, DType::kFloat16})
    for (DType out : {DType::kFloat32, in}) {
      c.dtype = in;
      SCOPED_TRACE(std::string(DTypeName(in)) + " -> " + DTypeName(out));
      const Problem pr = MakeProblem(c, 3);
      ExpectForwardClose(pr, RunForward(pr, out), out);
    }
}

TEST(CudaKernel, Fp32And16BitOutputs) {
  SKIP_WITHOUT_DEVICE();
  ExpectFp32And16BitOutputsClose();
}

// Tensors stored head-major [B, H, S, D + 8]: aligned, non-contiguous.
TEST(CudaKernel, HeadMajorStrides) {
  SKIP_WITHOUT_DEVICE();
  Case c;
  c.batch = 2;
  c.seqlen_q = 100;
  c.seqlen_k = 130;
  c.heads = 4;
  c.heads_k = 2;
  c.head_dim = 64;
  c.dtype = DType::kBFloat16;
  c.mask = Causal();
  Problem pr = MakeProblem(c, 8);
  auto head_major = [&](const std::vector<float>& x, int64_t S, int64_t H) {
    Tensor t;
    t.dtype = c.dtype;
    const int64_t row = c.head_dim + 8;
    t.stride = {H * S * row, row, S * row};
    t.words.assign(c.batch * H * S * row, ToBits(c.dtype, std::numeric_limits<float>::quiet_NaN()));
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < c.head_dim; ++d)
            t.words[b * t.stride.batch + i * t.stride.seq + h * t.stride.head + d] =
                ToBits(c.dtype, x[((b * S + i) * H + h) * c.head_dim + d]);
    return t;
  };
  pr.tq = head_major(pr.q, c.seqlen_q, c.heads);
  pr.tk = head_major(pr.k, c.seqlen_k, c.heads_k);
  pr.tv = head_major(pr.v, c.seqlen_k, c.heads_k);
  pr.tdout = head_major(pr.dout, c.seqlen_q, c.heads);
  ExpectForwardClose(pr, RunForward(pr, c.dtype), c.dtype);
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref, &dk_ref,
                    &dv_ref);
  std::vector<float> dq_n, dk_n, dv_n;
  NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
  const Grads g = RunBackward(pr, out_ref, lse_ref, /*deterministic=*/false);
  EXPECT_LE(MaxError(g.dq, dq_ref), Tolerance(MaxError(dq_n, dq_ref), c.dtype));
  EXPECT_LE(MaxError(g.dk, dk_ref), Tolerance(MaxError(dk_n, dk_ref), c.dtype));
  EXPECT_LE(MaxError(g.dv, dv_ref), Tolerance(MaxError(dv_n, dv_ref), c.dtype));
}

TEST(CudaKernel, FullyMaskedRowsGiveZeroAndNegInf) {
  SKIP_WITHOUT_DEVICE();
  for (int64_t d : {64, 128, 256}) {
    Case c;
    c.seqlen_q = 170;
    c.seqlen_k = 90;
    c.head_dim = d;
    c.dtype = DType::kBFloat16;
    c.q_pos = PosKind::kFromZero;
    c.k_pos = PosKind::kOffset;  // keys start at 39: queries 0..38 see nothing
    c.mask = Causal();
    const Problem pr = MakeProblem(c, 5);
    const ForwardResult r = RunForward(pr, c.dtype);
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 0; i < c.seqlen_q; ++i) {
        const bool empty = pr.qmap.Global(i) < pr.kmap.Global(0);
        const float lse = r.lse[h * c.seqlen_q + i];
        if (empty) {
          EXPECT_EQ(lse, -INFINITY) << "row " << i;
          for (int64_t x = 0; x < d; ++x) EXPECT_EQ(r.out[(i * c.heads + h) * d + x], 0.0f);
        } else {
          EXPECT_TRUE(std::isfinite(lse)) << "row " << i;
        }
      }
    std::vector<double> out_ref, lse_ref;
    ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
    for (bool det : {false, true}) {
      const Grads g = RunBackward(pr, out_ref, lse_ref, det);
      for (const auto* x : {&g.dq, &g.dk, &g.dv})
        for (float val : *x) ASSERT_TRUE(std::isfinite(val));
    }
  }
}

// NaN and Inf in K and V at keys no query may see (causal future, outside a
// window) must not reach out, lse, dq, dk or dv.
TEST(CudaKernel, NonFiniteAtMaskedKeysStaysOut) {
  SKIP_WITHOUT_DEVICE();
  for (Mask m : {Causal(), Window(10, 0), CausalWindow(5)}) {
    const Problem pr = NonFiniteAtMaskedKeys(m, 64, DType::kBFloat16);
    const Case& c = pr.c;
    const ForwardResult r = RunForward(pr, c.dtype);
    const std::vector<double> out_ref(r.out.begin(), r.out.end());
    const std::vector<double> lse_ref(r.lse.begin(), r.lse.end());
    for (bool det : {false, true}) {
      const Grads g = RunBackward(pr, out_ref, lse_ref, det);
      EXPECT_TRUE(MaskedKeysStayedOut(pr, r.out, r.lse, g)) << m.ToString() << " det " << det;
    }
  }
}

TEST(CudaKernel, DeterministicModeIsBitwiseReproducible) {
  SKIP_WITHOUT_DEVICE();
  for (int64_t d : {64, 128, 256}) {
    Case c;
    c.heads = 4;
    c.heads_k = 1;
    c.seqlen_q = 333;
    c.seqlen_k = 333;
    c.head_dim = d;
    c.mask = Causal();
    c.dtype = DType::kBFloat16;
    const Problem pr = MakeProblem(c, 8);
    std::vector<double> out_ref, lse_ref;
    ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
    const ForwardResult a = RunForward(pr, c.dtype), b = RunForward(pr, c.dtype);
    EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4));
    const Grads ga = RunBackward(pr, out_ref, lse_ref, true);
    const Grads gb = RunBackward(pr, out_ref, lse_ref, true);
    EXPECT_EQ(0, std::memcmp(ga.dq.data(), gb.dq.data(), ga.dq.size() * 4));
    EXPECT_EQ(0, std::memcmp(ga.dk.data(), gb.dk.data(), ga.dk.size() * 4));
    EXPECT_EQ(0, std::memcmp(ga.dv.data(), gb.dv.data(), ga.dv.size() * 4));
  }
}

// Batch strides above 2^31 elements: offsets must be 64-bit all the way.
TEST(CudaKernel, OffsetsBeyond32Bits) {
  SKIP_WITHOUT_DEVICE();
  Case c;
  c.batch = 2;
  c.seqlen_q = 70;
  c.seqlen_k = 90;
  c.heads = 2;
  c.heads_k = 1;
  c.head_dim = 64;
  c.dtype = DType::kBFloat16;
  c.mask = Causal();
  const Problem pr = MakeProblem(c, 31);
  const int64_t big = (int64_t{1} << 31) + 64;  // elements between batches
  const int64_t rows = std::max(c.seqlen_q * c.heads, c.seqlen_k * c.heads_k);
  const int64_t bytes = (big + rows * c.head_dim) * 2;  // batch 1 starts at `big`
  std::vector<cuda::DeviceBuffer> bufs;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<cuda::DeviceBuffer> b = cuda::DeviceBuffer::Allocate(bytes);
    if (!b.ok()) GTEST_SKIP() << "not enough device memory: " << b.status();
    bufs.push_back(*std::move(b));
  }
  // q, k, v at batch stride `big`; out too.
  auto put = [&](cuda::DeviceBuffer& dst, const Tensor& t, int64_t S, int64_t H) {
    const int64_t per = S * H * c.head_dim;
    for (int64_t b = 0; b < c.batch; ++b) {
      ASSERT_TRUE(cuda::CopyToDevice(static_cast<uint16_t*>(dst.data()) + b * big,
                                     t.words.data() + b * per, per * 2)
                      .ok());
    }
  };
  put(bufs[0], pr.tq, c.seqlen_q, c.heads);
  put(bufs[1], pr.tk, c.seqlen_k, c.heads_k);
  put(bufs[2], pr.tv, c.seqlen_k, c.heads_k);
  ASSERT_TRUE(cuda::Fill(bufs[3].data(), 0xff, bytes).ok());
  AttnParams p = pr.Params();
  p.q = bufs[0].data();
  p.k = bufs[1].data();
  p.v = bufs[2].data();
  p.q_stride = {big, c.heads * c.head_dim, c.head_dim};
  p.k_stride = p.v_stride = {big, c.heads_k * c.head_dim, c.head_dim};
  p.out = bufs[3].data();
  p.out_stride = p.q_stride;
  const int64_t n_lse = c.batch * c.heads * c.seqlen_q;
  cuda::DeviceBuffer lse = Poisoned(n_lse * 4);
  p.lse = lse.as<float>();
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  ASSERT_TRUE(cuda::Forward(p, nullptr).ok());
  ASSERT_TRUE(cuda::Synchronize(nullptr).ok());
  const int64_t per = c.seqlen_q * c.heads * c.head_dim;
  std::vector<float> out(c.batch * per);
  for (int64_t b = 0; b < c.batch; ++b) {
    std::vector<uint16_t> w(per);
    ASSERT_TRUE(
        cuda::CopyToHost(w.data(), static_cast<uint16_t*>(bufs[3].data()) + b * big, per * 2).ok());
    for (int64_t i = 0; i < per; ++i) out[b * per + i] = FromBits(c.dtype, w[i]);
  }
  ExpectForwardClose(pr, {out, Download<float>(lse, n_lse)}, c.dtype);
}

TEST(CudaKernel, MergeMatchesHost) {
  SKIP_WITHOUT_DEVICE();
  const int64_t B = 2, S = 77, H = 3, D = 40, n = B * S * H * D, m = B * H * S;
  std::vector<float> ao = RandomValues(n, DType::kFloat32, 1),
                     po = RandomValues(n, DType::kFloat32, 2);
  std::vector<float> al = RandomValues(m, DType::kFloat32, 3, 3.0f);
  std::vector<float> pl = RandomValues(m, DType::kFloat32, 4, 3.0f);
  for (int64_t i = 0; i < m; i += 5) al[i] = -INFINITY;  // both -inf at i % 35 == 0
  for (int64_t i = 0; i < m; i += 7) pl[i] = -INFINITY;
  const cuda::DeviceBuffer dao = Upload(ao), dpo = Upload(po), dal = Upload(al), dpl = Upload(pl);
  MergePartial(ao.data(), al.data(), po.data(), pl.data(), B, S, H, D, 1);
  const absl::Status s = cuda::MergePartial(dao.as<float>(), dal.as<float>(), dpo.as<float>(),
                                            dpl.as<float>(), B, S, H, D, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(cuda::Synchronize(nullptr).ok());
  const std::vector<float> out = Download<float>(dao, n), lse = Download<float>(dal, m);
  for (int64_t i = 0; i < m; ++i) {
    if (al[i] == -INFINITY) {
      EXPECT_EQ(lse[i], -INFINITY) << i;
    } else {
      EXPECT_NEAR(lse[i], al[i], 1e-5f * (1.0f + std::abs(al[i]))) << i;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(out[i])) << i;
    EXPECT_NEAR(out[i], ao[i], 1e-5f * (1.0f + std::abs(ao[i]))) << i;
  }
}

TEST(CudaKernel, RowDotMatchesHost) {
  SKIP_WITHOUT_DEVICE();
  const int64_t B = 2, S = 33, H = 3, D = 64;
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    const std::vector<float> dout = RandomValues(B * S * H * D, t, 1);
    const std::vector<float> out = RandomValues(B * S * H * D, DType::kFloat32, 2);
    const Tensor td = MakeTensor(dout, B, S, H, D, t, /*strided=*/false);
    const cuda::DeviceBuffer dd = Upload(td.words), dout32 = Upload(out);
    const cuda::DeviceBuffer dsum = Poisoned(B * H * S * 4);
    const absl::Status s =
        cuda::RowDot(dd.data(), td.stride, t, dout32.data(), TensorStrides::Contiguous(S, H, D),
                     DType::kFloat32, dsum.as<float>(), B, S, H, D, nullptr);
    ASSERT_TRUE(s.ok()) << s;
    const std::vector<float> got = Download<float>(dsum, B * H * S);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t h = 0; h < H; ++h) {
          double acc = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            const int64_t off = ((b * S + i) * H + h) * D + d;
            acc += static_cast<double>(dout[off]) * out[off];
          }
          EXPECT_NEAR(got[(b * H + h) * S + i], acc, 1e-4 * (1.0 + std::abs(acc)));
        }
  }
}

TEST(CudaKernel, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_DEVICE();
  Case c;
  c.dtype = DType::kBFloat16;
  const Problem pr = MakeProblem(c, 1);
  const DeviceInputs in = UploadInputs(pr);
  AttnParams p = DeviceParams(pr, in);
  cuda::DeviceBuffer out = Poisoned(64 * 2 * 64 * 4), lse = Poisoned(2 * 64 * 4);
  p.out = out.data();
  p.out_stride = TensorStrides::Contiguous(64, 2, 64);
  p.lse = lse.as<float>();
  p.lse_batch_stride = 2 * 64;
  p.lse_head_stride = 64;
  ASSERT_TRUE(cuda::Forward(p, nullptr).ok());
  AttnParams bad = p;
  bad.head_dim = 96;
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kUnimplemented);
  bad = p;
  bad.dtype = DType::kFloat32;
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kUnimplemented);
  bad = p;
  bad.q_stride.seq = 67;  // rows not 16-byte aligned
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.q = static_cast<const uint16_t*>(p.q) + 1;
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.num_heads_k = 3;
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.scale = NAN;
  EXPECT_EQ(cuda::Forward(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.dq_accum = nullptr;
  EXPECT_EQ(cuda::Backward(bad, false, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cuda::Synchronize(nullptr).ok());
}

// CheckParams is host code, so this refusal is checked without a device
// too: sequences of 2^31 tokens or more (the kernels count tiles with 32-bit
// integers), named in the error. No memory is touched.
TEST(CudaKernelParams, RefusesSequencesTooLongForTheKernels) {
  Case c;
  c.dtype = DType::kBFloat16;
  const Problem pr = MakeProblem(c, 1);
  AttnParams p = pr.Params();
  alignas(16) static uint16_t fake[8];
  p.q = p.k = p.v = fake;
  p.out = fake;
  p.lse = reinterpret_cast<float*>(fake);
  const absl::Status valid = cuda::CheckParams(p, /*backward=*/false);
  if (valid.code() == absl::StatusCode::kUnimplemented &&
      valid.message().find("built without CUDA") != absl::string_view::npos) {
    GTEST_SKIP() << valid.message();  // the stub: no kernels to check for
  }
  ASSERT_TRUE(valid.ok()) << valid;
  for (const bool keys : {false, true}) {
    AttnParams bad = p;
    const int64_t n = int64_t{1} << 31;
    (keys ? bad.seqlen_k : bad.seqlen_q) = n;
    (keys ? bad.k_pos : bad.q_pos) = PositionMap::Contiguous(0, n);
    const absl::Status s = cuda::CheckParams(bad, false);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(keys ? "S_k=2147483648" : "S_q=2147483648"), std::string::npos)
        << s;
  }
}

// ------------------------------------------------ the Hopper forward (sm_90a)
// The same checks with RINGATTN_CUDA_KERNELS=sm90a, which runs
// fwd_sm90_kernel.cuh; they skip without a device and on devices other than
// compute capability 9.0.

bool Hopper() { return cuda::DeviceComputeCapability() == 90; }

// Sets RINGATTN_CUDA_KERNELS for a scope (the dispatch reads it at each call).
class ScopedKernels {
 public:
  explicit ScopedKernels(const char* value) {
    const char* old = std::getenv("RINGATTN_CUDA_KERNELS");
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv("RINGATTN_CUDA_KERNELS", value, 1);
  }
  ~ScopedKernels() {
    if (had_) {
      setenv("RINGATTN_CUDA_KERNELS", old_.c_str(), 1);
    } else {
      unsetenv("RINGATTN_CUDA_KERNELS");
    }
  }

 private:
  bool had_ = false;
  std::string old_;
};

#define SKIP_WITHOUT_HOPPER()                                                   \
  SKIP_WITHOUT_DEVICE();                                                        \
  if (!Hopper()) GTEST_SKIP() << "not compute capability 9.0 (the sm_90a kernels)"

class CudaSm90aTest : public ::testing::TestWithParam<Case> {};

TEST_P(CudaSm90aTest, ForwardMatchesReference) {
  SKIP_WITHOUT_HOPPER();
  ScopedKernels kernels("sm90a");
  const Problem pr = MakeProblem(GetParam(), 1234);
  ExpectForwardClose(pr, RunForward(pr, pr.c.dtype), pr.c.dtype);
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaSm90aTest, ::testing::ValuesIn(SweepCases()),
                         [](const auto& info) {
                           return info.param.Name() + "_" + std::to_string(info.index);
                         });

TEST(CudaSm90a, Fp32And16BitOutputs) {
  SKIP_WITHOUT_HOPPER();
  ScopedKernels kernels("sm90a");
  ExpectFp32And16BitOutputsClose();
}

TEST(CudaSm90a, NonFiniteAtMaskedKeysStaysOut) {
  SKIP_WITHOUT_HOPPER();
  ScopedKernels kernels("sm90a");
  for (Mask m : {Causal(), Window(10, 0), CausalWindow(5)})
    for (int64_t d : {64, 128, 256}) {
      const Problem pr = NonFiniteAtMaskedKeys(m, d, DType::kBFloat16);
      const ForwardResult r = RunForward(pr, pr.c.dtype);
      const std::vector<double> out_ref(r.out.begin(), r.out.end());
      const std::vector<double> lse_ref(r.lse.begin(), r.lse.end());
      const Grads g = RunBackward(pr, out_ref, lse_ref, /*deterministic=*/false);
      EXPECT_TRUE(MaskedKeysStayedOut(pr, r.out, r.lse, g)) << m.ToString() << " d " << d;
    }
}

// The choice is read before any device work, so a bad value is refused (by
// name) without a device too.
TEST(CudaKernelParams, RefusesAnUnknownKernelChoice) {
  Case c;
  c.dtype = DType::kBFloat16;
  const Problem pr = MakeProblem(c, 1);
  AttnParams p = pr.Params();
  alignas(16) static uint16_t fake[8];
  p.q = p.k = p.v = fake;
  p.out = fake;
  p.lse = reinterpret_cast<float*>(fake);
  ScopedKernels kernels("sm91");
  const absl::Status s = cuda::Forward(p, nullptr);
  if (s.code() == absl::StatusCode::kUnimplemented &&
      s.message().find("built without CUDA") != absl::string_view::npos) {
    GTEST_SKIP() << s.message();
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("RINGATTN_CUDA_KERNELS"), std::string::npos) << s;
  EXPECT_NE(s.message().find("sm91"), std::string::npos) << s;
}

// sm90a on a device that is not compute capability 9.0 is an error naming
// the device, not a silent fallback.
TEST(CudaSm90a, RefusedOnOtherDevices) {
  SKIP_WITHOUT_DEVICE();
  if (Hopper()) GTEST_SKIP() << "a compute capability 9.0 device runs them";
  Case c;
  c.dtype = DType::kBFloat16;
  const Problem pr = MakeProblem(c, 1);
  ScopedKernels kernels("sm90a");
  const DeviceInputs in = UploadInputs(pr);
  AttnParams p = DeviceParams(pr, in);
  cuda::DeviceBuffer out = Poisoned(64 * 2 * 64 * 4), lse = Poisoned(2 * 64 * 4);
  p.out = out.data();
  p.out_stride = TensorStrides::Contiguous(64, 2, 64);
  p.lse = lse.as<float>();
  p.lse_batch_stride = 2 * 64;
  p.lse_head_stride = 64;
  const absl::Status s = cuda::Forward(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_NE(s.message().find("compute capability 9.0"), std::string::npos) << s;
}

}  // namespace
}  // namespace ringattn::testing
