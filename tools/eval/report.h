// The report of ringattn-eval: everything a run measured (EvalData) and the
// writer of report.md, report.json and the SVG figures. Files are written
// to a temporary name and renamed, so a failed write leaves no half file.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tools/eval/eval.h"

namespace ringattn::eval {

// report.json's value (and that of the messages the ranks exchange): objects
// keep their insertion order, so that two reports diff line by line.
using Json = nlohmann::ordered_json;

// `j` as text, two-space indented, ending in a newline. Integers stay
// integers, doubles take the shortest form that reads back bitwise, NaN and
// +-Inf become null (JSON has neither), and bytes that are not UTF-8 become
// U+FFFD (a path in an error message) instead of an exception.
std::string DumpJson(const Json& j);
// Parses JSON (RFC 8259); malformed text is InvalidArgument, not an exception.
absl::StatusOr<Json> ParseJson(absl::string_view text);

// The masks every check runs: the four window kinds, causal attention over
// packed documents of mixed lengths (Runner::MaskFor), StreamingLLM's sinks
// with a causal window, prefix-LM, and causal attention under a random
// block-sparse mask (16 x 16 blocks, half on).
inline constexpr int kNumMaskKinds = 8;
inline constexpr const char* kMaskKinds[kNumMaskKinds] = {
    "none",        "causal",      "window",    "causal+window",
    "causal+docs", "sink+window", "prefix-lm", "causal+blocks"};

struct EvalData {
  EvalOptions options;
  Json environment;   // machine, build
  Json plan;          // sizes chosen, budget, estimates
  int main_kind = 1;  // index into kMaskKinds
  Sharding main_sharding = Sharding::kZigzag;
  DType main_dtype = DType::kFloat32;
  Mask main_mask;           // at the longest length
  std::vector<int> worlds;  // W of the sweep and the cost check
  std::string sweep_note;   // why there is no sweep over W (empty: there is)
  int64_t matrix_seq = 0;
  int sample_rows = 0;
  std::vector<ExactRun> exact;
  std::vector<Growth> growth;
  std::vector<double> depths;
  std::vector<int64_t> needle_seqs;
  std::vector<NeedleConfig> needles;
  CostResult cost;
  std::vector<Verdict> verdicts;
  double wall_seconds = 0;
  double phase_seconds[3] = {0, 0, 0};  // exactness, reachability, cost
};

// Writes report.md, report.json and the figures; returns the file names.
absl::StatusOr<std::vector<std::string>> WriteReport(const EvalData& d, const std::string& dir);

// Writes `text` to dir/name atomically (temporary file, then rename).
absl::Status WriteFileAtomic(const std::string& dir, const std::string& name,
                             const std::string& text);

}  // namespace ringattn::eval
