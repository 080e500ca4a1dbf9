// Mask::ToString (host only; mask.h holds the geometry).
#include "attention/mask.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ringattn {

std::string Mask::ToString() const {
  std::string s = causal ? "causal" : "";
  if (window_left >= 0 || window_right >= 0) {
    absl::StrAppend(&s, s.empty() ? "" : "+", "window(", window_left, ",", window_right, ")");
  }
  if (prefix > 0) absl::StrAppend(&s, s.empty() ? "" : "+", "prefix(", prefix, ")");
  if (sink > 0) absl::StrAppend(&s, s.empty() ? "" : "+", sink_part ? "sinkpart(" : "sink(", sink, ")");
  if (HasDocuments()) absl::StrAppend(&s, s.empty() ? "" : "+", "docs(", num_docs, ")");
  if (HasBlocks()) {
    int64_t on = 0;
    const int64_t n = block_heads * block_rows * block_cols;
    for (int64_t x = 0; x < n; ++x) on += blocks[x] != 0;
    absl::StrAppend(&s, s.empty() ? "" : "+", "blocks(", block_heads > 1 ? absl::StrCat(block_heads, "x") : "",
                    block_rows, "x", block_cols, "/", block_size, ", ",
                    absl::StrFormat("%.1f%% on", n > 0 ? 100.0 * on / n : 0.0), ")");
  }
  return s.empty() ? "none" : s;
}

}  // namespace ringattn
