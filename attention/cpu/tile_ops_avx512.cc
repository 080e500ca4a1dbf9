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

  // 2^x = 2^f * 2^floor(x): vreduceps gives f = x - floor(x) in [0, 1)
  // exactly, a near-minimax polynomial 2^f (about 1 ulp, 2^-23 relative), and
  // vscalefps multiplies by 2^floor(x). Four instructions fewer than the AVX2
  // unit's clamps, rounding and blends, with their edges built in: +-inf
  // reduce to 0, so exp2(-inf) = 0 and exp2(+inf) = +inf; +inf from 128,
  // subnormals below -126 and 0 below -150; NaN stays NaN.
  static Reg Exp2(Reg x) {
    const Reg f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    Reg p = _mm512_set1_ps(2.170940424548462e-04f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.243760110810399e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.679067879915237e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.548322945833206e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402298599481583e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931470036506653e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, x);
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
