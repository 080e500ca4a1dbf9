// Layout: see layout.h.
#include "runtime/layout.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringattn {

const char* ShardingName(Sharding s) {
  switch (s) {
    case Sharding::kContiguous: return "contiguous";
    case Sharding::kZigzag: return "zigzag";
    case Sharding::kStriped: return "striped";
    case Sharding::kBalanced: return "balanced";
  }
  return "?";
}

absl::StatusOr<Sharding> ParseSharding(const std::string& name) {
  for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped,
                     Sharding::kBalanced}) {
    if (name == ShardingName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "sharding: expected contiguous, zigzag, striped or balanced, got '", name, "'"));
}

absl::StatusOr<Layout> Layout::Create(Sharding kind, int64_t seqlen, int world, int64_t stripe,
                                      const Mask& mask) {
  if (seqlen < 0) return absl::InvalidArgumentError(absl::StrCat("seqlen: expected >= 0, got ", seqlen));
  if (world < 1) return absl::InvalidArgumentError(absl::StrCat("world size: expected >= 1, got ", world));
  if (stripe < 1) return absl::InvalidArgumentError(absl::StrCat("stripe: expected >= 1, got ", stripe));
  // Positions and strides stay far inside int64 (period = stripe * W).
  constexpr int64_t kMaxSeqlen = int64_t{1} << 48;
  if (seqlen > kMaxSeqlen) {
    return absl::InvalidArgumentError(
        absl::StrCat("seqlen: expected at most 2^48 tokens, got ", seqlen));
  }
  if (kind == Sharding::kBalanced) {
    if (seqlen > kMaxBalancedSeqlen) {
      return absl::InvalidArgumentError(absl::StrCat(
          "seqlen: the balanced sharding takes at most 2^32 tokens, got ", seqlen));
    }
    Layout l(kind, seqlen, world, 1);
    l.balanced_ = Balance(seqlen, world, mask);
    return l;
  }
  // A stripe longer than the sequence is one stripe: the same layout as a
  // stripe of the sequence's length (and no overflow in stripe * W).
  return Layout(kind, seqlen, world, std::min(stripe, std::max<int64_t>(seqlen, 1)));
}

std::shared_ptr<const std::vector<Layout::Segments>> Layout::Balance(int64_t seqlen, int world,
                                                                     const Mask& documents) {
  // The work model is causal attention within the documents, whatever the
  // mask's other rules: the layout is then a function of (S, W, cu_seqlens)
  // alone, which every caller that shards tensors knows (Python's shard()).
  const Mask mask = documents.HasDocuments()
                        ? Mask::Causal().WithDocuments(documents.cu_seqlens, documents.num_docs + 1)
                        : Mask::Causal();
  // The documents, empty ones dropped; no documents is one.
  struct Doc {
    int64_t begin, end;
    double work = 0;  // visible pairs of its queries
  };
  std::vector<Doc> docs;
  if (mask.HasDocuments()) {
    for (int64_t d = 0; d < mask.num_docs; ++d) {
      if (mask.cu_seqlens[d + 1] > mask.cu_seqlens[d]) {
        docs.push_back({mask.cu_seqlens[d], mask.cu_seqlens[d + 1]});
      }
    }
  } else if (seqlen > 0) {
    docs.push_back({0, seqlen});
  }
  // A row's cost: its visible keys, plus the masked part of the tiles it
  // touches, which the kernels compute too (about one and a half 64-key
  // tiles per row; it matters for short documents only). Counting visible
  // pairs alone left ranks of short documents 11% slower at equal pairs.
  constexpr double kRowOverhead = 96;
  double total = 0;
  for (Doc& d : docs) {
    for (int64_t i = d.begin; i < d.end; ++i) {
      d.work += kRowOverhead + static_cast<double>(mask.VisibleKeys(i, seqlen));
    }
    total += d.work;
  }
  const double share = total / world;
  constexpr double kSplitFraction = 1.0 / 32;  // bounds each rank's excess over its share

  // Ranges [begin, end) per rank, in global order.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> ranges(world);
  double split_work = 0;
  for (const Doc& d : docs) {
    if (d.work > kSplitFraction * share) split_work += d.work;
  }
  // Whole documents fill each rank's remaining share in order, by where
  // their middle falls in the running total.
  const double whole_share = (total - split_work) / world;
  double running = 0;
  for (const Doc& d : docs) {
    if (d.work > kSplitFraction * share) {
      const int64_t n = 2 * int64_t{world}, len = d.end - d.begin;
      auto start = [&](int64_t c) { return d.begin + c * (len / n) + std::min(c, len % n); };
      for (int r = 0; r < world; ++r) {
        ranges[r].push_back({start(r), start(r + 1)});
        ranges[r].push_back({start(n - 1 - r), start(n - r)});
      }
      continue;
    }
    const double middle = running + d.work / 2;
    running += d.work;
    const int r = whole_share > 0 ? std::min(world - 1, static_cast<int>(middle / whole_share)) : 0;
    ranges[r].push_back({d.begin, d.end});
  }

  auto out = std::make_shared<std::vector<Segments>>(world);
  for (int r = 0; r < world; ++r) {
    auto& rr = ranges[r];
    std::sort(rr.begin(), rr.end());
    Segments& segs = (*out)[r];
    int64_t local = 0;
    for (const auto& [b, e] : rr) {
      if (e <= b) continue;
      if (!segs.empty() && segs.back().global_begin + segs.back().length == b) {
        segs.back().length += e - b;  // adjacent: one segment
      } else {
        segs.push_back(PositionMap::Segment{local, e - b, b, 1, 1});
      }
      local += e - b;
    }
  }
  return out;
}

