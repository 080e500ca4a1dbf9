// See attn_test_util.h.
#include "tests/attention/attn_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace ringattn::testing {

std::string Case::Name() const {
  std::string m = "none";
  if (mask.causal || mask.window_left >= 0 || mask.window_right >= 0) {
    m = absl::StrCat(mask.causal ? "causal" : "w", "_", mask.window_left < 0 ? std::string("u") : absl::StrCat(mask.window_left), "_",
                     mask.window_right < 0 ? std::string("u") : absl::StrCat(mask.window_right));
  }
  if (mask.prefix > 0) absl::StrAppend(&m, "_prefix", mask.prefix);
  if (mask.sink > 0) absl::StrAppend(&m, "_sink", mask.sink);
  if (mask.HasDocuments()) absl::StrAppend(&m, "_docs", mask.num_docs);
  if (mask.HasBlocks()) {
    int64_t on = 0;
    for (int64_t x = 0; x < mask.block_heads * mask.block_rows * mask.block_cols; ++x) {
      on += mask.blocks[x] != 0;
    }
    absl::StrAppend(&m, "_blocks", mask.block_size, "x", mask.block_heads, "on", on);
  }
  return absl::StrCat("b", batch, "_sq", seqlen_q, "_sk", seqlen_k, "_h", heads, "_hk", heads_k,
                      "_d", head_dim, "_", m, softcap > 0 ? "_cap" : "", "_",
                      DTypeName(dtype), "_pos", static_cast<int>(q_pos), static_cast<int>(k_pos),
                      strided ? "_strided" : "");
}

uint16_t FloatToHalf(float f) { return ::ringattn::FloatToHalf(f); }

float HalfToFloat(uint16_t h) { return ::ringattn::HalfToFloat(h); }

float RoundToDType(DType t, float f) {
  return t == DType::kFloat16 ? HalfToFloat(FloatToHalf(f)) : RoundTo(t, f);
}

uint16_t ToBits(DType t, float f) { return t == DType::kFloat16 ? FloatToHalf(f) : FloatToBF16(f); }

float FromBits(DType t, uint16_t w) {
  return t == DType::kFloat16 ? HalfToFloat(w) : BF16ToFloat(w);
}

float Tensor::At(int64_t b, int64_t i, int64_t h, int64_t d) const {
  const int64_t off = b * stride.batch + i * stride.seq + h * stride.head + d;
  return dtype == DType::kFloat32 ? floats[off] : FromBits(dtype, words[off]);
}

Tensor MakeTensor(const std::vector<float>& x, int64_t B, int64_t S, int64_t H, int64_t D,
                  DType dtype, bool strided) {
  Tensor t;
  t.dtype = dtype;
  int64_t size;
  if (strided) {
    const int64_t row = D + 3;
    t.stride = {H * S * row, row, S * row};
    size = B * H * S * row;
  } else {
    t.stride = TensorStrides::Contiguous(S, H, D);
    size = B * S * H * D;
  }
  // Poison the gaps so a kernel that reads them shows it.
  if (dtype == DType::kFloat32) {
    t.floats.assign(size, std::numeric_limits<float>::quiet_NaN());
  } else {
    t.words.assign(size, ToBits(dtype, std::numeric_limits<float>::quiet_NaN()));
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          const float val = x[((b * S + i) * H + h) * D + d];
          const int64_t off = b * t.stride.batch + i * t.stride.seq + h * t.stride.head + d;
          if (dtype == DType::kFloat32) {
            t.floats[off] = val;
          } else {
            t.words[off] = ToBits(dtype, val);
          }
        }
  return t;
}

std::vector<float> ToContiguous(const Tensor& t, int64_t B, int64_t S, int64_t H, int64_t D) {
  std::vector<float> x(B * S * H * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) x[((b * S + i) * H + h) * D + d] = t.At(b, i, h, d);
  return x;
}

std::vector<float> RandomValues(int64_t n, DType dtype, uint32_t seed, float stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> x(n);
  for (float& v : x) v = RoundToDType(dtype, dist(gen));
  return x;
}

const std::vector<int64_t>& TestDocuments(DocKind kind) {
  static const std::vector<int64_t>* sets[3] = {nullptr, nullptr, nullptr};
  const int i = static_cast<int>(kind);
  if (sets[i] != nullptr) return *sets[i];
  auto* b = new std::vector<int64_t>{0};
  std::mt19937 rng(40 + i);
  auto add = [&](int64_t len) { b->push_back(b->back() + len); };
  switch (kind) {
    case DocKind::kTiny:  // lengths 1..4, a few empty
      while (b->back() < 1500) add(std::uniform_int_distribution<int64_t>(0, 4)(rng));
      break;
    case DocKind::kMixed:  // 0..150: across tiles, some empty
      while (b->back() < 1500) add(std::uniform_int_distribution<int64_t>(0, 150)(rng));
      break;
    case DocKind::kTileEdges:  // boundaries on and one off the kernels' 64-row tiles
      for (int64_t e : {64, 127, 128, 129, 192, 192, 320, 641, 1024}) b->push_back(e);
      break;
  }
  b->push_back(int64_t{1} << 40);  // the rest of the positions: one document
  sets[i] = b;
  return *b;
}

