// Timing and self-check binary for the CUDA attention kernels, used by
// tools/gpu_check.sh next to PyTorch's SDPA (bench/sdpa_bench.py).
//
//   cuda_attn_bench --check        ours vs naive fp32 GPU kernels (forward,
//                                  backward fast and deterministic, merge)
//                                  on small odd-sized problems; exit 1 on a
//                                  mismatch. Needs no Abseil or GoogleTest,
//                                  so it also runs where only nvcc exists.
//   cuda_attn_bench --bench [--csv FILE] [--reps N]
//                                  bf16, D in {64, 128, 256}, S in {2048, 8192,
//                                  16384}, causal and not, B = 16384 / S,
//                                  H = 2048 / D: median time over N runs
//                                  (CUDA events, after warm-up) and TFLOP/s
//                                  counting visible pairs (causal: half);
//                                  backward = RowDot + Backward, 2.5x the
//                                  forward FLOPs. --shape D S causal: that
//                                  shape alone (for profiling with ncu).
//   --kernel sm80|sm90a            the forward kernels checked and timed:
//                                  the mma.sync ones (default) or the Hopper
//                                  ones (compute capability 9.0; the CSV's
//                                  first column says ringattn-sm90a).
// It calls the kernel launchers directly (attention/cuda/launch.h, chosen as
// the library chooses them: attention/cuda/dispatch.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <source_location>
#include <string>
#include <vector>

#include "attention/cuda/device.cuh"
#include "attention/cuda/dispatch.h"
#include "attention/cuda/launch.h"
#include "attention/cuda/traits.h"
#ifdef RINGATTN_TUNE
#include "attention/cuda/bwd_launch.cuh"
#include "attention/cuda/fwd_launch.cuh"
#endif

namespace ringattn::cuda {
namespace {

// Print a failed launch (a launcher's CudaResult) or CUDA runtime call (its
// error, at the caller's line) with its file:line, and exit.
void Check(const CudaResult& r) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s:%d: %s: %s\n", r.file, r.line, r.what, cudaGetErrorString(r.error));
    std::exit(2);
  }
}
void Check(cudaError_t e, std::source_location at = std::source_location::current()) {
  Check(CudaResult{e, at.file_name(), static_cast<int>(at.line()), "CUDA call"});
}

template <typename T>
struct Dev {
  T* p = nullptr;
  int64_t n = 0;
  explicit Dev(int64_t count) : n(count) {
    Check(cudaMalloc(&p, std::max<int64_t>(count, 1) * sizeof(T)));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> Host() const {
    std::vector<T> h(n);
    Check(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// The launched kernels for p's dtype, head dim and softcap (and the
// backward's dQ mode), picked as the library picks them (dispatch.h).
CudaResult NoKernels(const AttnParams& p) {
  std::fprintf(stderr, "no kernels for head dim %ld\n", static_cast<long>(p.head_dim));
  std::exit(2);
}
bool use_sm90a = false;  // --kernel sm90a
CudaResult RunForward(const AttnParams& p) {
  return DispatchForward(
      p,
      [&]<DType kT, int kD, bool kCap>() {
        return use_sm90a ? internal::LaunchForwardSm90<kT, kD, kCap>(p, nullptr)
                         : internal::LaunchForward<kT, kD, kCap>(p, nullptr);
      },
      [&] { return NoKernels(p); });
}
CudaResult RunBackward(const AttnParams& p, bool deterministic) {
  return DispatchBackward(
      p, deterministic,
      [&]<DType kT, int kD, bool kCap, bool kDeterministic>() {
        return internal::LaunchBackward<kT, kD, kCap, kDeterministic>(p, nullptr);
      },
      [&] { return NoKernels(p); });
}

// The naive reference kernels keep one row of D floats per thread.
constexpr int kMaxD = 256;

// Approximately normal values (sum of four hashed uniforms), 16-bit.
template <DType kT>
__global__ void RandomKernel(uint16_t* x, int64_t n, uint32_t seed, float stddev) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (uint32_t k = 0; k < 4; ++k) {
      uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ (seed + k) * 0x9e3779b9u ^
                   static_cast<uint32_t>(i >> 32) * 0x85ebca6bu;
      h ^= h >> 16;
      h *= 0x7feb352du;
      h ^= h >> 15;
      h *= 0x846ca68bu;
      h ^= h >> 16;
      acc += static_cast<float>(h) * (1.0f / 4294967296.0f);
    }
    const float v = (acc - 2.0f) * 1.7320508f * stddev;  // variance 4/12 -> 1
    if constexpr (kT == DType::kBFloat16) {
      const __nv_bfloat16 b = __float2bfloat16_rn(v);
      x[i] = *reinterpret_cast<const uint16_t*>(&b);
    } else {
      const __half b = __float2half_rn(v);
      x[i] = *reinterpret_cast<const uint16_t*>(&b);
    }
  }
}

template <DType kT>
void Random(Dev<uint16_t>& x, uint32_t seed) {
  RandomKernel<kT><<<1024, 256>>>(x.p, x.n, seed, 1.0f);
  Check(cudaGetLastError());
}

__global__ void FillKernel(float* x, int64_t n, float v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = v;
}
void FillF32(Dev<float>& x, float v) {
  FillKernel<<<1024, 256>>>(x.p, x.n, v);
  Check(cudaGetLastError());
}

// ------------------------------------------------- naive fp32 references

// scale * q_i . k_j, before the softcap.
__device__ float ScaledDot(const AttnParams& p, int64_t b, int64_t h, int64_t hk, int64_t i,
                           int64_t j) {
  const int64_t qo = b * p.q_stride.batch + i * p.q_stride.seq + h * p.q_stride.head;
  const int64_t ko = b * p.k_stride.batch + j * p.k_stride.seq + hk * p.k_stride.head;
  float s = 0.0f;
  for (int64_t d = 0; d < p.head_dim; ++d)
    s += detail::LoadAsFloat(p.q, p.dtype, qo + d) * detail::LoadAsFloat(p.k, p.dtype, ko + d);
  return s * p.scale;
}

__device__ float Score(const AttnParams& p, int64_t b, int64_t h, int64_t hk, int64_t i,
                       int64_t j) {
  const float s = ScaledDot(p, b, h, hk, i, j);
  return p.softcap > 0.0f ? p.softcap * tanhf(s / p.softcap) : s;
}

// One thread per (b, h, i); out fp32 [B, Sq, H, D] contiguous, lse [B, H, Sq].
__global__ void NaiveForwardKernel(const AttnParams p, float* out, float* lse) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t Sq = p.seqlen_q, H = p.num_heads, D = p.head_dim;
  if (r >= p.batch * Sq * H) return;
  const int64_t h = r % H, i = (r / H) % Sq, b = r / (H * Sq), hk = h / (H / p.num_heads_k);
  const int64_t qp = detail::GlobalPos(p.q_pos, i);
  float m = -INFINITY, l = 0.0f, o[kMaxD];
  for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
  for (int64_t j = 0; j < p.seqlen_k; ++j) {
    if (!p.mask.Visible(qp, detail::GlobalPos(p.k_pos, j))) continue;
    const float s = Score(p, b, h, hk, i, j);
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new), pj = expf(s - m_new);
    l = l * alpha + pj;
    const int64_t vo = b * p.v_stride.batch + j * p.v_stride.seq + hk * p.v_stride.head;
    for (int64_t d = 0; d < D; ++d)
      o[d] = o[d] * alpha + pj * detail::LoadAsFloat(p.v, p.dtype, vo + d);
    m = m_new;
  }
  for (int64_t d = 0; d < D; ++d) out[r * D + d] = l > 0.0f ? o[d] / l : 0.0f;
  lse[(b * H + h) * Sq + i] = l > 0.0f ? m + logf(l) : -INFINITY;
}

