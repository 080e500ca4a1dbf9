// TileOps for AVX2 + FMA (when the build's -march has them, x86-64-v3 by
// default) and in scalar C++, and the run-time choice among the sets.
#include "attention/cpu/tile_ops.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "attention/cpu/kernels.h"
#include "attention/cpu/tile_ops_impl.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RINGATTN_AVX2 1
#endif

namespace ringattn::cpu {
namespace {

struct ScalarVec {
  using Reg = float;
  static constexpr int64_t kWidth = 1;
  static Reg Load(const float* p) { return *p; }
  static void Store(float* p, Reg v) { *p = v; }
  static Reg LoadPartial(const float* p, int64_t count, float fill) {
    return count > 0 ? *p : fill;
  }
  static void StorePartial(float* p, int64_t count, Reg v) {
    if (count > 0) *p = v;
  }
  static Reg Set1(float x) { return x; }
  static Reg Add(Reg a, Reg b) { return a + b; }
  static Reg Sub(Reg a, Reg b) { return a - b; }
  static Reg Mul(Reg a, Reg b) { return a * b; }
  static Reg Div(Reg a, Reg b) { return a / b; }
  static Reg Max(Reg a, Reg b) { return b != b || b > a ? b : a; }
  static Reg Exp2(Reg x) { return exp2f(x); }
  static bool AnyAbove(Reg v, float x) { return v > x; }
  static float ReduceAdd(Reg v) { return v; }
  static float ReduceMax(Reg v) { return v; }
};

#ifdef RINGATTN_AVX2
struct Avx2Vec {
  using Reg = __m256;
  static constexpr int64_t kWidth = 8;

  static __m256i Lanes(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Reg Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static Reg LoadPartial(const float* p, int64_t count, float fill) {
    const __m256i lanes = Lanes(count);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, lanes),
                            _mm256_castsi256_ps(lanes));
  }
  static void StorePartial(float* p, int64_t count, Reg v) {
    _mm256_maskstore_ps(p, Lanes(count), v);
  }
  static Reg Set1(float x) { return _mm256_set1_ps(x); }
  static Reg Add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg Sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg Mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg Div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
  static Reg Max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static bool AnyAbove(Reg v, float x) {
    return _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(x), _CMP_GT_OQ)) != 0;
  }

  // exp2: a degree-6 polynomial on the reduced argument f in [-0.5, 0.5]
  // (near-minimax for relative error: 1.9e-9 in exact arithmetic, under
  // 1 ulp of 2^-23 with fp32 rounding; Taylor's coefficients gave 2 ulp),
  // times 2^n built in the exponent bits.
  static Reg Exp2(Reg x) {
    const __m256 hi = _mm256_set1_ps(127.0f);
    const __m256 lo = _mm256_set1_ps(-126.0f);
    // min/max return their second operand when either is NaN: keep x second.
    const __m256 xc = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
    const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(xc, n);  // [-0.5, 0.5]
    __m256 p = _mm256_set1_ps(1.534579205e-04f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339992392e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618489072e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550328642e-02f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264625e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471825e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 r = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    r = _mm256_blendv_ps(r, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    r = _mm256_blendv_ps(r, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  static float ReduceAdd(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float ReduceMax(Reg v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
#endif

constexpr char kIsaVariable[] = "RINGATTN_CPU_ISA";

}  // namespace

const TileOps kScalarTileOps = TileKernels<ScalarVec>::Ops("scalar");
#ifdef RINGATTN_AVX2
const TileOps kAvx2TileOps = TileKernels<Avx2Vec>::Ops("avx2");
#else
const TileOps kAvx2TileOps = {};
#endif
#ifndef RINGATTN_HAVE_AVX512_UNIT
const TileOps kAvx512TileOps = {};
#endif

bool CpuHasAvx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  // libgcc's checks include the OS's support (XCR0) for the AVX-512 state.
  return kAvx512TileOps.isa != nullptr && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

absl::StatusOr<const TileOps*> ChooseTileOps() {
  const char* env = std::getenv(kIsaVariable);
  const absl::string_view want = env != nullptr && *env != '\0' ? env : "auto";
  if (want == "auto") {
    if (CpuHasAvx512()) return &kAvx512TileOps;
    return kAvx2TileOps.isa != nullptr ? &kAvx2TileOps : &kScalarTileOps;
  }
  if (want == "scalar") return &kScalarTileOps;
  if (want == "avx2") {
    if (kAvx2TileOps.isa != nullptr) return &kAvx2TileOps;
    return absl::UnimplementedError(absl::StrCat(
        kIsaVariable, "=avx2: this build's -march (RINGATTN_CPU_ARCH) has no AVX2 + FMA"));
  }
  if (want == "avx512") {
    if (CpuHasAvx512()) return &kAvx512TileOps;
    return absl::UnimplementedError(absl::StrCat(
        kIsaVariable, "=avx512: ",
        kAvx512TileOps.isa == nullptr ? "this build has no AVX-512 kernels"
                                      : "this CPU lacks AVX-512 F/DQ/BW/VL"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      kIsaVariable, ": expected auto, avx512, avx2 or scalar; got \"", want, "\""));
}

}  // namespace ringattn::cpu