int64_t Layout::ChunkLength(int64_t c, int64_t n) const {
  return seqlen_ / n + (c < seqlen_ % n ? 1 : 0);
}

int64_t Layout::ChunkStart(int64_t c, int64_t n) const {
  return c * (seqlen_ / n) + std::min<int64_t>(c, seqlen_ % n);
}

int64_t Layout::ShardLength(int rank) const { return Shard(rank).Length(); }

int64_t Layout::MaxShardLength() const {
  int64_t m = 0;
  for (int r = 0; r < world_; ++r) m = std::max(m, ShardLength(r));
  return m;
}

Layout Layout::Grouped(const Layout& base, int group_size) {
  const int groups = base.world() / group_size;
  auto segs = std::make_shared<std::vector<Segments>>(groups);
  for (int g = 0; g < groups; ++g) {
    std::vector<int64_t> pos;
    for (int u = 0; u < group_size; ++u) {
      const std::vector<int64_t> p = base.Positions(g * group_size + u);
      pos.insert(pos.end(), p.begin(), p.end());
    }
    std::sort(pos.begin(), pos.end());
    Segments& out = (*segs)[g];
    for (size_t i = 0; i < pos.size(); ++i) {
      if (!out.empty() && out.back().global_begin + out.back().length == pos[i]) {
        ++out.back().length;
      } else {
        out.push_back(PositionMap::Segment{static_cast<int64_t>(i), 1, pos[i], 1, 1});
      }
    }
  }
  Layout l(base.kind(), base.seqlen(), groups, base.stripe());
  l.balanced_ = std::move(segs);
  return l;
}

PositionMap Layout::Shard(int rank) const {
  PositionMap m;
  const int64_t w = world_;
  if (balanced_ != nullptr) {
    const Segments& segs = (*balanced_)[rank];
    return PositionMap::OfSegments(segs.data(), static_cast<int64_t>(segs.size()));
  }
  switch (kind_) {
    case Sharding::kContiguous:
      m.AddRange(ChunkStart(rank, w), ChunkLength(rank, w));
      break;
    case Sharding::kZigzag:
      m.AddRange(ChunkStart(rank, 2 * w), ChunkLength(rank, 2 * w));
      m.AddRange(ChunkStart(2 * w - 1 - rank, 2 * w), ChunkLength(2 * w - 1 - rank, 2 * w));
      break;
    case Sharding::kBalanced: {
      const Segments& segs = (*balanced_)[rank];
      return PositionMap::OfSegments(segs.data(), static_cast<int64_t>(segs.size()));
    }
    case Sharding::kStriped: {
      // Stripes m = rank, rank + W, ...; only the globally last stripe is short.
      const int64_t stripes = (seqlen_ + stripe_ - 1) / stripe_;
      if (rank >= stripes) break;
      const int64_t mine = (stripes - 1 - rank) / w + 1;
      const int64_t last = rank + (mine - 1) * w;
      const int64_t len = (mine - 1) * stripe_ + std::min(stripe_, seqlen_ - last * stripe_);
      m.AddStrided(rank * stripe_, len, stripe_, w * stripe_);
      break;
    }
  }
  return m;
}

std::vector<int64_t> Layout::Positions(int rank) const {
  const PositionMap m = Shard(rank);
  std::vector<int64_t> pos;
  pos.reserve(m.Length());
  for (int64_t s = 0; s < m.num_segments; ++s) {
    const PositionMap::Segment& g = m.Segments()[s];
    for (int64_t o = 0; o < g.length; ++o) pos.push_back(m.Global(g.local_begin + o));
  }
  return pos;
}

void Layout::ShardRows(const void* full, int rank, int64_t batch, int64_t row_bytes,
                       void* shard) const {
  const std::vector<int64_t> pos = Positions(rank);
  const int64_t n = static_cast<int64_t>(pos.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(static_cast<char*>(shard) + (b * n + i) * row_bytes,
                  static_cast<const char*>(full) + (b * seqlen_ + pos[i]) * row_bytes, row_bytes);
}

void Layout::GatherRows(const void* shard, int rank, int64_t batch, int64_t row_bytes,
                        void* full) const {
  const std::vector<int64_t> pos = Positions(rank);
  const int64_t n = static_cast<int64_t>(pos.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(static_cast<char*>(full) + (b * seqlen_ + pos[i]) * row_bytes,
                  static_cast<const char*>(shard) + (b * n + i) * row_bytes, row_bytes);
}

}  // namespace ringattn