__device__ float Prob(const AttnParams& p, int64_t b, int64_t h, int64_t hk, int64_t i, int64_t j,
                      float lse, float* dtanh) {
  float s = ScaledDot(p, b, h, hk, i, j);
  *dtanh = 1.0f;
  if (p.softcap > 0.0f) {
    const float th = tanhf(s / p.softcap);
    s = p.softcap * th;
    *dtanh = 1.0f - th * th;
  }
  return lse == -INFINITY ? 0.0f : expf(s - lse);
}

__device__ float DpDot(const AttnParams& p, int64_t b, int64_t h, int64_t hk, int64_t i,
                       int64_t j) {
  const int64_t oo = b * p.dout_stride.batch + i * p.dout_stride.seq + h * p.dout_stride.head;
  const int64_t vo = b * p.v_stride.batch + j * p.v_stride.seq + hk * p.v_stride.head;
  float dp = 0.0f;
  for (int64_t d = 0; d < p.head_dim; ++d)
    dp += detail::LoadAsFloat(p.dout, p.dtype, oo + d) * detail::LoadAsFloat(p.v, p.dtype, vo + d);
  return dp;
}

// dq [B, Sq, H, D]: one thread per (b, h, i).
__global__ void NaiveDqKernel(const AttnParams p, float* dq) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t Sq = p.seqlen_q, H = p.num_heads, D = p.head_dim;
  if (r >= p.batch * Sq * H) return;
  const int64_t h = r % H, i = (r / H) % Sq, b = r / (H * Sq), hk = h / (H / p.num_heads_k);
  const int64_t li = b * p.lse_batch_stride + h * p.lse_head_stride + i;
  const float lse = p.lse[li], dsum = p.dsum[li];
  const int64_t qp = detail::GlobalPos(p.q_pos, i);
  float acc[kMaxD];
  for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
  for (int64_t j = 0; j < p.seqlen_k; ++j) {
    if (!p.mask.Visible(qp, detail::GlobalPos(p.k_pos, j))) continue;
    float dt;
    const float pj = Prob(p, b, h, hk, i, j, lse, &dt);
    const float ds = pj * (DpDot(p, b, h, hk, i, j) - dsum) * dt * p.scale;
    const int64_t ko = b * p.k_stride.batch + j * p.k_stride.seq + hk * p.k_stride.head;
    for (int64_t d = 0; d < D; ++d) acc[d] += ds * detail::LoadAsFloat(p.k, p.dtype, ko + d);
  }
  for (int64_t d = 0; d < D; ++d) dq[r * D + d] = acc[d];
}

