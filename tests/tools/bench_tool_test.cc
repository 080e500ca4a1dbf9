// ringattn-bench --json on a tiny problem: the file parses, holds the keys
// in their order with their JSON types (README, "Tools"), and says null for
// what a run did not measure (no backward, no 1-rank comparison, one rank).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/tools/tool_exec.h"

namespace ringattn::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

enum class Kind { kInteger, kNumber, kString, kBool, kNumberOrNull, kObjectOrNull, kStringOrNull };

struct Key {
  const char* name;
  Kind kind;
};

// Every key but single_rank_all_cores_fwd_gflops (only where the 1-rank
// runs differ in threads) and sweep (only in a sweep's points), in the
// order written.
constexpr Key kKeys[] = {
    {"seq_len", Kind::kInteger},
    {"batch", Kind::kInteger},
    {"heads", Kind::kInteger},
    {"kv_heads", Kind::kInteger},
    {"head_dim", Kind::kInteger},
    {"dtype", Kind::kString},
    {"backend", Kind::kString},
    {"backend_description", Kind::kString},
    {"cpu_isa", Kind::kStringOrNull},
    {"comm", Kind::kString},
    {"deterministic", Kind::kBool},
    {"ranks", Kind::kInteger},
    {"threads_per_rank", Kind::kInteger},
    {"sharding", Kind::kString},
    {"causal", Kind::kBool},
    {"window_left", Kind::kInteger},
    {"window_right", Kind::kInteger},
    {"mask", Kind::kString},
    {"documents", Kind::kInteger},
    {"block_mask", Kind::kString},
    {"block_size", Kind::kInteger},
    {"block_density", Kind::kNumber},
    {"work_imbalance", Kind::kNumber},
    {"zigzag_work_imbalance", Kind::kNumber},
    {"fwd_ms", Kind::kNumber},
    {"bwd_ms", Kind::kNumberOrNull},
    {"fwd_gflops", Kind::kNumber},
    {"bwd_gflops", Kind::kNumberOrNull},
    {"fwd_gflops_per_rank", Kind::kNumber},
    {"overlap_efficiency", Kind::kNumber},
    {"bwd_overlap_efficiency", Kind::kNumberOrNull},
    {"speedup_vs_1_rank", Kind::kNumberOrNull},
    {"bwd_speedup_vs_1_rank", Kind::kNumberOrNull},
    {"ring_steps", Kind::kInteger},
    {"fwd_bytes_sent_per_rank", Kind::kInteger},
    {"bwd_bytes_sent_per_rank", Kind::kInteger},
    {"link_gbps", Kind::kNumber},
    {"link_one_way_gbps", Kind::kNumberOrNull},
    {"gemm_ceiling_gflops", Kind::kNumberOrNull},
    {"fwd_fraction_of_ceiling", Kind::kNumberOrNull},
    {"bwd_fraction_of_ceiling", Kind::kNumberOrNull},
    {"rank_memory_bytes", Kind::kInteger},
    {"peak_rss_bytes", Kind::kInteger},
    {"strategy", Kind::kString},
    {"plan", Kind::kObjectOrNull},
};

bool HasKind(const Json& v, Kind k) {
  switch (k) {
    case Kind::kInteger:
      return v.is_number_integer();
    case Kind::kNumber:
      return v.is_number();
    case Kind::kString:
      return v.is_string();
    case Kind::kBool:
      return v.is_boolean();
    case Kind::kNumberOrNull:
      return v.is_number() || v.is_null();
    case Kind::kObjectOrNull:
      return v.is_object() || v.is_null();
    case Kind::kStringOrNull:
      return v.is_string() || v.is_null();
  }
  return false;
}

class BenchJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::temp_directory_path() / absl::StrCat("ringattn_bench_test_", getpid(), "_",
                                                     ::testing::UnitTest::GetInstance()
                                                         ->current_test_info()
                                                         ->name(),
                                                     ".json");
  }
  void TearDown() override { fs::remove(path_); }

  // Runs the bench with `args` on a tiny problem (its environment prefixed
  // with `env`, VAR=VALUE ...); the parsed --json file.
  Json Run(const std::string& args, const std::string& env = "") {
    const Exec e = RunCommand(absl::StrCat(env, " ", RINGATTN_BENCH_BINARY,
                                           " --seq 256 --heads 2 --head-dim 32 --iters 1"
                                           " --warmup 0 --json ",
                                           path_.string(), " ", args));
    EXPECT_EQ(e.code, 0) << e.output;
    std::ifstream f(path_);
    std::stringstream ss;
    ss << f.rdbuf();
    const Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << ss.str();
    return j;
  }

  // Every key of kKeys in order with its kind, and nothing unknown.
  static void ExpectKeysAndKinds(const Json& j) {
    ASSERT_TRUE(j.is_object());
    std::vector<std::string> want, got;
    for (const Key& k : kKeys) {
      want.push_back(k.name);
      ASSERT_TRUE(j.contains(k.name)) << k.name;
      EXPECT_TRUE(HasKind(j[k.name], k.kind)) << k.name << " = " << j[k.name];
    }
    for (const auto& [name, value] : j.items()) {
      if (name != "single_rank_all_cores_fwd_gflops" && name != "sweep") got.push_back(name);
    }
    EXPECT_EQ(got, want);
  }

  fs::path path_;
};

TEST_F(BenchJsonTest, RingWithBackwardAndComparisonFillsEveryKey) {
  const Json j = Run("--ranks 2 --sharding striped");
  ExpectKeysAndKinds(j);
  EXPECT_EQ(j["seq_len"], 256);
  EXPECT_EQ(j["heads"], 2);
  EXPECT_EQ(j["head_dim"], 32);
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["sharding"], "striped");
  EXPECT_EQ(j["causal"], true);
  EXPECT_EQ(j["window_left"], -1);
  EXPECT_EQ(j["dtype"], "fp32");
  EXPECT_EQ(j["backend"], "cpu");
  // The CPU tiles' instruction set, as RINGATTN_CPU_ISA chose it.
  EXPECT_TRUE(j["cpu_isa"] == "avx512" || j["cpu_isa"] == "avx2" || j["cpu_isa"] == "scalar")
      << j["cpu_isa"];
  EXPECT_EQ(j["comm"], "local");
  for (const char* k : {"fwd_ms", "bwd_ms", "fwd_gflops", "bwd_gflops", "speedup_vs_1_rank",
                        "bwd_speedup_vs_1_rank", "link_one_way_gbps"}) {
    ASSERT_TRUE(j[k].is_number()) << k;
    EXPECT_GT(j[k].get<double>(), 0) << k;
  }
  EXPECT_GT(j["fwd_bytes_sent_per_rank"], 0);
  EXPECT_GT(j["peak_rss_bytes"], 0);
  // The GEMM ceiling, measured in the same run, and the ring's share of it.
  EXPECT_GT(j["gemm_ceiling_gflops"].get<double>(), 0);
  EXPECT_NEAR(j["fwd_fraction_of_ceiling"].get<double>(),
              j["fwd_gflops"].get<double>() / j["gemm_ceiling_gflops"].get<double>(), 1e-9);
  if (j.contains("single_rank_all_cores_fwd_gflops")) {
    EXPECT_TRUE(j["single_rank_all_cores_fwd_gflops"].is_number());
  }
}

// The gate keeps its CPU baselines per instruction set: the JSON names the
// one RINGATTN_CPU_ISA picked.
TEST_F(BenchJsonTest, NamesTheCpuInstructionSet) {
  EXPECT_EQ(Run("--ranks 2", "RINGATTN_CPU_ISA=scalar")["cpu_isa"], "scalar");
  EXPECT_EQ(Run("--ranks 2", "RINGATTN_CPU_ISA=avx2")["cpu_isa"], "avx2");
}

TEST_F(BenchJsonTest, WhatARunDidNotMeasureIsNull) {
  const Json j = Run("--ranks 1 --backward=false --compare=false");
  ExpectKeysAndKinds(j);
  EXPECT_EQ(j["ranks"], 1);
  for (const char* k : {"bwd_ms", "bwd_gflops", "bwd_overlap_efficiency", "speedup_vs_1_rank",
                        "bwd_speedup_vs_1_rank", "link_one_way_gbps"}) {
    EXPECT_TRUE(j[k].is_null()) << k << " = " << j[k];
  }
  EXPECT_FALSE(j.contains("single_rank_all_cores_fwd_gflops"));
  EXPECT_TRUE(j["fwd_ms"].is_number());
}

