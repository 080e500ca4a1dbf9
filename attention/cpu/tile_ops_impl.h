// The one implementation of TileOps (tile_ops.h), written once over a vector
// type V and instantiated by each instruction set's unit with its own V:
//
//   struct V {
//     using Reg;  static constexpr int64_t kWidth;   // floats per register
//     static Reg Load(const float*);  static void Store(float*, Reg);
//     static Reg LoadPartial(const float*, int64_t count, float fill);  // lanes >= count: fill
//     static void StorePartial(float*, int64_t count, Reg);             // lanes < count only
//     static Reg Set1(float);  Add, Sub, Mul, Div, Max (Max(a, b) is b when b is NaN);
//     static bool AnyAbove(Reg, float);             // some lane > the value
//     static Reg Exp2(Reg);    // about 1 ulp; exp2(-inf) = 0 exactly; NaN stays NaN
//     static float ReduceAdd(Reg), ReduceMax(Reg);  // in a fixed order
//   };
//
// Each unit defines V in an anonymous namespace, so every instantiation
// below has internal linkage: nothing compiled with one unit's flags can be
// picked by the linker for another's callers. Only <math.h> functions
// (extern "C", never inlined copies) are called besides V's.
#pragma once

#include <math.h>
#include <stdint.h>

#include "attention/cpu/tile_ops.h"

namespace ringattn::cpu {

template <class V>
struct TileKernels {
  static constexpr int64_t W = V::kWidth;

  static void Fill(float* x, int64_t count, float value) {
    const auto v = V::Set1(value);
    int64_t j = 0;
    for (; j + W <= count; j += W) V::Store(x + j, v);
    if (j < count) V::StorePartial(x + j, count - j, v);
  }

  static void Scale(float* x, int64_t count, float a) {
    const auto va = V::Set1(a);
    int64_t j = 0;
    for (; j + W <= count; j += W) V::Store(x + j, V::Mul(V::Load(x + j), va));
    if (j < count) {
      V::StorePartial(x + j, count - j, V::Mul(V::LoadPartial(x + j, count - j, 0.0f), va));
    }
  }

  // tanh(y) = 1 - 2 / (exp(2y) + 1): absolute error a few ulp of 1, which is
  // what the scores need (they enter the softmax as absolute values).
  static typename V::Reg Tanh(typename V::Reg y) {
    const auto e = V::Exp2(V::Mul(y, V::Set1(2.0f * 1.4426950408889634f)));
    return V::Sub(V::Set1(1.0f), V::Div(V::Set1(2.0f), V::Add(e, V::Set1(1.0f))));
  }

  static void Softcap(float* s, float* t, int64_t count, float cap) {
    const auto vcap = V::Set1(cap);
    int64_t j = 0;
    for (; j + W <= count; j += W) {
      const auto th = Tanh(V::Load(s + j));
      if (t) V::Store(t + j, th);
      V::Store(s + j, V::Mul(th, vcap));
    }
    if (j < count) {
      const auto th = Tanh(V::LoadPartial(s + j, count - j, 0.0f));
      if (t) V::StorePartial(t + j, count - j, th);
      V::StorePartial(s + j, count - j, V::Mul(th, vcap));
    }
  }

  // A row's subtrahend for this tile, from the lanes' maxima vmax: the old
  // max while no lane exceeds it by more than kLazyRescaleLog2 (no
  // horizontal reduction on that path), else Rescale's.
  static float Subtrahend(typename V::Reg vmax, float* m, float* l, float* o, int64_t d) {
    const float old_max = *m;
    if (__builtin_expect(old_max != -INFINITY && !V::AnyAbove(vmax, old_max + kLazyRescaleLog2),
                         1)) {
      return old_max;
    }
    return Rescale(vmax, m, l, o, d);
  }

  // The tile's max becomes the row's, with o and l rescaled. A row with no
  // visible key yet keeps m = -inf and subtracts 0: exp2(-inf) = 0 leaves
  // it empty, a NaN score still reaches its sum. Out of line, so that the
  // callers' registers stay live across the common path.
  [[gnu::noinline]] static float Rescale(typename V::Reg vmax, float* m, float* l, float* o,
                                         int64_t d) {
    const float neg_inf = -INFINITY;
    const float old_max = *m;
    const float tile_max = V::ReduceMax(vmax);  // NaN scores may be dropped here,
    if (old_max == neg_inf || tile_max > old_max + kLazyRescaleLog2) {  // never from exp2
      const float new_max = tile_max > old_max ? tile_max : old_max;
      if (old_max != neg_inf) {
        const float alpha = exp2f(old_max - new_max);
        *l *= alpha;
        Scale(o, d, alpha);
      }
      *m = new_max;
    }
    return *m == neg_inf ? 0.0f : *m;
  }