// dk, dv [B, Sk, Hkv, D]: one thread per (b, hk, j).
__global__ void NaiveDkvKernel(const AttnParams p, float* dk, float* dv) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t Sk = p.seqlen_k, Hk = p.num_heads_k, D = p.head_dim, G = p.num_heads / Hk;
  if (r >= p.batch * Sk * Hk) return;
  const int64_t hk = r % Hk, j = (r / Hk) % Sk, b = r / (Hk * Sk);
  const int64_t kp = detail::GlobalPos(p.k_pos, j);
  float ak[kMaxD], av[kMaxD];
  for (int64_t d = 0; d < D; ++d) ak[d] = av[d] = 0.0f;
  for (int64_t h = hk * G; h < (hk + 1) * G; ++h)
    for (int64_t i = 0; i < p.seqlen_q; ++i) {
      if (!p.mask.Visible(detail::GlobalPos(p.q_pos, i), kp)) continue;
      const int64_t li = b * p.lse_batch_stride + h * p.lse_head_stride + i;
      float dt;
      const float pj = Prob(p, b, h, hk, i, j, p.lse[li], &dt);
      const float ds = pj * (DpDot(p, b, h, hk, i, j) - p.dsum[li]) * dt * p.scale;
      const int64_t qo = b * p.q_stride.batch + i * p.q_stride.seq + h * p.q_stride.head;
      const int64_t oo = b * p.dout_stride.batch + i * p.dout_stride.seq + h * p.dout_stride.head;
      for (int64_t d = 0; d < D; ++d) {
        ak[d] += ds * detail::LoadAsFloat(p.q, p.dtype, qo + d);
        av[d] += pj * detail::LoadAsFloat(p.dout, p.dtype, oo + d);
      }
    }
  for (int64_t d = 0; d < D; ++d) {
    dk[r * D + d] = ak[d];
    dv[r * D + d] = av[d];
  }
}

// ------------------------------------------------------------ checking

struct Err {
  double rel_l2 = 0.0, max_abs = 0.0;
  int64_t bad = 0;  // non-finite where the reference is finite, or the reverse
};

Err Compare(const std::vector<float>& a, const std::vector<float>& ref) {
  Err e;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(ref[i]) != std::isfinite(a[i]) ||
        (!std::isfinite(ref[i]) && ref[i] != a[i])) {
      ++e.bad;
      continue;
    }
    if (!std::isfinite(ref[i])) continue;
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    e.max_abs = std::max(e.max_abs, std::abs(d));
  }
  // Relative to the reference's norm, floored at an RMS of 1e-3: where the
  // exact result is ~0 (S_k = 1: softmax is constant, so dQ = dK = 0), both
  // sides are rounding noise and their ratio means nothing.
  const double floor = 1e-6 * static_cast<double>(a.size());
  e.rel_l2 = std::sqrt(num / std::max(den, floor));
  return e;
}

