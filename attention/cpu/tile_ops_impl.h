// The one implementation of TileOps (tile_ops.h), written once over a vector
// type V and instantiated by each instruction set's unit with its own V:
//
//   struct V {
//     using Reg;  static constexpr int64_t kWidth;   // floats per register
//     static Reg Load(const float*);  static void Store(float*, Reg);
//     static Reg LoadPartial(const float*, int64_t count, float fill);  // lanes >= count: fill
//     static void StorePartial(float*, int64_t count, Reg);             // lanes < count only
//     static Reg Set1(float);  Add, Sub, Mul, Div, Max (Max(a, b) is b when b is NaN);
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
    if (j < count) V::StorePartial(x + j, count - j, V::Mul(V::LoadPartial(x + j, count - j, 0.0f), va));
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

  static void OnlineSoftmax(float* s, int64_t rows, int64_t n, int64_t ld, float* m, float* l,
                            float* o, int64_t d) {
    const float neg_inf = -INFINITY;
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = s + r * ld;
      auto vmax = V::Set1(neg_inf);
      int64_t j = 0;
      for (; j + W <= n; j += W) vmax = V::Max(vmax, V::Load(sr + j));
      if (j < n) vmax = V::Max(vmax, V::LoadPartial(sr + j, n - j, neg_inf));
      const float tile_max = V::ReduceMax(vmax);  // NaN scores may be dropped here,
      const float old_max = m[r];                 // never from the exponentials below
      if (old_max == neg_inf || tile_max > old_max + kLazyRescaleLog2) {
        const float new_max = tile_max > old_max ? tile_max : old_max;
        if (old_max != neg_inf) {
          const float alpha = exp2f(old_max - new_max);
          l[r] *= alpha;
          Scale(o + r * d, d, alpha);
        }
        m[r] = new_max;
      }
      // A row with no visible key yet keeps m = -inf and subtracts 0:
      // exp2(-inf) = 0 leaves it empty, a NaN score still reaches its sum.
      const auto sub = V::Set1(m[r] == neg_inf ? 0.0f : m[r]);
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