// Packed documents: explicit lengths and the long-tailed generator, with the
// balanced sharding; the documents and both imbalances are reported, and
// the FLOPs count only the visible pairs (VisiblePairs, ring_test).
TEST_F(BenchJsonTest, PackedDocumentsReportTheirBalance) {
  Json j = Run("--ranks 2 --sharding balanced --docs 10,0,100,46,100 --compare=false");
  ExpectKeysAndKinds(j);
  EXPECT_EQ(j["documents"], 5);
  EXPECT_EQ(j["mask"], "causal+docs(5)");
  EXPECT_LE(j["work_imbalance"].get<double>(), j["zigzag_work_imbalance"].get<double>());
  j = Run("--ranks 4 --sharding balanced --docs longtail:16:7 --compare=false --backward=false");
  EXPECT_GT(j["documents"].get<int64_t>(), 4);
  EXPECT_LE(j["work_imbalance"].get<double>(), 1.5);
}

// A block mask: its spec, size and density are reported, and the FLOPs
// count only the pairs it lets through (a tenth of the blocks on: about a
// tenth of the causal pairs).
TEST_F(BenchJsonTest, BlockMasksReportTheirDensity) {
  const Json dense = Run("--ranks 2 --compare=false --backward=false");
  const Json j = Run("--ranks 2 --compare=false --block-size 16 --block-mask random:0.1:3");
  ExpectKeysAndKinds(j);
  EXPECT_EQ(j["block_mask"], "random:0.1:3");
  EXPECT_EQ(j["block_size"], 16);
  EXPECT_NEAR(j["block_density"].get<double>(), 0.1, 0.05);
  const double ratio = j["fwd_gflops"].get<double>() * j["fwd_ms"].get<double>() /
                       (dense["fwd_gflops"].get<double>() * dense["fwd_ms"].get<double>());
  EXPECT_GT(ratio, 0.03) << "FLOPs of the visible pairs";
  EXPECT_LT(ratio, 0.2);
}

std::string ReadText(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A sweep: the cartesian product of the axes (the last fastest), one JSON
// array of the single-run objects (each with its swept values), a CSV row
// per point, the SVG charts, and no progress bar in redirected output.
// --strategy runs any strategy; --plan prints every strategy's prediction
// with the choice and sets the measured beside the predicted; --simulate
// predicts without running; bad strategies are refused naming the flag.
TEST_F(BenchJsonTest, StrategiesPlanAndSimulate) {
  Json j = Run("--ranks 4 --heads 4 --kv-heads 2 --strategy hybrid:2x2 --plan --causal");
  ExpectKeysAndKinds(j);
  EXPECT_EQ(j["strategy"], "hybrid:2x2");
  ASSERT_TRUE(j["plan"].is_object()) << j;
  EXPECT_TRUE(j["plan"]["choice"].is_string());
  std::vector<std::string> names;
  for (const Json& e : j["plan"]["entries"]) names.push_back(e["strategy"]);
  EXPECT_EQ(names, (std::vector<std::string>{"ring", "allgather", "hybrid:2x2", "ulysses"}));
  EXPECT_GT(j["plan"]["measured_fwd_ms"].get<double>(), 0);
  EXPECT_GT(j["plan"]["predicted_fwd_ms"].get<double>(), 0);
  j = Run("--ranks 2 --strategy allgather --backward=false");
  EXPECT_EQ(j["strategy"], "allgather");
  EXPECT_TRUE(j["plan"].is_null());
  const Exec sim = RunCommand(absl::StrCat(
      RINGATTN_BENCH_BINARY,
      " --simulate --devices 64 --seq 1048576 --heads 32 --kv-heads 8 --head-dim 128 --causal"
      " --dtype bf16 --tflops 400 --link-gbps 25 --node-size 8 --node-gbps 300"));
  ASSERT_EQ(sim.code, 0) << sim.output;
  for (const char* want : {"predicted, nothing run", "ring", "allgather", "hybrid:8x8",
                           "ulysses        cannot run: H = 32 < U = 64", "<- choice"}) {
    EXPECT_TRUE(absl::StrContains(sim.output, want)) << want << "\n" << sim.output;
  }
  for (const char* bad : {"--ranks 4 --strategy hybrid:3x2", "--ranks 2 --strategy fastest",
                          "--ranks 4 --heads 2 --strategy ulysses", "--simulate --tflops 1",
                          "--ranks 2 --strategy local"}) {
    const Exec e = RunCommand(absl::StrCat(RINGATTN_BENCH_BINARY, " --seq 256 ", bad));
    EXPECT_NE(e.code, 0) << bad;
    EXPECT_TRUE(absl::StrContains(e.output, "--")) << e.output;
  }
}

TEST_F(BenchJsonTest, SweepWritesAnArrayACsvAndCharts) {
  const fs::path csv = fs::path(path_).replace_extension(".csv");
  const fs::path plots = fs::path(path_).replace_extension(".plots");
  const Exec e = RunCommand(absl::StrCat(
      RINGATTN_BENCH_BINARY, " --heads 2 --head-dim 32 --iters 1 --warmup 0 --backward=false",
      " --sweep seq=128,256 --sweep ranks=1,2 --json ", path_.string(), " --csv ", csv.string(),
      " --plot ", plots.string()));
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("== sweep point 3 of 4: seq=256 ranks=1"), std::string::npos) << e.output;
  EXPECT_EQ(e.output.find("ETA"), std::string::npos) << "progress in redirected output";
  EXPECT_EQ(e.output.find('\r'), std::string::npos) << "progress in redirected output";
  const Json j = Json::parse(ReadText(path_), nullptr, false);
  ASSERT_TRUE(j.is_array()) << j;
  ASSERT_EQ(j.size(), 4u);
  const int64_t seq[] = {128, 128, 256, 256}, ranks[] = {1, 2, 1, 2};
  for (int i = 0; i < 4; ++i) {
    ExpectKeysAndKinds(j[i]);
    EXPECT_EQ(j[i]["seq_len"], seq[i]);
    EXPECT_EQ(j[i]["ranks"], ranks[i]);
    EXPECT_EQ(j[i]["sweep"]["seq"], std::to_string(seq[i]));
    EXPECT_EQ(j[i]["sweep"]["ranks"], std::to_string(ranks[i]));
  }
  const std::string text = ReadText(csv);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 5) << text;
  EXPECT_EQ(text.rfind("seq_len,batch,heads,", 0), 0u) << text;
  EXPECT_NE(text.find("\n256,1,2,2,32,\"fp32\""), std::string::npos) << text;
  for (const char* chart : {"gflops_vs_seq.svg", "ceiling_fraction_vs_seq.svg",
                            "speedup_vs_ranks.svg", "overlap_vs_seq.svg"}) {
    const std::string svg = ReadText(plots / chart);
    EXPECT_EQ(svg.rfind("<?xml", 0), 0u) << chart;
    EXPECT_NE(svg.find("</svg>"), std::string::npos) << chart;
    EXPECT_NE(svg.find("<polyline"), std::string::npos) << chart << ": no line drawn";
  }
  fs::remove(csv);
  fs::remove_all(plots);
}