float HalfBitsToFloat(uint16_t h, DType t) {
  if (t == DType::kBFloat16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u;
  if (e == 0) {
    const float f = std::ldexp(static_cast<float>(m), -24);
    return sign ? -f : f;
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct CheckCase {
  DType dtype;
  int D;
  int64_t B, Sq, Sk, H, Hk;
  Mask mask;
  int64_t q_offset, k_offset;
  float softcap;
};

bool RunCheck(const CheckCase& c, int idx) {
  if (c.D > kMaxD) {
    std::fprintf(stderr, "check case %d: head dim %d above the naive kernels' %d\n", idx, c.D,
                 kMaxD);
    return false;
  }
  const int64_t B = c.B, Sq = c.Sq, Sk = c.Sk, H = c.H, Hk = c.Hk, D = c.D;
  Dev<uint16_t> q(B * Sq * H * D), k(B * Sk * Hk * D), v(B * Sk * Hk * D), dout(B * Sq * H * D);
  Dev<uint16_t> out(B * Sq * H * D);
  Dev<float> lse(B * H * Sq), ref_out(B * Sq * H * D), ref_lse(B * H * Sq), dsum(B * H * Sq);
  Dev<float> dq(B * Sq * H * D), dk(B * Sk * Hk * D), dv(B * Sk * Hk * D);
  Dev<float> rdq(B * Sq * H * D), rdk(B * Sk * Hk * D), rdv(B * Sk * Hk * D);
  Dev<float> dq2(B * Sq * H * D), dk2(B * Sk * Hk * D), dv2(B * Sk * Hk * D);
  if (c.dtype == DType::kBFloat16) {
    Random<DType::kBFloat16>(q, 11 + idx);
    Random<DType::kBFloat16>(k, 12 + idx);
    Random<DType::kBFloat16>(v, 13 + idx);
    Random<DType::kBFloat16>(dout, 14 + idx);
  } else {
    Random<DType::kFloat16>(q, 11 + idx);
    Random<DType::kFloat16>(k, 12 + idx);
    Random<DType::kFloat16>(v, 13 + idx);
    Random<DType::kFloat16>(dout, 14 + idx);
  }
  AttnParams p;
  p.q = q.p;
  p.k = k.p;
  p.v = v.p;
  p.q_stride = TensorStrides::Contiguous(Sq, H, D);
  p.k_stride = p.v_stride = TensorStrides::Contiguous(Sk, Hk, D);
  p.dtype = c.dtype;
  p.out = out.p;
  p.out_stride = p.q_stride;
  p.out_dtype = c.dtype;
  p.lse = lse.p;
  p.lse_batch_stride = H * Sq;
  p.lse_head_stride = Sq;
  p.dout = dout.p;
  p.dout_stride = p.q_stride;
  p.batch = B;
  p.seqlen_q = Sq;
  p.seqlen_k = Sk;
  p.num_heads = H;
  p.num_heads_k = Hk;
  p.head_dim = D;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  p.softcap = c.softcap;
  p.mask = c.mask;
  p.q_pos = PositionMap::Contiguous(c.q_offset, Sq);
  p.k_pos = PositionMap::Contiguous(c.k_offset, Sk);

  // Poison, then ours; then the naive reference.
  Check(cudaMemset(out.p, 0xff, out.n * 2));
  Check(cudaMemset(lse.p, 0xff, lse.n * 4));
  Check(RunForward(p));
  const int threads = 128;
  NaiveForwardKernel<<<static_cast<unsigned>((B * Sq * H + threads - 1) / threads), threads>>>(
      p, ref_out.p, ref_lse.p);
  Check(cudaGetLastError());
  Check(cudaDeviceSynchronize());

  std::vector<float> o16(out.n);
  {
    const std::vector<uint16_t> raw = out.Host();
    for (size_t i = 0; i < raw.size(); ++i) o16[i] = HalfBitsToFloat(raw[i], c.dtype);
  }
  const Err eo = Compare(o16, ref_out.Host());
  const Err el = Compare(lse.Host(), ref_lse.Host());

  // Backward from the reference out/lse (so both sides see the same input).
  p.lse = ref_lse.p;
  Check(internal::LaunchRowDot(dout.p, p.dout_stride, c.dtype, ref_out.p,
                               TensorStrides::Contiguous(Sq, H, D), DType::kFloat32, dsum.p, B, Sq,
                               H, D, nullptr));
  p.dsum = dsum.p;
  for (Dev<float>* g : {&dq, &dk, &dv, &dq2, &dk2, &dv2}) FillF32(*g, 0.0f);
  p.dq_accum = dq.p;
  p.dk_accum = dk.p;
  p.dv_accum = dv.p;
  Check(RunBackward(p, /*deterministic=*/false));
  p.dq_accum = dq2.p;
  p.dk_accum = dk2.p;
  p.dv_accum = dv2.p;
  Check(RunBackward(p, /*deterministic=*/true));
  NaiveDqKernel<<<static_cast<unsigned>((B * Sq * H + threads - 1) / threads), threads>>>(p, rdq.p);
  NaiveDkvKernel<<<static_cast<unsigned>((B * Sk * Hk + threads - 1) / threads), threads>>>(
      p, rdk.p, rdv.p);
  Check(cudaGetLastError());
  Check(cudaDeviceSynchronize());
  const std::vector<float> hrdq = rdq.Host(), hrdk = rdk.Host(), hrdv = rdv.Host();
  const Err edq = Compare(dq.Host(), hrdq), edk = Compare(dk.Host(), hrdk),
            edv = Compare(dv.Host(), hrdv);
  const Err edq2 = Compare(dq2.Host(), hrdq), edk2 = Compare(dk2.Host(), hrdk),
            edv2 = Compare(dv2.Host(), hrdv);

  // bf16/fp16 storage of inputs is shared; the errors come from rounding P,
  // dS and out to 16 bits: relative L2 well under 1e-2 when correct.
  const double tol = c.dtype == DType::kBFloat16 ? 1.5e-2 : 4e-3;
  const Err* all[] = {&eo, &edq, &edk, &edv, &edq2, &edk2, &edv2};
  bool ok = el.bad == 0 && el.max_abs < 1e-3;
  for (const Err* e : all) ok = ok && e->bad == 0 && e->rel_l2 < tol;
  std::printf(
      "CHECK %-5s D=%-3d B=%ld Sq=%-5ld Sk=%-5ld H=%ld Hk=%ld mask=(%d,%ld,%ld) off=(%ld,%ld) "
      "cap=%.1f | out %.2e lse %.1e | dq %.2e dk %.2e dv %.2e | det dq %.2e dk %.2e dv %.2e "
      "| nonfinite %ld | %s\n",
      DTypeName(c.dtype), c.D, B, Sq, Sk, H, Hk, c.mask.causal, c.mask.window_left,
      c.mask.window_right, c.q_offset, c.k_offset, c.softcap, eo.rel_l2, el.max_abs, edq.rel_l2,
      edk.rel_l2, edv.rel_l2, edq2.rel_l2, edk2.rel_l2, edv2.rel_l2,
      eo.bad + el.bad + edq.bad + edk.bad + edv.bad + edq2.bad + edk2.bad + edv2.bad,
      ok ? "PASS" : "FAIL");

  // Deterministic mode twice: bitwise equal.
  bool same = true;
  {
    Dev<float> dq3(dq.n), dk3(dk.n), dv3(dv.n);
    FillF32(dq3, 0.0f);
    FillF32(dk3, 0.0f);
    FillF32(dv3, 0.0f);
    p.dq_accum = dq3.p;
    p.dk_accum = dk3.p;
    p.dv_accum = dv3.p;
    Check(RunBackward(p, /*deterministic=*/true));
    Check(cudaDeviceSynchronize());
    same = dq3.Host() == dq2.Host() && dk3.Host() == dk2.Host() && dv3.Host() == dv2.Host();
    // (vector == compares values; NaN would compare unequal and fail too.)
  }
  if (!same) std::printf("CHECK deterministic mode: runs differ | FAIL\n");
  return ok && same;
}

bool RunMergeCheck() {
  const int64_t B = 2, S = 77, H = 3, D = 64, n = B * S * H * D, m = B * H * S;
  std::vector<float> ao(n), po(n), al(m), pl(m);
  uint32_t x = 12345;
  auto rnd = [&] {
    x = x * 1664525u + 1013904223u;
    return static_cast<float>(x >> 8) / 16777216.0f * 2.0f - 1.0f;
  };
  for (auto& v : ao) v = rnd();
  for (auto& v : po) v = rnd();
  for (int64_t i = 0; i < m; ++i) {
    al[i] = i % 5 == 0 ? -INFINITY : 3.0f * rnd();
    pl[i] = i % 7 == 0 ? -INFINITY : 3.0f * rnd();
  }
  Dev<float> dao(n), dpo(n), dal(m), dpl(m);
  Check(cudaMemcpy(dao.p, ao.data(), n * 4, cudaMemcpyHostToDevice));
  Check(cudaMemcpy(dpo.p, po.data(), n * 4, cudaMemcpyHostToDevice));
  Check(cudaMemcpy(dal.p, al.data(), m * 4, cudaMemcpyHostToDevice));
  Check(cudaMemcpy(dpl.p, pl.data(), m * 4, cudaMemcpyHostToDevice));
  Check(internal::LaunchMergePartial(dao.p, dal.p, dpo.p, dpl.p, B, S, H, D, nullptr));
  Check(cudaDeviceSynchronize());
  std::vector<float> ro(n), rl(m);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t li = (b * H + h) * S + i, r = (b * S + i) * H + h;
        const double la = al[li], lb = pl[li], mm = std::max(la, lb);
        double lse = -INFINITY, wa = 0, wb = 0;
        if (mm != -INFINITY) {
          const double ea = std::exp(la - mm), eb = std::exp(lb - mm);
          lse = mm + std::log(ea + eb);
          wa = ea / (ea + eb);
          wb = eb / (ea + eb);
        }
        rl[li] = static_cast<float>(lse);
        for (int64_t d = 0; d < D; ++d)
          ro[r * D + d] = static_cast<float>(wa * ao[r * D + d] + wb * po[r * D + d]);
      }
  const Err eo = Compare(dao.Host(), ro), el = Compare(dal.Host(), rl);
  const bool ok = eo.bad == 0 && el.bad == 0 && eo.max_abs < 1e-5 && el.max_abs < 1e-5;
  std::printf("CHECK merge | out %.2e lse %.2e nonfinite %ld | %s\n", eo.max_abs, el.max_abs,
              eo.bad + el.bad, ok ? "PASS" : "FAIL");
  return ok;
}

int CheckAll() {
  std::vector<CheckCase> cases;
  const Mask none{}, causal{true, -1, -1}, window{false, 100, 20}, causal_window{true, 77, -1};
  for (DType t : {DType::kBFloat16, DType::kFloat16})
    for (int D : {64, 128, 256}) {
      cases.push_back({t, D, 2, 129, 129, 4, 2, none, 0, 0, 0.0f});
      cases.push_back({t, D, 1, 1000, 1000, 2, 1, causal, 0, 0, 0.0f});
    }
  for (int D : {64, 128, 256}) {
    cases.push_back({DType::kBFloat16, D, 1, 7, 300, 8, 1, window, 0, 0, 0.0f});
    cases.push_back({DType::kBFloat16, D, 2, 300, 65, 4, 4, causal_window, 250, 0, 0.0f});
    cases.push_back(
        {DType::kBFloat16, D, 1, 1000, 777, 4, 2, causal, 0, 300, 0.0f});  // masked rows
    cases.push_back({DType::kBFloat16, D, 1, 257, 257, 2, 1, causal, 0, 0, 20.0f});
    cases.push_back({DType::kFloat16, D, 1, 1, 1, 1, 1, none, 0, 0, 0.0f});
  }
  bool ok = true;
  int idx = 0;
  for (const CheckCase& c : cases) ok = RunCheck(c, idx++) && ok;
  ok = RunMergeCheck() && ok;
  std::printf("CHECK summary: %s\n", ok ? "all PASS" : "FAILURES");
  return ok ? 0 : 1;
}

// ------------------------------------------------------------ timing

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
float TimeMs(F&& f, int reps) {
  cudaEvent_t a, b;
  Check(cudaEventCreate(&a));
  Check(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  Check(cudaDeviceSynchronize());
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    Check(cudaEventRecord(a));
    f();
    Check(cudaEventRecord(b));
    Check(cudaEventSynchronize(b));
    float ms = 0.0f;
    Check(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  Check(cudaEventDestroy(a));
  Check(cudaEventDestroy(b));
  return Median(t);
}


// A bf16 self-attention problem [B, S, H, D] on the device for the timings:
// random q, k, v, dout (seeds seed .. seed + 3), zeroed fp32 accumulators,
// and the AttnParams over them; `flops` counts visible pairs (causal: half).
struct BenchProblem {
  BenchProblem(int64_t batch, int64_t seqlen, int64_t heads, int head_dim, bool is_causal,
               uint32_t seed)
      : B(batch), S(seqlen), H(heads), D(head_dim), causal(is_causal),
        q(B * S * H * D), k(B * S * H * D), v(B * S * H * D), dout(B * S * H * D),
        out(B * S * H * D), lse(B * H * S), dsum(B * H * S), dq(B * S * H * D),
        dk(B * S * H * D), dv(B * S * H * D) {
    Random<DType::kBFloat16>(q, seed);
    Random<DType::kBFloat16>(k, seed + 1);
    Random<DType::kBFloat16>(v, seed + 2);
    Random<DType::kBFloat16>(dout, seed + 3);
    FillF32(dq, 0.0f);
    FillF32(dk, 0.0f);
    FillF32(dv, 0.0f);
    p.q = q.p;
    p.k = k.p;
    p.v = v.p;
    p.q_stride = p.k_stride = p.v_stride = p.out_stride = p.dout_stride =
        TensorStrides::Contiguous(S, H, D);
    p.dtype = p.out_dtype = DType::kBFloat16;
    p.out = out.p;
    p.lse = lse.p;
    p.lse_batch_stride = H * S;
    p.lse_head_stride = S;
    p.dout = dout.p;
    p.dsum = dsum.p;
    p.dq_accum = dq.p;
    p.dk_accum = dk.p;
    p.dv_accum = dv.p;
    p.batch = B;
    p.seqlen_q = p.seqlen_k = S;
    p.num_heads = p.num_heads_k = H;
    p.head_dim = D;
    p.scale = 1.0f / std::sqrt(static_cast<float>(D));
    p.mask = causal ? Mask{true, -1, -1} : Mask{};
    p.q_pos = p.k_pos = PositionMap::Contiguous(0, S);
    flops = 4.0 * B * H * static_cast<double>(S) * S * D * (causal ? 0.5 : 1.0);
  }
  const int64_t B, S, H;
  const int D;
  const bool causal;
  Dev<uint16_t> q, k, v, dout, out;
  Dev<float> lse, dsum, dq, dk, dv;
  AttnParams p;
  double flops = 0;
};

#ifdef RINGATTN_TUNE
// ------------------------------------------------- tile-shape sweep
// cuda_tune --tune: times other FwdConfig / BwdConfig / BwdDqConfig shapes
// than the launched ones (traits.h) on bf16, S=8192, B=2, H=2048/D, causal and not,
// with their registers and spill bytes, and checks each against the
// launched kernel's output. Built only on request (target cuda_tune).

std::vector<float> ToFloats(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = HalfBitsToFloat(h[i], DType::kBFloat16);
  return f;
}

template <class K>
void PrintAttrs(K* kernel, int smem) {
  cudaFuncAttributes a;
  Check(cudaFuncGetAttributes(&a, kernel));
  int blocks = 0;
  Check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, a.maxThreadsPerBlock, smem));
  std::printf("regs %3d spill %4zu B smem %6d ctas/SM %d", a.numRegs, a.localSizeBytes, smem, blocks);
}

struct TuneProblem {
  int D;
  bool causal;
  int64_t B, S, H;
  AttnParams p;
  double flops;
};

// A launch of `kernel` (shape Tr) over the query tiles of p, with Tr's
// shared memory opted into: the forward and the dQ pass.
template <class Tr, class Kernel>
auto QueryTileLaunch(Kernel* kernel, const AttnParams& p) {
  Check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.batch));
  return [kernel, grid, &p] {
    kernel<<<grid, Tr::kThreads, Tr::kSmemBytes>>>(p);
    Check(cudaGetLastError());
  };
}

