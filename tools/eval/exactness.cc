// Sampled-row float64 references, naive same-precision baselines and error
// statistics; see exactness.h.
#include "tools/eval/exactness.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

#include "attention/params.h"
#include "attention/reference.h"

namespace ringattn::eval {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Standard normal values (Box-Muller on a splitmix stream) times `stddev`,
// rounded to `t`. Chunked so the values do not depend on the thread count.
std::vector<float> Normals(int64_t n, DType t, uint64_t seed, int threads, float stddev = 1.0f) {
  std::vector<float> x(n);
  constexpr int64_t kChunk = 1 << 14;
  ParallelFor((n + kChunk - 1) / kChunk, threads, [&](int64_t c) {
    uint64_t s = Mix(seed ^ Mix(static_cast<uint64_t>(c) + 1));
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += 2) {
      s = Mix(s);
      const double u1 = (static_cast<double>(s >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
      s = Mix(s);
      const double u2 = static_cast<double>(s >> 11) * 0x1.0p-53;
      const double r = std::sqrt(-2.0 * std::log(u1));
      x[i] = RoundTo(t, static_cast<float>(stddev * r * std::cos(2 * M_PI * u2)));
      if (i + 1 < end) {
        x[i + 1] = RoundTo(t, static_cast<float>(stddev * r * std::sin(2 * M_PI * u2)));
      }
    }
  });
  return x;
}

RefProblem MakeRef(const Problem& p, const Mask& m) {
  RefProblem r;
  r.batch = 1;
  r.seqlen_q = r.seqlen_k = p.S;
  r.num_heads = p.H;
  r.num_heads_k = p.Hk;
  r.head_dim = p.D;
  r.scale = p.scale;
  r.mask = m;
  return r;
}

// The smallest range holding both (an empty one holds nothing).
PosRange Hull(const PosRange& a, const PosRange& b) {
  if (a.Empty()) return b;
  if (b.Empty()) return a;
  return PosRange{std::min(a.lo, b.lo), std::max(a.hi, b.hi)};
}
// The keys query i may see (global positions = indices here): with a sink,
// the hull of both parts' intervals; callers test each pair with Visible.
void KeyRange(const Mask& m, int64_t S, int64_t i, int64_t* lo, int64_t* hi) {
  const PosRange keys = m.HasSink() ? Hull(m.KeyBounds(i), m.SinkBounds(i)) : m.KeyBounds(i);
  *lo = std::max<int64_t>(0, keys.lo);
  *hi = std::min<int64_t>(S - 1, keys.hi);
}
// The queries that may see key j (the same, from the key's side).
void QueryRange(const Mask& m, int64_t S, int64_t j, int64_t* lo, int64_t* hi) {
  const PosRange queries =
      m.HasSink() ? Hull(m.QueryBounds(j), m.SinkPart().QueryBounds(j)) : m.QueryBounds(j);
  *lo = std::max<int64_t>(0, queries.lo);
  *hi = std::min<int64_t>(S - 1, queries.hi);
}

float DotF(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}
double DotD(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t d = 0; d < n; ++d) s += static_cast<double>(a[d]) * b[d];
  return s;
}

// Accumulates |a - ref| over one row (max and sums, for the relative errors).
struct RowAcc {
  double max_abs = 0, ref_max = 0, err_sum = 0, ref_sum = 0;
  int64_t n = 0;
  bool finite = true;
  void Add(double a, double r) {
    if (!std::isfinite(a)) finite = false;
    max_abs = std::max(max_abs, std::abs(a - r));
    ref_max = std::max(ref_max, std::abs(r));
    err_sum += std::abs(a - r);
    ref_sum += std::abs(r);
    ++n;
  }
};

// Relative errors are taken over the whole sample, not row by row, so that
// a row whose exact value is 0 (the first row of a causal dq) does not
// divide by zero: max|a - r| / max|r| and mean|a - r| / mean|r|.
struct StatBuilder {
  ErrorStat s;
  double ref_max = 0, err_sum = 0, ref_sum = 0;
  void AddRow(const RowAcc& ring, const RowAcc& naive) {
    s.finite = s.finite && ring.finite;
    s.max_abs = std::max(s.max_abs, ring.finite ? ring.max_abs : INFINITY);
    s.naive_max_abs = std::max(s.naive_max_abs, naive.max_abs);
    ref_max = std::max(ref_max, ring.ref_max);
    err_sum += ring.err_sum;
    ref_sum += ring.ref_sum;
    ++s.rows;
  }
  ErrorStat Done(double atol) {
    s.rel_max = ref_max > 0 ? s.max_abs / ref_max : s.max_abs;
    s.rel_mean = ref_sum > 0 ? err_sum / ref_sum : err_sum;
    s.tol = 2 * s.naive_max_abs + atol;
    return s;
  }
};

}  // namespace

