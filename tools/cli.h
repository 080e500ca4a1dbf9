// Small helpers shared by the command-line tools (the mask flags are in
// mask_flags.h).
#pragma once

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

}  // namespace ringattn::tools
