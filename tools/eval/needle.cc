// Needle construction, the forward passes and the scoring; see needle.h.
#include "tools/eval/needle.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attention/params.h"
#include "base/status.h"
#include "tools/eval/exactness.h"

namespace ringattn::eval {
namespace {

constexpr double kValueNorm = 4.0;   // c: the needle value's length
constexpr double kNeedleScore = 32;  // a^2 * scale
constexpr double kFoundMin = 0.9;    // visible: cosine and recovered at least this
constexpr double kMaskedMax = 0.5;   // masked: recovered at most this
constexpr int kMaxBoundaries = 16;   // sampled when a layout has more
constexpr size_t kMaxFailures = 12;

struct Want {
  int64_t pos;
  std::string kind;
  double depth;
};

// Needle direction of slot `idx` in a pass: kv head and dimension.
struct Slot {
  int64_t hk, d, dv;
};

}  // namespace

double NeedleRun::Cell(double depth, bool* masked, bool* ok) const {
  for (const Needle& n : needles) {
    if (n.kind != "depth" || std::abs(n.depth - depth) > 1e-9) continue;
    for (const Probe& p : n.probes) {
      if (p.kind != "end") continue;
      *masked = !p.expect_visible;
      *ok = p.ok;
      return p.recovered;
    }
  }
  *masked = false;
  *ok = true;
  return std::numeric_limits<double>::quiet_NaN();
}

absl::StatusOr<NeedleRun> RunNeedles(const NeedleSpec& spec) {
  const int64_t S = spec.seqlen, H = spec.heads, Hk = spec.kv_heads, D = spec.head_dim;
  if (S < 2) return ArgError("needle seqlen", ">= 2", S);
  if (D < 2) return ArgError("head_dim for the needle check", ">= 2", D);
  if (Hk < 1 || H % Hk != 0) return ArgError("heads % kv_heads", "0", H % std::max<int64_t>(Hk, 1));
  const Mask& mask = spec.mask;
  ASSIGN_OR_RETURN(const Layout layout,
                   Layout::Create(spec.sharding, S, spec.world, spec.stripe, mask));
  const int W = spec.world;
  const int64_t group = H / Hk;

  // Owner of every position, and the shard boundaries.
  std::vector<int32_t> owner(S, 0);
  for (int r = 0; r < W; ++r) {
    for (int64_t g : layout.Positions(r)) owner[g] = r;
  }
  std::vector<int64_t> boundaries;
  for (int64_t b = 1; b < S; ++b) {
    if (owner[b] != owner[b - 1]) boundaries.push_back(b);
  }
  std::vector<int64_t> probed = boundaries;
  if (static_cast<int>(probed.size()) > kMaxBoundaries) {
    // Every rank pair of the first and last rounds, then evenly spaced.
    std::set<int64_t> pick;
    const size_t n = probed.size();
    for (size_t i = 0; i < std::min<size_t>(W, n); ++i) {
      pick.insert(probed[i]);
      pick.insert(probed[n - 1 - i]);
    }
    for (int i = 0; static_cast<int>(pick.size()) < kMaxBoundaries && i < kMaxBoundaries; ++i) {
      pick.insert(probed[(n - 1) * i / (kMaxBoundaries - 1)]);
    }
    probed.assign(pick.begin(), pick.end());
  }

  // Needle positions in priority order; the first claim on a position wins.
  std::vector<Want> wants;
  std::vector<double> depths = spec.depths;
  std::sort(depths.rbegin(), depths.rend());  // deepest first: 100% gets the last row
  for (double d : depths) {
    wants.push_back({std::clamp<int64_t>(std::llround(d * (S - 1)), 0, S - 1), "depth", d});
  }
  for (int64_t b : probed) {
    wants.push_back({b - 1, "boundary-left", -1});
    wants.push_back({b, "boundary-right", -1});
  }
  // Packed documents: needles on both sides of each document boundary
  // (their probes across it must not retrieve them).
  for (int64_t d = 1; d < mask.num_docs; ++d) {
    const int64_t e = mask.cu_seqlens[d];
    if (e <= 0 || e >= S) continue;
    wants.push_back({e - 1, "document-last", -1});
    wants.push_back({e, "document-first", -1});
  }
  for (int r = 0; r < W; ++r) {
    const PositionMap m = layout.Shard(r);
    if (m.Length() == 0) continue;
    wants.push_back({m.Global(m.Segments()[0].length / 2), "rank", -1});
  }
  std::vector<Want> needles;
  {
    std::set<int64_t> used;
    for (const Want& w : wants) {
      if (used.insert(w.pos).second) needles.push_back(w);
    }
  }

  NeedleRun run;
  run.seqlen = S;
  run.boundaries = static_cast<int64_t>(boundaries.size());
  const int64_t capacity = D * Hk;
  const int64_t num_passes = (static_cast<int64_t>(needles.size()) + capacity - 1) / capacity;
  run.passes = static_cast<int>(num_passes);
  const float scale = DefaultScale(D);
  const float a = static_cast<float>(std::sqrt(kNeedleScore / scale));
  std::vector<char> rank_has(W, 0);

  for (int64_t pass = 0; pass < num_passes; ++pass) {
    const int64_t first = pass * capacity;
    const int64_t count = std::min<int64_t>(capacity, static_cast<int64_t>(needles.size()) - first);
    std::vector<Needle> batch(count);
    std::vector<Slot> slots(count);
    std::set<int64_t> taken;  // probe rows of this pass
    for (int64_t i = 0; i < count; ++i) {
      const Want& w = needles[first + i];
      batch[i].pos = w.pos;
      batch[i].kind = w.kind;
      batch[i].depth = w.depth;
      batch[i].rank = owner[w.pos];
      batch[i].pass = static_cast<int>(pass);
      slots[i] = {i / D, i % D, (i % D + D / 2) % D};
    }
    auto add_probe = [&](Needle& n, int64_t p, const char* kind) {
      if (p < 0 || p >= S || !taken.insert(p).second) return;
      Probe pr;
      pr.pos = p;
      pr.kind = kind;
      pr.expect_visible = mask.Visible(p, n.pos);
      n.probes.push_back(pr);
    };
    // End probes first, so that the grid probes sit at the very end.
    int64_t cursor = S - 1;
    for (Needle& n : batch) {
      while (cursor >= 0 && taken.count(cursor)) --cursor;
      if (cursor >= 0) add_probe(n, cursor, "end");
    }
    for (Needle& n : batch) {
      for (int64_t p = n.pos + 1; p < std::min(S, n.pos + 9); ++p) {
        if (!taken.count(p)) {
          add_probe(n, p, "after");
          break;
        }
      }
      add_probe(n, n.pos, "diagonal");
      add_probe(n, n.pos - 1, "before");
      // The first and last queries that see the needle, and their
      // neighbours that do not.
      const PosRange seen_by = mask.QueryBounds(n.pos);
      if (seen_by.hi != PosRange::kMaxPos) {
        add_probe(n, seen_by.hi, "left-edge-in");
        add_probe(n, seen_by.hi + 1, "left-edge-out");
      }
      if (seen_by.lo != PosRange::kMinPos) {
        add_probe(n, seen_by.lo, "right-edge-in");
        add_probe(n, seen_by.lo - 1, "right-edge-out");
      }
    }

    // Inputs: small random background, then the needles and their probes.
    const uint64_t seed = spec.seed * 7919 + static_cast<uint64_t>(S) * 31 + pass;
    FullTensors in;
    in.q = NormalValues(S * H * D, spec.dtype, seed * 3 + 1, 0.5f);
    in.k = NormalValues(S * Hk * D, spec.dtype, seed * 3 + 2, 0.5f);
    in.v = NormalValues(S * Hk * D, spec.dtype, seed * 3 + 3, 0.25f);
    const float a_t = RoundTo(spec.dtype, a);
    for (int64_t i = 0; i < count; ++i) {
      const Slot& s = slots[i];
      float* k = &in.k[(batch[i].pos * Hk + s.hk) * D];
      float* v = &in.v[(batch[i].pos * Hk + s.hk) * D];
      std::fill(k, k + D, 0.0f);
      std::fill(v, v + D, 0.0f);
      k[s.d] = a_t;
      v[s.dv] = static_cast<float>(kValueNorm);
      for (const Probe& p : batch[i].probes) {
        for (int64_t h = s.hk * group; h < (s.hk + 1) * group; ++h) {
          float* q = &in.q[(p.pos * H + h) * D];
          std::fill(q, q + D, 0.0f);
          q[s.d] = a_t;
        }
      }
    }
    RunSpec rs;
    rs.seqlen = S;
    rs.heads = H;
    rs.kv_heads = Hk;
    rs.head_dim = D;
    rs.dtype = spec.dtype;
    rs.sharding = spec.sharding;
    rs.stripe = spec.stripe;
    rs.mask = mask;
    rs.world = W;
    rs.threads = spec.threads;
    rs.backward = false;
    rs.strategy = spec.strategy;
    rs.ulysses = spec.ulysses;
    rs.fault = spec.fault;
    rs.drop_step = spec.drop_step;
    rs.comm = spec.comm;
    rs.arrive_timeout = spec.arrive_timeout;
    FullOutputs out;
    ASSIGN_OR_RETURN(run.stats, RunFull(rs, in, &out));
    if (spec.comm != nullptr && spec.comm->Rank() != 0) continue;  // rank 0 scores

    // Scores.
    for (int64_t i = 0; i < count; ++i) {
      const Slot& s = slots[i];
      Needle& n = batch[i];
      rank_has[n.rank] = 1;
      for (Probe& p : n.probes) {
        double worst_rec = p.expect_visible ? INFINITY : -INFINITY, worst_cos = INFINITY;
        bool finite = true;
        for (int64_t h = s.hk * group; h < (s.hk + 1) * group; ++h) {
          const float* o = &out.out[(p.pos * H + h) * D];
          double norm = 0;
          for (int64_t d = 0; d < D; ++d) norm += static_cast<double>(o[d]) * o[d];
          norm = std::sqrt(norm);
          finite = finite && std::isfinite(norm);
          const double rec = o[s.dv] / kValueNorm;
          const double cos = norm > 0 ? o[s.dv] / norm : 0.0;
          if (p.expect_visible) {
            worst_rec = std::min(worst_rec, rec);
            worst_cos = std::min(worst_cos, cos);
          } else if (rec > worst_rec) {
            worst_rec = rec;
            worst_cos = cos;
          }
        }
        p.recovered = worst_rec;
        p.cosine = worst_cos;
        p.ok = finite && (p.expect_visible ? (worst_cos >= kFoundMin && worst_rec >= kFoundMin)
                                           : worst_rec <= kMaskedMax);
        ++run.probes;
        if (p.expect_visible) {
          ++run.expected_visible;
          if (p.ok) ++run.found;
          run.min_visible_cosine = std::min(run.min_visible_cosine, worst_cos);
          run.min_visible_recovered = std::min(run.min_visible_recovered, worst_rec);
        } else {
          ++run.expected_masked;
          if (!p.ok) ++run.leaked;
          run.max_masked_recovered = std::max(run.max_masked_recovered, worst_rec);
        }
        if (!p.ok && run.failures.size() < kMaxFailures) {
          run.failures.push_back(absl::StrFormat(
              "S=%d: needle at %d (%s, rank %d), probe at %d (%s): expected %s, recovered %.3f, "
              "cosine %.3f",
              S, n.pos, n.kind, n.rank, p.pos, p.kind,
              p.expect_visible ? "to retrieve it" : "NOT to retrieve it", worst_rec, worst_cos));
        }
      }
      run.needles.push_back(std::move(n));
    }
  }
  // A boundary counts as probed when needles sit on both of its sides
  // (whatever kind of needle claimed the position first).
  std::set<int64_t> needle_pos;
  for (const Needle& n : run.needles) needle_pos.insert(n.pos);
  for (int64_t b : boundaries) {
    if (needle_pos.count(b - 1) && needle_pos.count(b)) ++run.boundaries_probed;
  }
  for (char c : rank_has) run.ranks_with_needle += c;
  return run;
}

}  // namespace ringattn::eval
