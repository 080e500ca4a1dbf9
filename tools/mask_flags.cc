// The mask flags of every CLI tool: see mask_flags.h.
#include "tools/mask_flags.h"

#include <cstdint>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "tools/npy.h"

#ifndef RINGATTN_CAUSAL_DEFAULT
#error "RINGATTN_CAUSAL_DEFAULT: the tool's --causal default (tools/CMakeLists.txt)"
#endif

ABSL_FLAG(bool, causal, RINGATTN_CAUSAL_DEFAULT,
          "causal mask: a query sees no later key (--nocausal turns it off)");
ABSL_FLAG(std::string, window, "",
          "sliding window LEFT,RIGHT by global position: a query at i sees keys i-LEFT..i+RIGHT "
          "(-1 = unbounded; with --causal, RIGHT is capped at 0), e.g. 4096,0");

ABSL_FLAG(std::string, mask, "none",
          "a named mask: none | prefix-lm:P (causal, the first P tokens see each other "
          "bidirectionally) | sink:N (the first N tokens stay visible to every query up to its "
          "right edge: StreamingLLM's sinks, with --window LEFT,0 or --causal --window LEFT,-1)");

ABSL_FLAG(std::string, block_mask, "",
          "(--block-mask) a block-sparse mask ANDed with the others: FILE.npy (bool or uint8, "
          "[nQ, nK] or [H, nQ, nK], n = ceil(S / block size)) | random:DENSITY[:SEED] (each "
          "block pair on with probability DENSITY) | diagonal (each block sees itself)");
ABSL_FLAG(int64_t, block_size, 128, "(--block-size) tokens per block of --block-mask");

namespace ringattn::tools {

double BlockMaskFlags::Density() const {
  if (bits.empty()) return 1.0;
  int64_t on = 0;
  for (uint8_t b : bits) on += b != 0;
  return static_cast<double>(on) / static_cast<double>(bits.size());
}

absl::StatusOr<BlockMaskFlags> BlockMaskFromFlags(int64_t seqlen, int64_t heads) {
  BlockMaskFlags f;
  f.spec = absl::GetFlag(FLAGS_block_mask);
  if (f.spec.empty()) return f;
  f.size = absl::GetFlag(FLAGS_block_size);
  if (f.size < 1) return ArgError("--block-size", ">= 1", f.size);
  const int64_t n = seqlen / f.size + (seqlen % f.size != 0);
  f.rows = f.cols = n;
  f.heads = 1;
  if (absl::StartsWith(f.spec, "random:")) {
    std::vector<std::string> parts = absl::StrSplit(f.spec.substr(7), ':');
    double density = -1;
    uint64_t seed = 2026;
    if (parts.size() > 2 || !absl::SimpleAtod(parts[0], &density) || !(density >= 0) ||
        density > 1 || (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &seed))) {
      return ArgError("--block-mask", "random:DENSITY[:SEED] with DENSITY in [0, 1]",
                      absl::StrCat("'", f.spec, "'"));
    }
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution on(density);
    f.bits.resize(n * n);
    for (uint8_t& b : f.bits) b = on(rng);
  } else if (f.spec == "diagonal") {
    f.bits.assign(n * n, 0);
    for (int64_t b = 0; b < n; ++b) f.bits[b * n + b] = 1;
  } else if (absl::EndsWith(f.spec, ".npy")) {
    absl::StatusOr<NpyByteArray> a = ReadNpyBytes(f.spec);
    if (!a.ok()) return absl::Status(a.status().code(), absl::StrCat("--block-mask ", a.status().message()));
    const std::vector<int64_t>& sh = a->shape;
    const bool ok = (sh.size() == 2 || sh.size() == 3) && sh[sh.size() - 2] == n &&
                    sh[sh.size() - 1] == n && (sh.size() == 2 || sh[0] == heads);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--block-mask ", f.spec, ": expected shape (", n, ", ", n, ") or (", heads, ", ", n,
          ", ", n, ") for ", seqlen, " tokens in blocks of --block-size ", f.size,
          " and ", heads, " heads, got ", ShapeToString(sh)));
    }
    f.heads = sh.size() == 3 ? sh[0] : 1;
    f.bits = std::move(a->data);
  } else {
    return ArgError("--block-mask", "FILE.npy, random:DENSITY[:SEED] or diagonal",
                    absl::StrCat("'", f.spec, "'"));
  }
  return f;
}

absl::StatusOr<Mask> MaskFromFlags() {
  Mask m;
  m.causal = absl::GetFlag(FLAGS_causal);
  const std::string named = absl::GetFlag(FLAGS_mask);
  if (absl::StartsWith(named, "prefix-lm:")) {
    if (!absl::SimpleAtoi(named.substr(10), &m.prefix) || m.prefix < 1) {
      return ArgError("--mask", "prefix-lm:P with an integer P >= 1", absl::StrCat("'", named, "'"));
    }
    m.causal = true;
  } else if (absl::StartsWith(named, "sink:")) {
    if (!absl::SimpleAtoi(named.substr(5), &m.sink) || m.sink < 1) {
      return ArgError("--mask", "sink:N with an integer N >= 1", absl::StrCat("'", named, "'"));
    }
  } else if (named != "none") {
    return ArgError("--mask", "none, prefix-lm:P or sink:N", absl::StrCat("'", named, "'"));
  }
  const std::string w = absl::GetFlag(FLAGS_window);
  if (w.empty()) return m;
  std::vector<std::string> parts = absl::StrSplit(w, ',');
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &m.window_left) ||
      !absl::SimpleAtoi(parts[1], &m.window_right) || m.window_left < -1 ||
      m.window_right < -1) {
    return ArgError("--window", "LEFT,RIGHT with integers >= -1 (-1 = unbounded)",
                    absl::StrCat("'", w, "'"));
  }
  return m;
}

bool WindowFlagGiven() { return !absl::GetFlag(FLAGS_window).empty(); }

}  // namespace ringattn::tools