template <class Tr>
void TuneFwd(const TuneProblem& t, Dev<uint16_t>& out, const std::vector<float>& ref, int reps) {
  auto* kernel = &detail::ForwardKernel<Tr, DType::kBFloat16, false>;
  const auto run = QueryTileLaunch<Tr>(kernel, t.p);
  Check(cudaMemset(out.p, 0xff, out.n * 2));
  run();
  Check(cudaDeviceSynchronize());
  const Err e = Compare(ToFloats(out.Host()), ref);
  const float ms = TimeMs(run, reps);
  std::printf("TUNE fwd D=%-3d causal=%d w%d mt%d n%-3d %s mb%d | ", t.D, t.causal, Tr::kWarps,
              Tr::kMTiles, Tr::kBlockN, Tr::kQInRegs ? "qreg" : "qsmem", Tr::kMinBlocks);
  PrintAttrs(kernel, Tr::kSmemBytes);
  std::printf(" | %8.3f ms %7.1f TFLOP/s | vs launched rel %.1e bad %ld\n", ms,
              t.flops / (ms * 1e-3) / 1e12, e.rel_l2, static_cast<long>(e.bad));
  std::fflush(stdout);
}

template <class Tr>
void TuneBwd(const TuneProblem& t, Dev<float>& dq, Dev<float>& dk, Dev<float>& dv,
             const std::vector<float>& rdq, const std::vector<float>& rdk,
             const std::vector<float>& rdv, int reps) {
  auto* kernel = &detail::BackwardKernel<Tr, DType::kBFloat16, false>;
  Check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  const AttnParams& p = t.p;
  const dim3 grid(static_cast<unsigned>((p.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN),
                  static_cast<unsigned>(p.num_heads_k), static_cast<unsigned>(p.batch));
  auto run = [&] {
    Check(internal::LaunchRowDot(p.dout, p.dout_stride, p.dtype, p.out, p.out_stride, p.out_dtype,
                                 const_cast<float*>(p.dsum), t.B, t.S, t.H, t.D, nullptr));
    kernel<<<grid, Tr::kThreads, Tr::kSmemBytes>>>(p, true);
    Check(cudaGetLastError());
  };
  FillF32(dq, 0.0f);
  FillF32(dk, 0.0f);
  FillF32(dv, 0.0f);
  run();
  Check(cudaDeviceSynchronize());
  const Err eq = Compare(dq.Host(), rdq), ek = Compare(dk.Host(), rdk), ev = Compare(dv.Host(), rdv);
  const float ms = TimeMs(run, reps);
  std::printf("TUNE bwd D=%-3d causal=%d w%d m%-3d mb%d ds%d | ", t.D, t.causal, Tr::kWarps,
              Tr::kBlockM, Tr::kMinBlocks, Tr::kDSplit);
  PrintAttrs(kernel, Tr::kSmemBytes);
  std::printf(" | %8.3f ms %7.1f TFLOP/s | vs launched rel dq %.1e dk %.1e dv %.1e\n", ms,
              2.5 * t.flops / (ms * 1e-3) / 1e12, eq.rel_l2, ek.rel_l2, ev.rel_l2);
  std::fflush(stdout);
}

// The deterministic dQ pass alone (dsum from the launched run), checked
// against the launched fast backward's dq; its FLOPs are 3 of the 5 GEMMs
// (S, dP, dQ): 1.5x the forward's.
template <class Tr>
void TuneDq(const TuneProblem& t, Dev<float>& dq, const std::vector<float>& rdq, int reps) {
  auto* kernel = &detail::BackwardDqKernel<Tr, DType::kBFloat16, false>;
  const auto run = QueryTileLaunch<Tr>(kernel, t.p);
  FillF32(dq, 0.0f);
  run();
  Check(cudaDeviceSynchronize());
  const Err e = Compare(dq.Host(), rdq);
  const float ms = TimeMs(run, reps);
  std::printf("TUNE dq  D=%-3d causal=%d w%d n%-3d | ", t.D, t.causal, Tr::kWarps, Tr::kBlockN);
  PrintAttrs(kernel, Tr::kSmemBytes);
  std::printf(" | %8.3f ms %7.1f TFLOP/s | vs launched rel dq %.1e\n", ms,
              1.5 * t.flops / (ms * 1e-3) / 1e12, e.rel_l2);
  std::fflush(stdout);
}

template <int D, class... Fwd>
struct FwdList {};
template <int D, class... Bwd>
struct BwdList {};
template <int D, class... Dq>
struct DqList {};

template <int D, class... Fwd, class... Bwd, class... Dq>
void TuneHeadDim(FwdList<D, Fwd...>, BwdList<D, Bwd...>, DqList<D, Dq...>, int reps) {
  for (bool causal : {false, true}) {
    BenchProblem bp(2, 8192, 2048 / D, D, causal, 11);
    const AttnParams& p = bp.p;
    const TuneProblem t{D, causal, bp.B, bp.S, bp.H, p, bp.flops};

    // The launched kernels give the reference outputs (out, lse stay for
    // the backward; the accumulators start at zero).
    Check(RunForward(p));
    Check(cudaDeviceSynchronize());
    const std::vector<float> ref_out = ToFloats(bp.out.Host());
    Check(internal::LaunchRowDot(bp.dout.p, p.dout_stride, p.dtype, bp.out.p, p.out_stride,
                                 p.out_dtype, bp.dsum.p, t.B, t.S, t.H, D, nullptr));
    Check(RunBackward(p, /*deterministic=*/false));
    Check(cudaDeviceSynchronize());
    const std::vector<float> rdq = bp.dq.Host(), rdk = bp.dk.Host(), rdv = bp.dv.Host();

    Dev<uint16_t> out2(bp.out.n);  // variants write a second output buffer
    TuneProblem tf = t;
    tf.p.out = out2.p;
    (TuneFwd<Fwd>(tf, out2, ref_out, reps), ...);
    (TuneBwd<Bwd>(t, bp.dq, bp.dk, bp.dv, rdq, rdk, rdv, reps), ...);
    (TuneDq<Dq>(t, bp.dq, rdq, reps), ...);
  }
}

int TuneAll(int reps) {
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major,
              prop.minor);
  // The launched shape comes first in each list (traits.h).
  // FwdConfig<128, 4, 2, 64, false> is FlashAttention-2's H100 shape (128
  // query rows, 64-key tiles, 4 warps): 98 KB of shared memory, so two CTAs
  // per SM whose barriers do not wait for each other.
  TuneHeadDim(FwdList<128, FwdConfig<128, 8, 2, 64, false>, FwdConfig<128, 8, 1, 64, true>,
                      FwdConfig<128, 8, 2, 32, false>, FwdConfig<128, 4, 2, 32, false>,
                      FwdConfig<128, 8, 2, 48, false>, FwdConfig<128, 4, 2, 64, false>>{},
              BwdList<128, BwdConfig<128, 8, 64>, BwdConfig<128, 4, 32>, BwdConfig<128, 8, 32>>{},
              DqList<128, BwdDqConfig<128, 4, 32>, BwdDqConfig<128, 4, 64>,
                     BwdDqConfig<128, 8, 32>>{},
              reps);
  TuneHeadDim(FwdList<64, FwdConfig<64, 4, 2, 64, true>, FwdConfig<64, 4, 2, 32, true>,
                      FwdConfig<64, 8, 2, 64, true>, FwdConfig<64, 4, 2, 64, false>,
                      FwdConfig<64, 8, 2, 32, true>, FwdConfig<64, 4, 2, 48, true>>{},
              BwdList<64, BwdConfig<64, 8, 128>, BwdConfig<64, 4, 64>, BwdConfig<64, 8, 64>>{},
              DqList<64, BwdDqConfig<64, 4, 64>, BwdDqConfig<64, 4, 32>, BwdDqConfig<64, 8, 64>>{},
              reps);
  // D=256: never timed yet; the neighbours of the launched shapes (16 or
  // 32 rows per warp cannot both fit: the output accumulator is 128
  // registers at 16 rows), and for the backward 4 keys groups of 2 warps
  // against 2 groups of 4 and 64 queries per tile (sm_90's shared memory).
  TuneHeadDim(FwdList<256, FwdConfig<256, 8, 1, 32, false>, FwdConfig<256, 8, 1, 64, false>,
                      FwdConfig<256, 4, 1, 32, false>, FwdConfig<256, 4, 1, 64, false>>{},
              BwdList<256, BwdConfig<256, 8, 32, 1, 2>, BwdConfig<256, 8, 64, 1, 2>,
                      BwdConfig<256, 8, 32, 1, 4>, BwdConfig<256, 4, 32, 1, 2>>{},
              DqList<256, BwdDqConfig<256, 4, 16>, BwdDqConfig<256, 4, 32>,
                     BwdDqConfig<256, 8, 16>>{},
              reps);
  return 0;
}
#endif  // RINGATTN_TUNE

