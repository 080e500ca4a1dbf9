// The mask flags, declared once for every CLI tool (ringattn-bench,
// ringattn-run, ringattn-eval): --causal, --window LEFT,RIGHT (flash-attn
// semantics, -1 = unbounded) and --mask prefix-lm:P | sink:N. Packed
// documents come from each tool's own source (ringattn-run --cu-seqlens
// FILE, ringattn-bench --docs) and are attached with Mask::WithDocuments.
// mask_flags.cc is compiled into each tool (tools/CMakeLists.txt,
// ringattn_mask_flags) because the tools differ in one default: the bench
// and the eval measure causal attention unless told otherwise, ringattn-run
// computes exactly what it is asked. A new kind of mask gets its flag here
// and its place in MaskFromFlags, and every tool has it. Block masks
// (--block-mask, --block-size) own their bits, so they come as a
// BlockMaskFlags value that the tool keeps alive and applies to its mask.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "attention/mask.h"

ABSL_DECLARE_FLAG(bool, causal);
ABSL_DECLARE_FLAG(std::string, window);
ABSL_DECLARE_FLAG(std::string, mask);
ABSL_DECLARE_FLAG(std::string, block_mask);
ABSL_DECLARE_FLAG(int64_t, block_size);

namespace ringattn::tools {

// The mask the flags describe; a bad value is an InvalidArgument naming
// the flag.
absl::StatusOr<Mask> MaskFromFlags();

// The block mask of --block-mask and --block-size for `seqlen` tokens and
// `heads` query heads, holding its bits (views of it live as long as it).
struct BlockMaskFlags {
  std::string spec;  // the flag's value ("" = none)
  std::vector<uint8_t> bits;
  int64_t heads = 0, rows = 0, cols = 0, size = 0;
  // `m` ANDed with this block mask (m itself when there is none).
  Mask Apply(const Mask& m) const {
    return bits.empty() ? m : m.WithBlocks(bits.data(), heads, rows, cols, size);
  }
  // The share of block pairs that are on (1 without a block mask).
  double Density() const;
};
// --block-mask is FILE.npy (bool or uint8, [nQ, nK] or [heads, nQ, nK] with
// nQ = nK = ceil(seqlen / block_size)), random:DENSITY[:SEED] (each block
// pair on with probability DENSITY, seeded) or diagonal (each block sees
// itself). A bad value is an InvalidArgument naming the flag.
absl::StatusOr<BlockMaskFlags> BlockMaskFromFlags(int64_t seqlen, int64_t heads);

// Whether --window was given (the eval picks its own windows otherwise).
bool WindowFlagGiven();

}  // namespace ringattn::tools
