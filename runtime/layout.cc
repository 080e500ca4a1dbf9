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
  }
  return "?";
}

absl::StatusOr<Sharding> ParseSharding(const std::string& name) {
  for (Sharding s : {Sharding::kContiguous, Sharding::kZigzag, Sharding::kStriped}) {
    if (name == ShardingName(s)) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("sharding: expected contiguous, zigzag or striped, got '", name, "'"));
}

absl::StatusOr<Layout> Layout::Create(Sharding kind, int64_t seqlen, int world, int64_t stripe) {
  if (seqlen < 0) return absl::InvalidArgumentError(absl::StrCat("seqlen: expected >= 0, got ", seqlen));
  if (world < 1) return absl::InvalidArgumentError(absl::StrCat("world size: expected >= 1, got ", world));
  if (stripe < 1) return absl::InvalidArgumentError(absl::StrCat("stripe: expected >= 1, got ", stripe));
  // Positions and strides stay far inside int64 (period = stripe * W).
  constexpr int64_t kMaxSeqlen = int64_t{1} << 48;
  if (seqlen > kMaxSeqlen) {
    return absl::InvalidArgumentError(
        absl::StrCat("seqlen: expected at most 2^48 tokens, got ", seqlen));
  }
  // A stripe longer than the sequence is one stripe: the same layout as a
  // stripe of the sequence's length (and no overflow in stripe * W).
  return Layout(kind, seqlen, world, std::min(stripe, std::max<int64_t>(seqlen, 1)));
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

PositionMap Layout::Shard(int rank) const {
  PositionMap m;
  const int64_t w = world_;
  switch (kind_) {
    case Sharding::kContiguous:
      m.AddRange(ChunkStart(rank, w), ChunkLength(rank, w));
      break;
    case Sharding::kZigzag:
      m.AddRange(ChunkStart(rank, 2 * w), ChunkLength(rank, 2 * w));
      m.AddRange(ChunkStart(2 * w - 1 - rank, 2 * w), ChunkLength(2 * w - 1 - rank, 2 * w));
      break;
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
  std::vector<int64_t> pos(m.Length());
  for (int64_t i = 0; i < m.Length(); ++i) pos[i] = m.Global(i);
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