int BenchAll(const char* csv_path, int reps, int only_d, int64_t only_s, int only_causal) {
  FILE* csv = csv_path ? std::fopen(csv_path, "w") : nullptr;
  if (csv_path && !csv) {
    std::fprintf(stderr, "cannot write %s\n", csv_path);
    return 2;
  }
  if (csv)
    std::fprintf(csv,
                 "impl,dtype,D,S,B,H,causal,fwd_ms,fwd_tflops,bwd_ms,bwd_tflops,bwd_det_ms,bwd_det_"
                 "tflops\n");
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major,
              prop.minor);
  std::printf("%-4s %-6s %-3s %-4s %-7s | %9s %8s | %9s %8s | %9s %8s\n", "D", "S", "B", "H",
              "causal", "fwd ms", "TFLOP/s", "bwd ms", "TFLOP/s", "det ms", "TFLOP/s");
  // D=128 first: the issue's targets; a run cut by a time budget loses D=256.
  for (int D : {128, 64, 256})
    for (int64_t S : {2048, 8192, 16384})
      for (bool causal : {false, true}) {
        if ((only_d > 0 && D != only_d) || (only_s > 0 && S != only_s) ||
            (only_causal >= 0 && causal != (only_causal == 1)))
          continue;
        const int64_t B = 16384 / S, H = 2048 / D;
        BenchProblem bp(B, S, H, D, causal, 1);
        const AttnParams& p = bp.p;
        const float fwd_ms = TimeMs([&] { Check(RunForward(p)); }, reps);
        auto backward = [&](bool det) {
          Check(internal::LaunchRowDot(bp.dout.p, p.dout_stride, p.dtype, bp.out.p, p.out_stride,
                                       p.out_dtype, bp.dsum.p, B, S, H, D, nullptr));
          Check(RunBackward(p, det));
        };
        // --kernel sm90a changes the forward only: its backward is not timed again.
        const float bwd_ms = use_sm90a ? NAN : TimeMs([&] { backward(false); }, reps);
        const float det_ms = use_sm90a ? NAN : TimeMs([&] { backward(true); }, reps);
        const double flops = bp.flops;
        const double ft = flops / (fwd_ms * 1e-3) / 1e12, bt = 2.5 * flops / (bwd_ms * 1e-3) / 1e12,
                     dt = 2.5 * flops / (det_ms * 1e-3) / 1e12;
        std::printf("%-4d %-6ld %-3ld %-4ld %-7s | %9.3f %8.1f | %9.3f %8.1f | %9.3f %8.1f\n", D, S,
                    B, H, causal ? "yes" : "no", fwd_ms, ft, bwd_ms, bt, det_ms, dt);
        if (csv) {
          std::fprintf(csv, "%s,bf16,%d,%ld,%ld,%ld,%d,%.4f,%.2f,%.4f,%.2f,%.4f,%.2f\n",
                       use_sm90a ? "ringattn-sm90a" : "ringattn", D, S, B, H, causal ? 1 : 0,
                       fwd_ms, ft, bwd_ms, bt, det_ms, dt);
          std::fflush(csv);  // rows done stay usable if a time budget cuts the run
        }
        std::fflush(stdout);
      }
  if (csv) std::fclose(csv);
  return 0;
}

}  // namespace
}  // namespace ringattn::cuda

