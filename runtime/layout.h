// Sequence sharding: which global token positions each rank holds.
//
// Variants, for any sequence length S and world size W (no divisibility
// rule; lengths differ by at most the remainder, and shards may be empty
// when S < W):
//   contiguous  rank r holds one block [start_r, start_r + len_r)
//   zigzag      the sequence is cut into 2W chunks; rank r holds chunks r
//               and 2W-1-r, which balances causal work
//   striped     round robin of fixed-size stripes: stripe m goes to rank
//               m % W (stripe size 1 = token-level striping)
//   balanced    equal visible work per rank for packed documents of any
//               lengths, counted as causal attention within the documents
//               (so the layout depends on S, W and cu_seqlens only; other
//               masks are balanced approximately): a document worth more than
//               1/32 of a rank's share is cut into 2W chunks zigzag (each
//               rank gets chunks r and 2W-1-r of it); the others stay whole
//               and go, in order, to the rank whose share of the running
//               total their middle falls in, so each rank holds runs of
//               whole documents that need no other rank's keys. Without
//               documents it is zigzag. A rank's work is within one whole
//               document's work of its share.
// Positions of a shard are increasing; Shard() gives them as a PositionMap.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attention/mask.h"

namespace ringattn {

enum class Sharding : uint8_t { kContiguous = 0, kZigzag = 1, kStriped = 2, kBalanced = 3 };

const char* ShardingName(Sharding s);
absl::StatusOr<Sharding> ParseSharding(const std::string& name);

class Layout {
 public:
  // InvalidArgument for seqlen < 0, world < 1, stripe < 1. Only the
  // balanced sharding reads `mask`, and only its documents (cu_seqlens,
  // valid for seqlen, read during Create only).
  static absl::StatusOr<Layout> Create(Sharding kind, int64_t seqlen, int world,
                                       int64_t stripe = 1, const Mask& mask = Mask());
  // The balanced sharding's plan walks every position once.
  static constexpr int64_t kMaxBalancedSeqlen = int64_t{1} << 32;

  // The layout of groups of `group_size` consecutive ranks of `base`
  // (world base.world() / group_size, which must divide): group g holds
  // the union of its members' positions, in increasing order -- what a
  // hybrid strategy's ring rotates. Its kind is base's.
  static Layout Grouped(const Layout& base, int group_size);

  Sharding kind() const { return kind_; }
  int64_t seqlen() const { return seqlen_; }
  int world() const { return world_; }
  int64_t stripe() const { return stripe_; }

  int64_t ShardLength(int rank) const;
  int64_t MaxShardLength() const;
  PositionMap Shard(int rank) const;
  // Global positions of rank's rows, in local order.
  std::vector<int64_t> Positions(int rank) const;

  // Copies rows of a full tensor [B, S, ...inner] (row = `row_elems`
  // elements of `elem_size` bytes, batch-major) into rank's shard
  // [B, S_r, ...inner], and back.
  void ShardRows(const void* full, int rank, int64_t batch, int64_t row_bytes, void* shard) const;
  void GatherRows(const void* shard, int rank, int64_t batch, int64_t row_bytes, void* full) const;

 private:
  using Segments = std::vector<PositionMap::Segment>;
  Layout(Sharding kind, int64_t seqlen, int world, int64_t stripe)
      : kind_(kind), seqlen_(seqlen), world_(world), stripe_(stripe) {}
  // The balanced sharding's segments of each rank (shared by copies, so the
  // maps Shard() returns stay valid while any copy lives).
  static std::shared_ptr<const std::vector<Segments>> Balance(int64_t seqlen, int world,
                                                              const Mask& documents);
  // Length and start of chunk c of n equal-as-possible chunks of S.
  int64_t ChunkLength(int64_t c, int64_t n) const;
  int64_t ChunkStart(int64_t c, int64_t n) const;

  Sharding kind_;
  int64_t seqlen_;
  int world_;
  int64_t stripe_;
  // Explicit segments of each rank: the balanced sharding, grouped layouts.
  std::shared_ptr<const std::vector<Segments>> balanced_;
};

}  // namespace ringattn