Mask WithTestBlocks(Mask m, BlockKind kind, int64_t size, int64_t heads) {
  static std::map<std::tuple<int, int64_t, int64_t>, std::vector<uint8_t>> pool;
  const int64_t n = (kTestBlockSpan + size - 1) / size;
  std::vector<uint8_t>& bits = pool[{static_cast<int>(kind), size, heads}];
  if (bits.empty()) {
    bits.assign(heads * n * n, 0);
    std::mt19937 rng(static_cast<uint32_t>(size * 31 + heads));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          uint8_t on = 0;
          switch (kind) {
            case BlockKind::kRandom: on = rng() % 3 == 0 ? 1 + rng() % 7 : 0; break;  // any nonzero is on
            case BlockKind::kAllOff: on = 0; break;
            case BlockKind::kAllOn: on = 1; break;
            case BlockKind::kDiagonal: on = a == b; break;
          }
          bits[(h * n + a) * n + b] = on;
        }
  }
  return m.WithBlocks(bits.data(), heads, n, n, size);
}

Mask WithTestDocuments(Mask m, DocKind kind) {
  const std::vector<int64_t>& d = TestDocuments(kind);
  return m.WithDocuments(d.data(), static_cast<int64_t>(d.size()));
}

PositionMap MakePositions(PosKind kind, int64_t n, int64_t salt) {
  PositionMap m;
  switch (kind) {
    case PosKind::kFromZero:
      m.AddRange(0, n);
      break;
    case PosKind::kOffset:
      m.AddRange(37 + salt, n);
      break;
    case PosKind::kTwoRanges: {  // a zigzag shard: two chunks far apart
      const int64_t a = n / 2 + salt % 3;
      const int64_t first = std::min(a, n);
      m.AddRange(11 + salt, first);
      m.AddRange(11 + salt + first + 3 * n + 5, n - first);
      break;
    }
    case PosKind::kStriped:  // stripes of 4 of a 3-rank ring, rank salt % 3
      m.AddStrided(4 * (salt % 3), n, 4, 12);
      break;
  }
  return m;
}

Problem NonFiniteAtMaskedKeys(const Mask& mask, int64_t head_dim, DType dtype) {
  Case c;
  c.seqlen_q = 100;
  c.seqlen_k = 300;
  c.head_dim = head_dim;
  c.dtype = dtype;
  c.mask = mask;
  Problem pr = MakeProblem(c, 17);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t j = 150; j < 300; j += 7)
    for (int64_t h = 0; h < c.heads_k; ++h)
      for (int64_t d = 0; d < head_dim; ++d) {
        const int64_t off = (j * c.heads_k + h) * head_dim + d;
        pr.k[off] = (d % 2) ? nan : INFINITY;
        pr.v[off] = (d % 3) ? nan : -INFINITY;
      }
  for (int64_t d = 0; d < head_dim; ++d) {
    pr.k[101 * c.heads_k * head_dim + d] = nan;
    pr.v[101 * c.heads_k * head_dim + d] = nan;
  }
  pr.tk = MakeTensor(pr.k, 1, c.seqlen_k, c.heads_k, head_dim, dtype, false);
  pr.tv = MakeTensor(pr.v, 1, c.seqlen_k, c.heads_k, head_dim, dtype, false);
  return pr;
}

bool MaskedKeysStayedOut(const Problem& p, const std::vector<float>& out,
                         const std::vector<float>& lse, const Grads& g) {
  auto finite = [](const float* x, size_t n) {
    return std::all_of(x, x + n, [](float v) { return std::isfinite(v); });
  };
  const size_t seen = static_cast<size_t>(100 * p.c.heads_k * p.c.head_dim);
  return finite(out.data(), out.size()) && finite(lse.data(), lse.size()) &&
         finite(g.dq.data(), g.dq.size()) && finite(g.dk.data(), seen) &&
         finite(g.dv.data(), seen);
}

