#include "tools/flags.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace ringattn::tools {
namespace {

// The words absl reads as a boolean value.
bool IsBooleanWord(absl::string_view w) {
  const std::string l = absl::AsciiStrToLower(w);
  for (const char* b : {"true", "false", "t", "f", "yes", "no", "y", "n", "1", "0"})
    if (l == b) return true;
  return false;
}

}  // namespace

std::vector<std::string> NormalizeArgs(const std::vector<std::string>& argv, bool* ranks_given,
                                       const std::function<bool(const std::string&)>& is_bool) {
  *ranks_given = false;
  std::vector<std::string> args;
  if (argv.empty()) return args;
  args.push_back(argv[0]);
  bool flags_ended = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    std::string a = argv[i];
    if (flags_ended || a.size() < 2 || a[0] != '-') {
      args.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_ended = true;
      args.push_back(a);
      continue;
    }
    const size_t start = a[1] == '-' ? 2 : 1;
    const size_t eq = a.find('=');
    for (size_t p = start; p < std::min(eq, a.size()); ++p)
      if (a[p] == '-') a[p] = '_';
    const std::string name = a.substr(start, eq == std::string::npos ? std::string::npos : eq - start);
    if (name == "ranks") *ranks_given = true;
    if (eq == std::string::npos && i + 1 < argv.size() && IsBooleanWord(argv[i + 1]) && is_bool(name)) {
      a = absl::StrCat(a, "=", argv[++i]);
    }
    args.push_back(std::move(a));
  }
  return args;
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv) {
  CommandLine line;
  line.typed.assign(argv, argv + argc);
  std::vector<std::string> args = NormalizeArgs(line.typed, &line.ranks_given, [](const std::string& name) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    return flag != nullptr && flag->IsOfType<bool>();
  });
  if (args.empty()) args.push_back("tool");
  std::vector<char*> ptrs;
  for (std::string& a : args) ptrs.push_back(a.data());
  const std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(ptrs.size()), ptrs.data());
  if (rest.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", rest[1],
        "': the tool takes flags only (--name=value; a boolean as --name=false or --noname)"));
  }
  return line;
}

absl::Status CheckRange(absl::string_view flag, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return ArgError(flag, absl::StrCat("in [", lo, ", ", hi, "]"), value);
}

absl::Status CheckRealRange(absl::string_view flag, double value, double lo, double hi) {
  if (std::isfinite(value) && value >= lo && value <= hi) return absl::OkStatus();
  return ArgError(flag, absl::StrCat("a finite number in [", lo, ", ", hi, "]"), value);
}

absl::Status CheckThreadsPerProcess(int ranks, int threads) {
  if (static_cast<int64_t>(ranks) * threads <= kMaxThreadsPerProcess) return absl::OkStatus();
  return ArgError("--ranks x --threads",
                  absl::StrCat("at most ", kMaxThreadsPerProcess, " threads in one process"),
                  absl::StrCat(ranks, " x ", threads));
}

int64_t MemoryAvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : INT64_MAX;
}

absl::Status CheckFitsInMemory(absl::string_view what, double bytes) {
  const int64_t available = MemoryAvailableBytes();
  if (bytes <= static_cast<double>(available)) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(what, " needs about ", HumanBytes(bytes),
                                                   " of memory; this machine has ",
                                                   HumanBytes(static_cast<double>(available)),
                                                   " available"));
}

std::string HumanBytes(double b) {
  static const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (std::abs(b) >= 1024 && u < 6) {
    b /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", b, unit[u]);
}

}  // namespace ringattn::tools
