// The mask flags of every CLI tool: see mask_flags.h.
#include "tools/mask_flags.h"

#include <cstdint>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"

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

namespace ringattn::tools {

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