AttnParams BackwardParams(const Problem& pr, const float* lse, const float* dsum, Grads* g) {
  const Case& c = pr.c;
  AttnParams p = pr.Params();
  p.lse = const_cast<float*>(lse);
  p.lse_batch_stride = c.heads * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  p.dsum = dsum;
  g->dq.assign(c.batch * c.seqlen_q * c.heads * c.head_dim, 0.0f);
  g->dk.assign(c.batch * c.seqlen_k * c.heads_k * c.head_dim, 0.0f);
  g->dv.assign(g->dk.size(), 0.0f);
  p.dq_accum = g->dq.data();
  p.dk_accum = g->dk.data();
  p.dv_accum = g->dv.data();
  return p;
}

Problem MakeProblem(const Case& c, uint32_t seed) {
  Problem p;
  p.c = c;
  const int64_t B = c.batch, H = c.heads, Hk = c.heads_k, D = c.head_dim;
  p.q = RandomValues(B * c.seqlen_q * H * D, c.dtype, seed);
  p.k = RandomValues(B * c.seqlen_k * Hk * D, c.dtype, seed + 1);
  p.v = RandomValues(B * c.seqlen_k * Hk * D, c.dtype, seed + 2);
  p.dout = RandomValues(B * c.seqlen_q * H * D, c.dtype, seed + 3);
  p.tq = MakeTensor(p.q, B, c.seqlen_q, H, D, c.dtype, c.strided);
  p.tk = MakeTensor(p.k, B, c.seqlen_k, Hk, D, c.dtype, c.strided);
  p.tv = MakeTensor(p.v, B, c.seqlen_k, Hk, D, c.dtype, c.strided);
  p.tdout = MakeTensor(p.dout, B, c.seqlen_q, H, D, c.dtype, c.strided);
  p.qmap = MakePositions(c.q_pos, c.seqlen_q, 1);
  p.kmap = MakePositions(c.k_pos, c.seqlen_k, 2);
  p.scale = DefaultScale(D);
  RefProblem& r = p.ref;
  r.batch = B;
  r.seqlen_q = c.seqlen_q;
  r.seqlen_k = c.seqlen_k;
  r.num_heads = H;
  r.num_heads_k = Hk;
  r.head_dim = D;
  r.scale = p.scale;
  r.softcap = c.softcap;
  r.mask = c.mask;
  for (int64_t i = 0; i < c.seqlen_q; ++i) r.q_pos.push_back(p.qmap.Global(i));
  for (int64_t j = 0; j < c.seqlen_k; ++j) r.k_pos.push_back(p.kmap.Global(j));
  return p;
}

AttnParams Problem::Params() const {
  AttnParams a;
  a.q = tq.data();
  a.k = tk.data();
  a.v = tv.data();
  a.q_stride = tq.stride;
  a.k_stride = tk.stride;
  a.v_stride = tv.stride;
  a.dtype = c.dtype;
  a.out_dtype = c.dtype;
  a.dout = tdout.data();
  a.dout_stride = tdout.stride;
  a.batch = c.batch;
  a.seqlen_q = c.seqlen_q;
  a.seqlen_k = c.seqlen_k;
  a.num_heads = c.heads;
  a.num_heads_k = c.heads_k;
  a.head_dim = c.head_dim;
  a.scale = scale;
  a.softcap = c.softcap;
  a.mask = c.mask;
  a.q_pos = qmap;
  a.k_pos = kmap;
  return a;
}

namespace {

// Scores of row (b, h, i) in fp32, with the tanh values for the backward.
void NaiveScores(const Problem& p, int64_t b, int64_t h, int64_t i, std::vector<float>* x,
                 std::vector<float>* th) {
  const RefProblem& r = p.ref;
  const int64_t D = r.head_dim, hk = h / (r.num_heads / r.num_heads_k);
  x->assign(r.seqlen_k, -INFINITY);
  th->assign(r.seqlen_k, 0.0f);
  for (int64_t j = 0; j < r.seqlen_k; ++j) {
    if (!r.mask.ForHead(h).Visible(r.q_pos[i], r.k_pos[j])) continue;
    float s = 0.0f;
    for (int64_t d = 0; d < D; ++d)
      s += p.q[((b * r.seqlen_q + i) * r.num_heads + h) * D + d] *
           p.k[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D + d];
    s *= p.scale;
    if (r.softcap > 0) {
      (*th)[j] = std::tanh(s / static_cast<float>(r.softcap));
      s = static_cast<float>(r.softcap) * (*th)[j];
    }
    (*x)[j] = s;
  }
}

}  // namespace

