// ringattn-bench --json on a tiny problem: the file parses, holds the keys
// in their order with their JSON types (README, "Tools"), and says null for
// what a run did not measure (no backward, no 1-rank comparison, one rank).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/tools/tool_exec.h"

namespace ringattn::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

enum class Kind { kInteger, kNumber, kString, kBool, kNumberOrNull };

struct Key {
  const char* name;
  Kind kind;
};

// Every key but single_rank_all_cores_fwd_gflops (only where the 1-rank
// runs differ in threads), in the order written.
constexpr Key kKeys[] = {
    {"seq_len", Kind::kInteger},
    {"batch", Kind::kInteger},
    {"heads", Kind::kInteger},
    {"kv_heads", Kind::kInteger},
    {"head_dim", Kind::kInteger},
    {"dtype", Kind::kString},
    {"backend", Kind::kString},
    {"backend_description", Kind::kString},
    {"comm", Kind::kString},
    {"deterministic", Kind::kBool},
    {"ranks", Kind::kInteger},
    {"threads_per_rank", Kind::kInteger},
    {"sharding", Kind::kString},
    {"causal", Kind::kBool},
    {"window_left", Kind::kInteger},
    {"window_right", Kind::kInteger},
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
    {"rank_memory_bytes", Kind::kInteger},
    {"peak_rss_bytes", Kind::kInteger},
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

  // Runs the bench with `args` on a tiny problem; the parsed --json file.
  Json Run(const std::string& args) {
    const Exec e = RunCommand(absl::StrCat(RINGATTN_BENCH_BINARY,
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
      if (name != "single_rank_all_cores_fwd_gflops") got.push_back(name);
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
  EXPECT_EQ(j["comm"], "local");
  for (const char* k : {"fwd_ms", "bwd_ms", "fwd_gflops", "bwd_gflops", "speedup_vs_1_rank",
                        "bwd_speedup_vs_1_rank", "link_one_way_gbps"}) {
    ASSERT_TRUE(j[k].is_number()) << k;
    EXPECT_GT(j[k].get<double>(), 0) << k;
  }
  EXPECT_GT(j["fwd_bytes_sent_per_rank"], 0);
  EXPECT_GT(j["peak_rss_bytes"], 0);
  if (j.contains("single_rank_all_cores_fwd_gflops")) {
    EXPECT_TRUE(j["single_rank_all_cores_fwd_gflops"].is_number());
  }
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

}  // namespace
}  // namespace ringattn::testing
