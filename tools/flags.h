// The command line of every CLI tool, parsed and checked one way:
//   - flag names may use dashes (--head-dim for the flag head_dim);
//   - a boolean flag takes its value as --causal=false, --nocausal, or the
//     next word: --causal false (absl alone would read `--causal` as true and
//     drop "false" as a positional argument);
//   - the tools take no positional arguments: one is an error naming it;
//   - numbers are checked against stated ranges (CheckRange), and a run's
//     memory against the machine's before anything is allocated
//     (CheckFitsInMemory).
// Errors are InvalidArgument (ResourceExhausted for memory) naming the flag.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ringattn::tools {

// The stated ranges that several tools share.
inline constexpr int kMaxRanks = 4096;    // --ranks
inline constexpr int64_t kMaxThreadsPerProcess = 16384;  // ranks x threads, local ranks

struct CommandLine {
  std::vector<std::string> typed;  // argv as the user typed it (for reports)
  bool ranks_given = false;        // --ranks was set (MakeWorld)
};

// The arguments as absl is to see them: flag names with underscores, a
// boolean flag (is_bool(name)) joined with a following true/false word;
// sets *ranks_given when --ranks is there. Pure: no flag is touched.
std::vector<std::string> NormalizeArgs(const std::vector<std::string>& argv, bool* ranks_given,
                                       const std::function<bool(const std::string&)>& is_bool);

// Parses argv into the absl flags as described above. Unknown flags and
// values that do not parse make absl print its own message and exit(1).
absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv);

// InvalidArgument "FLAG: expected in [lo, hi], got VALUE" unless lo <= value <= hi.
absl::Status CheckRange(absl::string_view flag, int64_t value, int64_t lo, int64_t hi);
// The same for a real number, which must also be finite.
absl::Status CheckRealRange(absl::string_view flag, double value, double lo, double hi);

// InvalidArgument naming --ranks and --threads when `ranks` local ranks of
// `threads` threads each exceed kMaxThreadsPerProcess.
absl::Status CheckThreadsPerProcess(int ranks, int threads);

// Bytes this process may still allocate: MemAvailable of /proc/meminfo, else
// the physical memory.
int64_t MemoryAvailableBytes();

// ResourceExhausted naming `what` and both sizes when `bytes` exceeds
// MemoryAvailableBytes().
absl::Status CheckFitsInMemory(absl::string_view what, double bytes);

// "1.5 GiB": bytes for people.
std::string HumanBytes(double bytes);

}  // namespace ringattn::tools