// Google Benchmark's JSON: what its tools/compare.py reads.
TEST_F(BenchJsonTest, GoogleBenchmarkFormat) {
  const Json j = Run("--ranks 2 --compare=false --json-format gbench");
  ASSERT_TRUE(j.contains("context")) << j;
  EXPECT_TRUE(j["context"]["num_cpus"].is_number_integer());
  const Json& b = j["benchmarks"];
  ASSERT_EQ(b.size(), 2u) << j;
  EXPECT_EQ(b[0]["name"], "ringattn/fwd/seq:256/ranks:2");
  EXPECT_EQ(b[1]["name"], "ringattn/bwd/seq:256/ranks:2");
  for (const Json& x : b) {
    EXPECT_EQ(x["run_type"], "iteration");
    EXPECT_EQ(x["time_unit"], "ms");
    EXPECT_GT(x["real_time"].get<double>(), 0);
    EXPECT_GT(x["GFLOP/s"].get<double>(), 0);
  }
}

TEST(BenchFlags, BadSweepsAreRefusedNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--sweep seq", "--sweep seq: expected FLAG=V1,V2,..."},
      {"--sweep", "--sweep: expected FLAG=V1,V2,..."},
      {"--sweep nosuch=1,2", "--sweep nosuch=1,2: no flag --nosuch"},
      {"--sweep seq=64,x", "--sweep seq=64,x: --seq x:"},
      {"--sweep seq=64,", "--sweep seq=64,: an empty value"},
      {"--sweep seq=64 --sweep seq=128", "--sweep: --seq swept twice"},
      {"--sweep json=a.json", "--sweep json=a.json: --json is one per run, not an axis"},
      {"--plot /tmp", "--plot: charts are of a sweep"},
      {"--json-format xml", "--json-format: expected ringattn or gbench, got xml"}};
  for (const auto& [args, message] : cases) {
    const Exec e = RunCommand(absl::StrCat("timeout 60 ", RINGATTN_BENCH_BINARY, " ", args));
    EXPECT_EQ(e.code, 2) << args << ": " << e.output;
    EXPECT_NE(e.output.find(message), std::string::npos) << args << ": " << e.output;
    EXPECT_EQ(e.output.find("ringattn-bench: S="), std::string::npos) << args << ": it ran";
  }
  // A point that is refused stops the sweep, naming the point.
  const Exec e = RunCommand(absl::StrCat("timeout 60 ", RINGATTN_BENCH_BINARY,
                                         " --seq 64 --iters 1 --warmup 0 --sweep heads=1,-1"));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find("sweep point heads=-1: --heads: expected in [1, 4096], got -1"),
            std::string::npos)
      << e.output;
}