  // Full tiles of the forward's width (ForwardTraits::kBlockN keys): R rows
  // at a time, held in registers between the max and the exponentials (and,
  // for R = 2, their independent chains overlap).
  static constexpr int64_t kFull = 64;
  static constexpr int64_t kVecs = kFull / W;
  static_assert(kFull % W == 0, "a full row is whole vectors");
  // Two rows where they fit in registers with room for exp2's temporaries
  // (AVX-512: 8 of 32), one otherwise (AVX2: 8 of 16 already).
  static constexpr int kRows = kVecs <= 4 ? 2 : 1;

  template <int R>
  static void FullRows(float* s, float* m, float* l, float* o, int64_t d) {
    typename V::Reg x[R][kVecs];
    float sub[R];
    for (int i = 0; i < R; ++i) {
      for (int64_t v = 0; v < kVecs; ++v) x[i][v] = V::Load(s + i * kFull + v * W);
      auto vmax = x[i][0];
      for (int64_t v = 1; v < kVecs; ++v) vmax = V::Max(vmax, x[i][v]);
      sub[i] = Subtrahend(vmax, m + i, l + i, o + i * d, d);
    }
    for (int i = 0; i < R; ++i) {
      const auto vs = V::Set1(sub[i]);
      auto acc = V::Set1(0.0f);
      for (int64_t v = 0; v < kVecs; ++v) {
        const auto e = V::Exp2(V::Sub(x[i][v], vs));
        V::Store(s + i * kFull + v * W, e);
        acc = V::Add(acc, e);
      }
      l[i] += V::ReduceAdd(acc);
    }
  }

  static void OnlineSoftmax(float* s, int64_t rows, int64_t n, int64_t ld, float* m, float* l,
                            float* o, int64_t d) {
    const float neg_inf = -INFINITY;
    int64_t r = 0;
    if (n == kFull && ld == kFull) {
      for (; r + kRows <= rows; r += kRows) {
        FullRows<kRows>(s + r * ld, m + r, l + r, o + r * d, d);
      }
    }
    for (; r < rows; ++r) {  // the same arithmetic, any width
      float* sr = s + r * ld;
      auto vmax = V::Set1(neg_inf);
      int64_t j = 0;
      for (; j + W <= n; j += W) vmax = V::Max(vmax, V::Load(sr + j));
      if (j < n) vmax = V::Max(vmax, V::LoadPartial(sr + j, n - j, neg_inf));
      const auto sub = V::Set1(Subtrahend(vmax, m + r, l + r, o + r * d, d));
      auto acc = V::Set1(0.0f);
      for (j = 0; j + W <= n; j += W) {
        const auto e = V::Exp2(V::Sub(V::Load(sr + j), sub));
        V::Store(sr + j, e);
        acc = V::Add(acc, e);
      }
      if (j < n) {
        const auto e = V::Exp2(V::Sub(V::LoadPartial(sr + j, n - j, neg_inf), sub));
        V::StorePartial(sr + j, n - j, e);
        acc = V::Add(acc, e);
      }
      Fill(sr + n, ld - n, 0.0f);
      l[r] += V::ReduceAdd(acc);
    }
  }

  static void ProbsAndGrads(float* p, float* ds, const float* t, const float* lse2,
                            const float* dsum, int64_t rows, int64_t cols, float scale) {
    const auto vscale = V::Set1(scale);
    const auto one = V::Set1(1.0f);
    auto step = [&](int64_t x, int64_t i, int64_t count) {
      const bool full = count == W;
      const auto s = full ? V::Load(p + x) : V::LoadPartial(p + x, count, 0.0f);
      const auto lse = full ? V::Load(lse2 + i) : V::LoadPartial(lse2 + i, count, 0.0f);
      const auto dp = full ? V::Load(ds + x) : V::LoadPartial(ds + x, count, 0.0f);
      const auto dm = full ? V::Load(dsum + i) : V::LoadPartial(dsum + i, count, 0.0f);
      const auto pr = V::Exp2(V::Sub(s, lse));
      auto g = V::Mul(V::Mul(pr, V::Sub(dp, dm)), vscale);
      if (t) {
        const auto th = full ? V::Load(t + x) : V::LoadPartial(t + x, count, 0.0f);
        g = V::Mul(g, V::Sub(one, V::Mul(th, th)));
      }
      if (full) {
        V::Store(p + x, pr);
        V::Store(ds + x, g);
      } else {
        V::StorePartial(p + x, count, pr);
        V::StorePartial(ds + x, count, g);
      }
    };
    for (int64_t j = 0; j < rows; ++j) {
      int64_t i = 0;
      for (; i + W <= cols; i += W) step(j * cols + i, i, W);
      if (i < cols) step(j * cols + i, i, cols - i);
    }
  }

  static constexpr TileOps Ops(const char* isa) {
    return TileOps{isa, &Softcap, &OnlineSoftmax, &ProbsAndGrads};
  }
};

}  // namespace ringattn::cpu