void NaiveForward(const Problem& p, std::vector<float>* out, std::vector<float>* lse) {
  const RefProblem& r = p.ref;
  const int64_t D = r.head_dim, group = r.num_heads / r.num_heads_k;
  const DType t = p.c.dtype;
  out->assign(r.batch * r.seqlen_q * r.num_heads * D, 0.0f);
  lse->assign(r.batch * r.num_heads * r.seqlen_q, -INFINITY);
  std::vector<float> x, th;
  for (int64_t b = 0; b < r.batch; ++b)
    for (int64_t h = 0; h < r.num_heads; ++h)
      for (int64_t i = 0; i < r.seqlen_q; ++i) {
        NaiveScores(p, b, h, i, &x, &th);
        float m = -INFINITY;
        for (float s : x) m = std::max(m, s);
        if (m == -INFINITY) continue;
        float l = 0.0f;
        for (float& s : x) {
          s = std::exp(s - m);
          l += s;
        }
        (*lse)[(b * r.num_heads + h) * r.seqlen_q + i] = m + std::log(l);
        float* o = &(*out)[((b * r.seqlen_q + i) * r.num_heads + h) * D];
        for (int64_t j = 0; j < r.seqlen_k; ++j) {
          if (x[j] == 0.0f) continue;
          const float pj = RoundToDType(t, x[j] / l);
          for (int64_t d = 0; d < D; ++d)
            o[d] += pj * p.v[((b * r.seqlen_k + j) * r.num_heads_k + h / group) * D + d];
        }
        for (int64_t d = 0; d < D; ++d) o[d] = RoundToDType(t, o[d]);
      }
}

void NaiveBackward(const Problem& p, std::vector<float>* dq, std::vector<float>* dk,
                   std::vector<float>* dv) {
  const RefProblem& r = p.ref;
  const int64_t D = r.head_dim, group = r.num_heads / r.num_heads_k;
  const DType t = p.c.dtype;
  dq->assign(r.batch * r.seqlen_q * r.num_heads * D, 0.0f);
  dk->assign(r.batch * r.seqlen_k * r.num_heads_k * D, 0.0f);
  dv->assign(r.batch * r.seqlen_k * r.num_heads_k * D, 0.0f);
  std::vector<float> x, th, o(D);
  for (int64_t b = 0; b < r.batch; ++b)
    for (int64_t h = 0; h < r.num_heads; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < r.seqlen_q; ++i) {
        NaiveScores(p, b, h, i, &x, &th);
        float m = -INFINITY;
        for (float s : x) m = std::max(m, s);
        if (m == -INFINITY) continue;
        float l = 0.0f;
        for (float s : x) l += std::exp(s - m);
        std::fill(o.begin(), o.end(), 0.0f);
        std::vector<float> prob(r.seqlen_k, 0.0f);
        for (int64_t j = 0; j < r.seqlen_k; ++j) {
          if (x[j] == -INFINITY) continue;
          prob[j] = RoundToDType(t, std::exp(x[j] - m) / l);
          for (int64_t d = 0; d < D; ++d)
            o[d] += prob[j] * p.v[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D + d];
        }
        const float* dO = &p.dout[((b * r.seqlen_q + i) * r.num_heads + h) * D];
        float dsum = 0.0f;
        for (int64_t d = 0; d < D; ++d) dsum += dO[d] * RoundToDType(t, o[d]);
        for (int64_t j = 0; j < r.seqlen_k; ++j) {
          if (x[j] == -INFINITY) continue;
          const float* vj = &p.v[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D];
          const float* kj = &p.k[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D];
          const float* qi = &p.q[((b * r.seqlen_q + i) * r.num_heads + h) * D];
          float dp = 0.0f;
          for (int64_t d = 0; d < D; ++d) dp += dO[d] * vj[d];
          float ds = prob[j] * (dp - dsum);
          if (r.softcap > 0) ds *= 1.0f - th[j] * th[j];
          ds = RoundToDType(t, ds * p.scale);
          for (int64_t d = 0; d < D; ++d) {
            (*dq)[((b * r.seqlen_q + i) * r.num_heads + h) * D + d] += ds * kj[d];
            (*dk)[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D + d] += ds * qi[d];
            (*dv)[((b * r.seqlen_k + j) * r.num_heads_k + hk) * D + d] += prob[j] * dO[d];
          }
        }
      }
    }
  for (auto* g : {dq, dk, dv})
    for (float& val : *g) val = RoundToDType(t, val);
}

double MaxError(const std::vector<double>& a, const std::vector<double>& ref) {
  double e = 0.0;
  if (a.size() != ref.size()) return INFINITY;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(ref[i]) != std::isfinite(a[i])) return INFINITY;
    if (!std::isfinite(ref[i])) {
      if (ref[i] != a[i]) return INFINITY;  // -inf lse must match exactly
      continue;
    }
    e = std::max(e, std::abs(a[i] - ref[i]));
  }
  return e;
}

double MaxError(const std::vector<float>& a, const std::vector<double>& ref) {
  return MaxError(ToDouble(a), ref);
}

}  // namespace ringattn::testing
