// libFuzzer target: the text users and launchers hand to ringattn. Lines of
// the input become, in turn: a command line for the tools' argument
// rewrite (tools/flags.h), the mask flags (--causal, --window), the
// sharding, dtype and strategy names, RINGATTN_TIMEOUT_MS, and the
// launchers' rank variables (comm/launch.h). Each must parse or refuse with
// an error, never crash.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "comm/communicator.h"
#include "comm/launch.h"
#include "runtime/layout.h"
#include "runtime/ringattn.h"
#include "tools/flags.h"
#include "tools/mask_flags.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  lines.resize(std::max<size_t>(lines.size(), 8));
  for (std::string& l : lines) l.erase(std::find(l.begin(), l.end(), '\0'), l.end());

  std::vector<std::string> argv = absl::StrSplit(lines[0], ' ');
  argv.insert(argv.begin(), "tool");
  bool ranks_given = false;
  const auto args = ringattn::tools::NormalizeArgs(
      argv, &ranks_given, [](const std::string& name) { return name == "causal"; });
  if (args.size() > argv.size()) __builtin_trap();  // joining never adds an argument

  absl::SetFlag(&FLAGS_window, lines[1]);
  absl::SetFlag(&FLAGS_causal, !lines[2].empty());
  auto mask = ringattn::tools::MaskFromFlags();
  if (mask.ok() && (mask->window_left < -1 || mask->window_right < -1)) __builtin_trap();

  (void)ringattn::ParseSharding(lines[3]);
  ringattn::DType t;
  (void)ringattn::ParseDType(lines[4], &t);
  (void)ringattn::ParseStrategy(lines[5]);

  setenv("RINGATTN_TIMEOUT_MS", lines[6].c_str(), 1);
  auto timeout = ringattn::comm::DefaultTimeout();
  if (timeout.ok() && *timeout <= absl::ZeroDuration()) __builtin_trap();
  unsetenv("RINGATTN_TIMEOUT_MS");

  std::vector<std::string> launch = absl::StrSplit(lines[7], ' ');
  launch.resize(3);
  setenv("OMPI_COMM_WORLD_RANK", launch[0].c_str(), 1);
  setenv("OMPI_COMM_WORLD_SIZE", launch[1].c_str(), 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", launch[2].c_str(), 1);
  auto info = ringattn::comm::DetectLaunch();
  if (info.ok() && info->launched && (info->rank < 0 || info->rank >= info->size)) __builtin_trap();
  unsetenv("OMPI_COMM_WORLD_RANK");
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return 0;
}