TEST(BenchFlags, BadDocumentsAreRefusedNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--seq 100 --docs 10,20", "--docs: expected lengths summing to --seq 100, got lengths summing to 30"},
      {"--seq 100 --docs 10,x", "--docs: expected lengths >= 0 summing to --seq 100"},
      {"--seq 100 --docs 90,20", "--docs: expected lengths >= 0 summing to --seq 100"},
      {"--seq 100 --docs longtail:0", "--docs: expected longtail:MEAN[:SEED] with MEAN >= 1"},
      {"--seq 100 --mask prefix-lm:200", "mask.prefix: expected in [0, seqlen = 100], got 200"},
      {"--seq 100 --sharding diagonal", "sharding: expected contiguous, zigzag, striped or balanced"},
      {"--seq 100 --block-mask random:x", "--block-mask: expected random:DENSITY[:SEED]"},
      {"--seq 100 --block-mask diagonal --block-size -4", "--block-size: expected >= 1, got -4"}};
  for (const auto& [args, message] : cases) {
    const Exec e = RunCommand(absl::StrCat("timeout 60 ", RINGATTN_BENCH_BINARY, " ", args));
    EXPECT_EQ(e.code, 2) << args << ": " << e.output;
    EXPECT_NE(e.output.find(message), std::string::npos) << args << ": " << e.output;
    EXPECT_EQ(e.output.find("ringattn-bench: S="), std::string::npos) << args << ": it ran";
  }
}

// Every numeric flag is checked against its stated range before anything is
// allocated, and a run that cannot fit in memory is refused up front; before,
// these crashed (--threads, negative sizes), threw bad_alloc (--ranks) or
// spun (--seq 2^40).
TEST(BenchFlags, AbsurdValuesAreRefusedNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--threads 100000", "--threads: expected in [0, 1024], got 100000"},
      {"--ranks 100000", "--ranks: expected in [1, 4096], got 100000"},
      {"--heads -1", "--heads: expected in [1, 4096], got -1"},
      {"--kv-heads -1", "--kv-heads: expected in [0, 8], got -1"},
      {"--head-dim -64", "--head-dim: expected in [1, 512], got -64"},
      {"--batch -2", "--batch: expected in [1, 65536], got -2"},
      {"--seq 0", "--seq: expected in [1, 1099511627776], got 0"},
      {"--iters 0", "--iters: expected in [1, 1000000], got 0"},
      {"--softcap nan", "--softcap: expected a finite number"},
      {"--ranks 2048 --threads 16", "--ranks x --threads: expected at most 16384 threads"},
      {"--seq 1099511627776", "of memory; this machine has"},
      {"--compare false now", "unexpected argument 'now'"}};
  for (const auto& [args, message] : cases) {
    const Exec e = RunCommand(absl::StrCat("timeout 60 ", RINGATTN_BENCH_BINARY, " ", args));
    EXPECT_EQ(e.code, 2) << args << ": " << e.output;
    EXPECT_NE(e.output.find(message), std::string::npos) << args << ": " << e.output;
    EXPECT_EQ(e.output.find("ringattn-bench: S="), std::string::npos) << args << ": it ran";
  }
}

// --json that cannot be written is an error before the run, not after it.
TEST(BenchFlags, UnwritableJsonIsRefusedBeforeTheRun) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("ringattn_bench_json_", getpid());
  fs::create_directories(dir);
  for (const fs::path& bad : {dir, dir / "missing" / "r.json"}) {
    const Exec e = RunCommand(absl::StrCat(RINGATTN_BENCH_BINARY, " --seq 64 --json ", bad.string()));
    EXPECT_EQ(e.code, 2) << e.output;
    EXPECT_NE(e.output.find("--json " + bad.string()), std::string::npos) << e.output;
    EXPECT_EQ(e.output.find("ringattn-bench: S="), std::string::npos) << e.output;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ringattn::testing
