// The report of ringattn-eval: everything a run measured (EvalData) and the
// writer of report.md, report.json and the SVG figures. Files are written
// to a temporary name and renamed, so a failed write leaves no half file.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/eval/eval.h"
#include "tools/eval/json.h"

namespace ringattn::eval {

inline constexpr const char* kMaskKinds[4] = {"none", "causal", "window", "causal+window"};

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
