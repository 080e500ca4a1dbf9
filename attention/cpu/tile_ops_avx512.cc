// TileOps for AVX-512 (F, DQ, BW, VL): this unit alone is compiled with
// those flags (attention/CMakeLists.txt) and runs only where CpuHasAvx512()
// says so. It includes nothing with inline functions of external linkage
// (see tile_ops_impl.h).
#include <immintrin.h>

#include "attention/cpu/tile_ops_impl.h"

namespace ringattn::cpu {
namespace {

struct Avx512Vec {
  using Reg = __m512;
  static constexpr int64_t kWidth = 16;

  static __mmask16 Lanes(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }
  static Reg Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static Reg LoadPartial(const float* p, int64_t count, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), Lanes(count), p);
  }
  static void StorePartial(float* p, int64_t count, Reg v) {
    _mm512_mask_storeu_ps(p, Lanes(count), v);
  }
  static Reg Set1(float x) { return _mm512_set1_ps(x); }
  static Reg Add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg Sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg Mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg Div(Reg a, Reg b) { return _mm512_div_ps(a, b); }
  static Reg Max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static bool AnyAbove(Reg v, float x) {
    return _mm512_cmp_ps_mask(v, _mm512_set1_ps(x), _CMP_GT_OQ) != 0;
  }

  // The polynomial of the AVX2 unit, term for term; 2^n by vscalefps, which
  // also gives +inf above 2^127. Below -126 the result is 0 (a zero-masked
  // scalef), NaN stays NaN (unordered compares keep its lane).
  static Reg Exp2(Reg x) {
    const Reg lo = _mm512_set1_ps(-126.0f);
    // min/max return their second operand when either is NaN: keep x second.
    const Reg xc = _mm512_max_ps(lo, _mm512_min_ps(_mm512_set1_ps(128.0f), x));
    const Reg n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const Reg f = _mm512_sub_ps(xc, n);  // [-0.5, 0.5]
    Reg p = _mm512_set1_ps(1.534579205e-04f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339992392e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618489072e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550328642e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264625e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471825e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);  // x >= -126 or NaN
    return _mm512_maskz_scalef_ps(keep, p, n);
  }
  // The compiler's reductions pair lanes as the AVX2 unit's do (i with
  // i + 8, then + 4, + 2, + 1).
  static float ReduceAdd(Reg v) { return _mm512_reduce_add_ps(v); }
  static float ReduceMax(Reg v) { return _mm512_reduce_max_ps(v); }
};

}  // namespace

extern const TileOps kAvx512TileOps;
const TileOps kAvx512TileOps = TileKernels<Avx512Vec>::Ops("avx512");

}  // namespace ringattn::cpu