int main(int argc, char** argv) {
  bool check = false, bench = false, tune = false;
  const char* csv = nullptr;
  int reps = 10;
  int only_d = 0, only_causal = -1;
  int64_t only_s = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") {
      check = true;
    } else if (a == "--bench") {
      bench = true;
#ifdef RINGATTN_TUNE
    } else if (a == "--tune") {
      tune = true;
#endif
    } else if (a == "--csv" && i + 1 < argc) {
      csv = argv[++i];
    } else if (a == "--shape" && i + 3 < argc) {  // one shape of --bench (for ncu)
      only_d = std::atoi(argv[++i]);
      only_s = std::atoll(argv[++i]);
      only_causal = std::atoi(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--kernel" && i + 1 < argc && (std::string(argv[i + 1]) == "sm80" ||
                                                   std::string(argv[i + 1]) == "sm90a")) {
      ringattn::cuda::use_sm90a = std::string(argv[++i]) == "sm90a";
    } else {
      std::fprintf(stderr,
                   "usage: %s [--check] [--bench] [--csv FILE] [--reps N] [--shape D S causal] "
                   "[--kernel sm80|sm90a]\n",
                   argv[0]);
      return 2;
    }
  }
  if (!check && !bench && !tune) check = bench = true;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 3;
  }
  int rc = 0;
  if (check) rc = ringattn::cuda::CheckAll();
  if (bench) rc = std::max(rc, ringattn::cuda::BenchAll(csv, reps, only_d, only_s, only_causal));
#ifdef RINGATTN_TUNE
  if (tune) rc = std::max(rc, ringattn::cuda::TuneAll(reps));
#endif
  return rc;
}
