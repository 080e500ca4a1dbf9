// Vectorized exp2 and tanh for the CPU kernels (AVX2 + FMA when the build
// targets it, a scalar loop otherwise). exp2 is a degree-6 polynomial on the
// reduced argument, relative error below 2 ulp; exp2(-inf) is exactly 0 and
// NaN stays NaN, which the masking contract relies on.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RINGATTN_AVX2 1
#endif

namespace ringattn::cpu {

#ifdef RINGATTN_AVX2
inline __m256 Exp2Avx2(__m256 x) {
  const __m256 hi = _mm256_set1_ps(127.0f);
  const __m256 lo = _mm256_set1_ps(-126.0f);
  // min/max return their second operand when either is NaN: keep x second.
  const __m256 xc = _mm256_max_ps(lo, _mm256_min_ps(hi, x));
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(xc, n);  // [-0.5, 0.5]
  // 2^f = e^(f ln 2), Taylor to degree 6: truncation below 1.3e-7 relative.
  __m256 p = _mm256_set1_ps(1.540353039e-04f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.333355815e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618129108e-03f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550410866e-02f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402265070e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471806e-01f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 r = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  const __m256 too_big = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  r = _mm256_blendv_ps(r, _mm256_set1_ps(INFINITY), too_big);
  const __m256 too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  r = _mm256_blendv_ps(r, _mm256_setzero_ps(), too_small);
  const __m256 is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  return _mm256_blendv_ps(r, x, is_nan);
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// x[j] <- exp2(x[j] - sub) for j < n; returns the sum of the results, added
// in a fixed order (deterministic).
inline float Exp2SubSum(float* x, int64_t n, float sub) {
  int64_t j = 0;
  float sum = 0.0f;
#ifdef RINGATTN_AVX2
  const __m256 vs = _mm256_set1_ps(sub);
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 r = Exp2Avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), vs));
    _mm256_storeu_ps(x + j, r);
    acc = _mm256_add_ps(acc, r);
  }
  sum = HorizontalSum(acc);
#endif
  for (; j < n; ++j) {
    x[j] = std::exp2(x[j] - sub);
    sum += x[j];
  }
  return sum;
}

// Max of x[0..n); -inf for n == 0.
inline float RowMax(const float* x, int64_t n) {
  int64_t j = 0;
  float m = -INFINITY;
#ifdef RINGATTN_AVX2
  __m256 acc = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + j));
  m = HorizontalMax(acc);
#endif
  for (; j < n; ++j) m = std::fmax(m, x[j]);
  return m;
}

// x[j] <- cap * tanh(x[j]), t[j] <- tanh(x[j]) when t is not null.
// tanh(y) = 1 - 2 / (exp(2y) + 1): absolute error a few ulp of 1, which is
// what the scores need (they enter the softmax as absolute values).
inline void SoftcapInplace(float* x, float* t, int64_t n, float cap) {
  int64_t j = 0;
#ifdef RINGATTN_AVX2
  const __m256 two_log2e = _mm256_set1_ps(2.0f * 1.4426950408889634f);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 two = _mm256_set1_ps(2.0f);
  const __m256 vcap = _mm256_set1_ps(cap);
  for (; j + 8 <= n; j += 8) {
    const __m256 y = _mm256_loadu_ps(x + j);
    const __m256 e = Exp2Avx2(_mm256_mul_ps(y, two_log2e));
    const __m256 th = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    if (t) _mm256_storeu_ps(t + j, th);
    _mm256_storeu_ps(x + j, _mm256_mul_ps(th, vcap));
  }
#endif
  for (; j < n; ++j) {
    const float th = std::tanh(x[j]);
    if (t) t[j] = th;
    x[j] = cap * th;
  }
}

}  // namespace ringattn::cpu
