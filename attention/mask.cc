// Mask::ToString (host only; mask.h holds the geometry).
#include "attention/mask.h"

#include "absl/strings/str_cat.h"

namespace ringattn {

std::string Mask::ToString() const {
  std::string s = causal ? "causal" : "";
  if (window_left >= 0 || window_right >= 0) {
    absl::StrAppend(&s, s.empty() ? "" : "+", "window(", window_left, ",", window_right, ")");
  }
  if (prefix > 0) absl::StrAppend(&s, s.empty() ? "" : "+", "prefix(", prefix, ")");
  if (sink > 0) absl::StrAppend(&s, s.empty() ? "" : "+", sink_part ? "sinkpart(" : "sink(", sink, ")");
  if (HasDocuments()) absl::StrAppend(&s, s.empty() ? "" : "+", "docs(", num_docs, ")");
  return s.empty() ? "none" : s;
}

}  // namespace ringattn