std::vector<float> NormalValues(int64_t n, DType t, uint64_t seed, float stddev) {
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return Normals(n, t, Mix(seed), threads, stddev);
}

double AbsTolerance(DType t) { return t == DType::kFloat32 ? 1e-5 : 1e-3; }

void ParallelFor(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  }
  for (auto& t : ts) t.join();
}

Problem MakeProblem(int64_t S, int64_t H, int64_t Hk, int64_t D, DType dtype, uint64_t seed) {
  Problem p;
  p.S = S;
  p.H = H;
  p.Hk = Hk;
  p.D = D;
  p.dtype = dtype;
  p.scale = DefaultScale(D);
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  p.in.q = Normals(S * H * D, dtype, Mix(seed * 4 + 1), threads);
  p.in.k = Normals(S * Hk * D, dtype, Mix(seed * 4 + 2), threads);
  p.in.v = Normals(S * Hk * D, dtype, Mix(seed * 4 + 3), threads);
  p.in.dout = Normals(S * H * D, dtype, Mix(seed * 4 + 4), threads);
  return p;
}

QueryRef ComputeQueryRef(const Problem& p, const Mask& mask, const std::vector<int64_t>& rows,
                         int threads) {
  QueryRef ref;
  ref.mask = mask;
  ref.rows = rows;
  const int64_t H = p.H, Hk = p.Hk, D = p.D, S = p.S, n = static_cast<int64_t>(rows.size());
  const int64_t group = H / Hk;
  ref.out.assign(n * H * D, 0.0);
  ref.dq.assign(n * H * D, 0.0);
  ref.lse.assign(n * H, kNegInf);
  ref.naive_out.assign(n * H * D, 0.0f);
  ref.naive_dq.assign(n * H * D, 0.0f);
  ref.naive_lse.assign(n * H, -INFINITY);
  const RefProblem rp = MakeRef(p, mask);
  const DType t = p.dtype;
  const float* q = p.in.q.data();
  const float* k = p.in.k.data();
  const float* v = p.in.v.data();
  const float* dout = p.in.dout.data();
  ParallelFor(n * H, threads, [&](int64_t task) {
    const int64_t r = task / H, h = task % H, i = rows[r], hk = h / group;
    const int64_t o = (r * H + h) * D;
    const float* qi = q + (i * H + h) * D;
    const float* dOi = dout + (i * H + h) * D;
    int64_t lo, hi;
    KeyRange(mask, S, i, &lo, &hi);
    // Float64: out and lse from the shared reference, then dq on them.
    double lse;
    ReferenceForwardRow(rp, q, k, v, 0, h, i, &ref.out[o], &lse);
    ref.lse[r * H + h] = lse;
    if (lse != kNegInf) {
      double dsum = 0;
      for (int64_t d = 0; d < D; ++d) dsum += static_cast<double>(dOi[d]) * ref.out[o + d];
      for (int64_t j = lo; j <= hi; ++j) {
        if (!mask.Visible(i, j)) continue;
        const float* kj = k + (j * Hk + hk) * D;
        const float* vj = v + (j * Hk + hk) * D;
        const double pj = std::exp(DotD(qi, kj, D) * rp.scale - lse);
        const double ds = pj * (DotD(dOi, vj, D) - dsum) * rp.scale;
        for (int64_t d = 0; d < D; ++d) ref.dq[o + d] += ds * kj[d];
      }
    }
    // Naive in the storage precision: unfused fp32 scores and softmax, P
    // rounded to the dtype, fp32 accumulation, outputs rounded.
    float m = -INFINITY;
    std::vector<float> x(hi >= lo ? hi - lo + 1 : 0, -INFINITY);
    for (int64_t j = lo; j <= hi; ++j) {
      if (!mask.Visible(i, j)) continue;
      x[j - lo] = DotF(qi, k + (j * Hk + hk) * D, D) * p.scale;
      m = std::max(m, x[j - lo]);
    }
    if (m == -INFINITY) return;
    float l = 0.0f;
    for (float s : x) l += std::exp(s - m);
    ref.naive_lse[r * H + h] = m + std::log(l);
    float* no = &ref.naive_out[o];
    std::vector<float> prob(x.size(), 0.0f);
    for (size_t jj = 0; jj < x.size(); ++jj) {
      if (x[jj] == -INFINITY) continue;
      prob[jj] = RoundTo(t, std::exp(x[jj] - m) / l);
      const float* vj = v + ((lo + jj) * Hk + hk) * D;
      for (int64_t d = 0; d < D; ++d) no[d] += prob[jj] * vj[d];
    }
    for (int64_t d = 0; d < D; ++d) no[d] = RoundTo(t, no[d]);
    float dsum = 0.0f;
    for (int64_t d = 0; d < D; ++d) dsum += dOi[d] * no[d];
    float* ndq = &ref.naive_dq[o];
    for (size_t jj = 0; jj < x.size(); ++jj) {
      if (x[jj] == -INFINITY) continue;
      const float* kj = k + ((lo + jj) * Hk + hk) * D;
      const float* vj = v + ((lo + jj) * Hk + hk) * D;
      const float ds = RoundTo(t, prob[jj] * (DotF(dOi, vj, D) - dsum) * p.scale);
      for (int64_t d = 0; d < D; ++d) ndq[d] += ds * kj[d];
    }
    for (int64_t d = 0; d < D; ++d) ndq[d] = RoundTo(t, ndq[d]);
  });
  return ref;
}

