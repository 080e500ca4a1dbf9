// A user's program against the installed library: a 2-rank ring on the
// local communicator (two threads of this process), causal, GQA, an odd
// length, forward and backward, checked against the library's float64
// reference. Exits 0 when every value is within 1e-4, 1 otherwise.
#include <ringattn/ringattn.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

namespace {

constexpr int kWorld = 2;
constexpr int64_t kSeq = 301, kHeads = 4, kKvHeads = 2, kDim = 32;

// Rows of `full` [S, heads, D] at the global positions `pos`, in order.
std::vector<float> Gather(const std::vector<float>& full, const std::vector<int64_t>& pos,
                          int64_t heads) {
  std::vector<float> out;
  for (int64_t p : pos) {
    out.insert(out.end(), full.begin() + p * heads * kDim, full.begin() + (p + 1) * heads * kDim);
  }
  return out;
}

}  // namespace

int main() {
  using namespace ringattn;
  std::printf("ringattn %s\n", RINGATTN_VERSION_STRING);
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  auto random = [&](int64_t n) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(gen);
    return x;
  };
  const std::vector<float> q = random(kSeq * kHeads * kDim), k = random(kSeq * kKvHeads * kDim),
                           v = random(kSeq * kKvHeads * kDim), dout = random(kSeq * kHeads * kDim);

  RingOptions opt;
  opt.seqlen = kSeq;
  opt.sharding = Sharding::kZigzag;
  opt.mask = Mask::Causal();
  opt.num_threads = 1;
  absl::StatusOr<std::unique_ptr<comm::LocalWorld>> world = comm::LocalWorld::Create(kWorld);
  if (!world.ok()) {
    std::fprintf(stderr, "%s\n", world.status().ToString().c_str());
    return 1;
  }

  RefProblem ref;
  ref.seqlen_q = ref.seqlen_k = kSeq;
  ref.num_heads = kHeads;
  ref.num_heads_k = kKvHeads;
  ref.head_dim = kDim;
  ref.scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  ref.mask = opt.mask;
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ReferenceForward(ref, q.data(), k.data(), v.data(), &out_ref, &lse_ref);
  ReferenceBackward(ref, q.data(), k.data(), v.data(), dout.data(), &dq_ref, &dk_ref, &dv_ref);

  double worst[kWorld] = {0, 0};
  bool failed[kWorld] = {false, false};
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<RingAttention>> ring =
          RingAttention::Create(&(*world)->Comm(r), opt);
      if (!ring.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", r, ring.status().ToString().c_str());
        failed[r] = true;
        return;
      }
      const std::vector<int64_t> pos = (*ring)->layout().Positions(r);
      const int64_t n = static_cast<int64_t>(pos.size());
      std::vector<float> ql = Gather(q, pos, kHeads), kl = Gather(k, pos, kKvHeads),
                         vl = Gather(v, pos, kKvHeads), dol = Gather(dout, pos, kHeads);
      std::vector<float> out(ql.size(), NAN), lse(kHeads * n, NAN), dq(ql.size(), NAN),
          dk(kl.size(), NAN), dv(vl.size(), NAN);
      auto view = [n](std::vector<float>& x, int64_t heads) {
        return TensorView::Contiguous(x.data(), DType::kFloat32, {1, n, heads, kDim});
      };
      const TensorView lse_v = TensorView::Contiguous(lse.data(), DType::kFloat32, {1, kHeads, n});
      absl::Status s = (*ring)->Forward(view(ql, kHeads), view(kl, kKvHeads), view(vl, kKvHeads),
                                        view(out, kHeads), lse_v);
      if (s.ok()) {
        s = (*ring)->Backward(view(ql, kHeads), view(kl, kKvHeads), view(vl, kKvHeads),
                              view(out, kHeads), lse_v, view(dol, kHeads), view(dq, kHeads),
                              view(dk, kKvHeads), view(dv, kKvHeads));
      }
      if (!s.ok()) {
        std::fprintf(stderr, "rank %d: %s\n", r, s.ToString().c_str());
        failed[r] = true;
        return;
      }
      auto compare = [&](const std::vector<float>& got, const std::vector<double>& want,
                         int64_t heads) {
        for (int64_t i = 0; i < n; ++i)
          for (int64_t e = 0; e < heads * kDim; ++e) {
            const double err = std::abs(got[i * heads * kDim + e] - want[pos[i] * heads * kDim + e]);
            worst[r] = std::isnan(err) ? INFINITY : std::max(worst[r], err);
          }
      };
      compare(out, out_ref, kHeads);
      compare(dq, dq_ref, kHeads);
      compare(dk, dk_ref, kKvHeads);
      compare(dv, dv_ref, kKvHeads);
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t i = 0; i < n; ++i) {
          const double err = std::abs(lse[h * n + i] - lse_ref[h * kSeq + pos[i]]);
          worst[r] = std::isnan(err) ? INFINITY : std::max(worst[r], err);
        }
    });
  }
  for (std::thread& t : ranks) t.join();
  const double err = std::max(worst[0], worst[1]);
  std::printf("2-rank ring against the float64 reference: max abs error %.3g (out, lse, dq, dk, dv)\n",
              err);
  return failed[0] || failed[1] || !(err <= 1e-4) ? 1 : 0;
}
