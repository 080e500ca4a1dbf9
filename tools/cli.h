// Small helpers shared by the command-line tools: flag value parsing and
// names for what they print.
#pragma once

#include <string>
#include <vector>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "attention/mask.h"
#include "base/status.h"

namespace ringattn::tools {

// Lets users write --head-dim for the flag head_dim: rewrites dashes in flag
// NAMES (never in values) to underscores, in place. Stops at "--".
inline void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (a[0] != '-' || a[1] != '-') continue;
    if (a[2] == '\0') break;
    for (char* p = a + 2; *p != '\0' && *p != '='; ++p)
      if (*p == '-') *p = '_';
  }
}

// "LEFT,RIGHT" with -1 = unbounded; "" = no window.
inline absl::StatusOr<std::pair<int64_t, int64_t>> ParseWindow(const std::string& s) {
  if (s.empty()) return std::make_pair<int64_t, int64_t>(-1, -1);
  std::vector<std::string> parts = absl::StrSplit(s, ',');
  int64_t l, r;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &l) || !absl::SimpleAtoi(parts[1], &r) ||
      l < -1 || r < -1) {
    return ArgError("--window", "LEFT,RIGHT with integers >= -1 (-1 = unbounded)", absl::StrCat("'", s, "'"));
  }
  return std::make_pair(l, r);
}

inline std::string MaskName(const Mask& m) {
  std::string s = m.causal ? "causal" : "";
  if (m.window_left >= 0 || m.window_right >= 0) {
    absl::StrAppend(&s, s.empty() ? "" : "+", "window(", m.window_left, ",", m.window_right, ")");
  }
  return s.empty() ? "none" : s;
}

}  // namespace ringattn::tools