Errors CheckRun(const Problem& p, const QueryRef& ref, const std::vector<int64_t>& keys,
                const FullOutputs& ring, bool backward, int threads) {
  const int64_t H = p.H, Hk = p.Hk, D = p.D, S = p.S;
  const int64_t group = H / Hk;
  const int64_t n = static_cast<int64_t>(ref.rows.size());
  const DType t = p.dtype;
  const double atol = AbsTolerance(t);
  Errors e;
  e.has_backward = backward;
  StatBuilder out_s, lse_s, dq_s, dk_s, dv_s;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = ref.rows[r];
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = (r * H + h) * D;
      RowAcc a, b;
      for (int64_t d = 0; d < D; ++d) {
        a.Add(ring.out[(i * H + h) * D + d], ref.out[o + d]);
        b.Add(ref.naive_out[o + d], ref.out[o + d]);
      }
      out_s.AddRow(a, b);
      RowAcc la, lb;
      const double lr = ref.lse[r * H + h], lg = ring.lse[h * S + i];
      if (lr == kNegInf) {  // no visible key: -inf must be exact
        la.finite = lg == -INFINITY;
      } else {
        la.Add(lg, lr);
        lb.Add(ref.naive_lse[r * H + h], lr);
      }
      lse_s.AddRow(la, lb);
      if (backward) {
        RowAcc da, db;
        for (int64_t d = 0; d < D; ++d) {
          da.Add(ring.dq[(i * H + h) * D + d], ref.dq[o + d]);
          db.Add(ref.naive_dq[o + d], ref.dq[o + d]);
        }
        dq_s.AddRow(da, db);
      }
    }
  }
  e.out = out_s.Done(atol);
  e.lse = lse_s.Done(AbsTolerance(DType::kFloat32));  // lse is always fp32
  if (!backward) return e;
  e.dq = dq_s.Done(atol);

  // dk, dv on sampled key rows, given the saved (out, lse): D_i = dO_i . O_i
  // for every query row first (float64 and the naive fp32 sum).
  std::vector<double> dsum(S * H);
  std::vector<float> dsum_f(S * H);
  ParallelFor(S, threads, [&](int64_t i) {
    for (int64_t h = 0; h < H; ++h) {
      const float* dO = &p.in.dout[(i * H + h) * D];
      const float* O = &ring.out[(i * H + h) * D];
      dsum[i * H + h] = DotD(dO, O, D);
      dsum_f[i * H + h] = DotF(dO, O, D);
    }
  });
  const int64_t nk = static_cast<int64_t>(keys.size());
  std::vector<double> rdk(nk * Hk * D, 0.0), rdv(nk * Hk * D, 0.0);
  std::vector<float> ndk(nk * Hk * D, 0.0f), ndv(nk * Hk * D, 0.0f);
  const Mask& m = ref.mask;
  ParallelFor(nk * Hk, threads, [&](int64_t task) {
    const int64_t r = task / Hk, hk = task % Hk, j = keys[r];
    const int64_t o = (r * Hk + hk) * D;
    const float* kj = &p.in.k[(j * Hk + hk) * D];
    const float* vj = &p.in.v[(j * Hk + hk) * D];
    int64_t lo, hi;
    QueryRange(m, S, j, &lo, &hi);
    for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      for (int64_t i = lo; i <= hi; ++i) {
        if (!m.Visible(i, j)) continue;
        const float lse = ring.lse[h * S + i];
        if (lse == -INFINITY) continue;
        const float* qi = &p.in.q[(i * H + h) * D];
        const float* dOi = &p.in.dout[(i * H + h) * D];
        const double pj = std::exp(DotD(qi, kj, D) * static_cast<double>(p.scale) - lse);
        const double ds = pj * (DotD(dOi, vj, D) - dsum[i * H + h]) * p.scale;
        const float pf = RoundTo(t, std::exp(DotF(qi, kj, D) * p.scale - lse));
        const float dsf = RoundTo(t, pf * (DotF(dOi, vj, D) - dsum_f[i * H + h]) * p.scale);
        for (int64_t d = 0; d < D; ++d) {
          rdk[o + d] += ds * qi[d];
          rdv[o + d] += pj * dOi[d];
          ndk[o + d] += dsf * qi[d];
          ndv[o + d] += pf * dOi[d];
        }
      }
    }
    for (int64_t d = 0; d < D; ++d) {
      ndk[o + d] = RoundTo(t, ndk[o + d]);
      ndv[o + d] = RoundTo(t, ndv[o + d]);
    }
  });
  for (int64_t r = 0; r < nk; ++r) {
    const int64_t j = keys[r];
    for (int64_t hk = 0; hk < Hk; ++hk) {
      const int64_t o = (r * Hk + hk) * D;
      RowAcc ka, kb, va, vb;
      for (int64_t d = 0; d < D; ++d) {
        ka.Add(ring.dk[(j * Hk + hk) * D + d], rdk[o + d]);
        kb.Add(ndk[o + d], rdk[o + d]);
        va.Add(ring.dv[(j * Hk + hk) * D + d], rdv[o + d]);
        vb.Add(ndv[o + d], rdv[o + d]);
      }
      dk_s.AddRow(ka, kb);
      dv_s.AddRow(va, vb);
    }
  }
  e.dk = dk_s.Done(atol);
  e.dv = dv_s.Done(atol);
  return e;
}

}  // namespace ringattn::eval
