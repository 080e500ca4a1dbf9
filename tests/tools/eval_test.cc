// ringattn-eval's own logic on small sizes: a correct run passes every
// check and writes a report that parses; a deliberately broken mask or a
// dropped ring step makes the reachability check FAIL; an unusable --out is
// a clear error before any work; the JSON, fit and SVG helpers.
#include "tools/eval/eval.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "comm/local/local_comm.h"
#include "gtest/gtest.h"
#include "tools/eval/fit.h"
#include "tools/eval/harness.h"
#include "tools/eval/report.h"
#include "tools/svg.h"

namespace ringattn::eval {

// The tools' shared SVG and progress code (tools/svg.h, tools/progress.h).
using tools::ChartSpec;
using tools::LineChart;
using tools::Heatmap;
using tools::HeatmapSpec;
using tools::CompactNumber;
using tools::Svg;
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Basic well-formedness of an SVG document: one <svg> root, every element
// closed in order, attribute values quoted, nothing but whitespace after.
::testing::AssertionResult WellFormedSvg(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0;
  bool root_seen = false;
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  while (i < s.size()) {
    const size_t lt = s.find('<', i);
    if (lt == std::string::npos) break;
    const std::string text = s.substr(i, lt - i);
    if (text.find('>') != std::string::npos) return ::testing::AssertionFailure() << "stray '>'";
    if (stack.empty() && text.find_first_not_of(" \n\r\t") != std::string::npos) {
      return ::testing::AssertionFailure() << "text outside the root";
    }
    size_t gt = lt + 1;
    bool in_quote = false;
    for (; gt < s.size(); ++gt) {
      if (s[gt] == '"') in_quote = !in_quote;
      if (!in_quote && s[gt] == '>') break;
    }
    if (gt >= s.size()) return ::testing::AssertionFailure() << "unterminated tag at " << lt;
    std::string tag = s.substr(lt + 1, gt - lt - 1);
    if (tag.empty()) return ::testing::AssertionFailure() << "empty tag";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) {
        return ::testing::AssertionFailure()
               << "</" << name << "> closes " << (stack.empty() ? "nothing" : stack.back());
      }
      stack.pop_back();
    } else {
      const bool self_closing = tag.back() == '/';
      const std::string name = tag.substr(0, tag.find_first_of(" /\n"));
      if (stack.empty()) {
        if (root_seen || name != "svg") return ::testing::AssertionFailure() << "root is " << name;
        root_seen = true;
      }
      if (!self_closing) stack.push_back(name);
    }
    i = gt + 1;
  }
  if (!root_seen) return ::testing::AssertionFailure() << "no <svg> root";
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> not closed";
  return ::testing::AssertionSuccess();
}

class EvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("ringattn_eval_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A small but complete eval: every layout and mask, two dtypes, W = 1, 2
  // and 4 with uneven shards, lengths of a few hundred tokens.
  EvalOptions Small() const {
    EvalOptions o;
    o.out_dir = (dir_ / "out").string();
    o.ranks = 4;
    o.heads = 2;
    o.kv_heads = 1;
    o.head_dim = 32;
    o.max_seq = 1024;
    o.matrix_seq = 203;
    o.long_seqs = {406};
    o.needle_seqs = {150, 300};
    o.cost_seqs = {256, 512, 1024};
    o.sweep_ranks = {1, 2, 4};
    o.sample_rows = 8;
    o.depths = {0.0, 0.25, 0.5, 0.75, 1.0};
    o.threads = 1;
    o.progress = nullptr;
    return o;
  }

  fs::path dir_;
};

const Verdict* Find(const EvalResult& r, const std::string& check) {
  for (const Verdict& v : r.verdicts) {
    if (v.check == check) return &v;
  }
  return nullptr;
}

TEST_F(EvalTest, CorrectSmallRunPassesEveryCheckAndWritesAReport) {
  const auto res = RunEval(Small());
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->verdicts.size(), 3u);
  for (const Verdict& v : res->verdicts) EXPECT_TRUE(v.pass) << v.check << ": " << v.reason;
  EXPECT_TRUE(res->pass);

  const fs::path out = dir_ / "out";
  for (const char* f :
       {"report.md", "report.json", "exactness_vs_length.svg", "exactness_vs_ranks.svg",
        "cost_memory.svg", "cost_time.svg", "needle_zigzag_causal.svg", "needle_striped_window.svg",
        "needle_contiguous_causal-window.svg", "needle_zigzag_none.svg",
        "needle_zigzag_causal-docs.svg", "needle_striped_sink-window.svg",
        "needle_contiguous_causal-blocks.svg"}) {
    EXPECT_TRUE(fs::is_regular_file(out / f)) << f;
  }
  // Every SVG is well-formed and linked from report.md.
  const std::string md = ReadFile(out / "report.md");
  int svgs = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().extension() != ".svg") continue;
    ++svgs;
    EXPECT_TRUE(WellFormedSvg(ReadFile(e.path()))) << e.path();
    EXPECT_TRUE(absl::StrContains(md, absl::StrCat("(", e.path().filename().string(), ")")))
        << e.path().filename();
  }
  EXPECT_EQ(svgs, 24 + 4);
  for (const char* line : {"**exactness: PASS**", "**reachability: PASS**", "**cost: PASS**"}) {
    EXPECT_TRUE(absl::StrContains(md, line)) << line;
  }
  EXPECT_TRUE(absl::StrContains(md, "Extrapolation (from the fits, not measured)"));

  // report.json parses and holds the numbers.
  auto j = ParseJson(ReadFile(out / "report.json"));
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_TRUE(j->contains("pass"));
  EXPECT_TRUE(j->at("pass").get<bool>());
  const Json& runs = j->at("exactness").at("runs");
  // Matrix 2 dtypes x 3 layouts x 8 masks, sweep 2 dtypes x 8 masks x 2 W, long 2 dtypes.
  EXPECT_EQ(runs.size(), 48u + 32u + 2u);
  for (const Json& r : runs) {
    EXPECT_TRUE(r.at("pass").get<bool>());
    const Json& out_err = r.at("out");
    EXPECT_LE(out_err.at("max_abs_error").get<double>(), out_err.at("tolerance").get<double>());
  }
  const Json& configs = j->at("reachability").at("configurations");
  ASSERT_EQ(configs.size(), 24u);  // 3 layouts x 8 masks
  for (const Json& c : configs) {
    const bool masked = c.at("mask_kind") != "none";
    for (const Json& r : c.at("runs")) {
      EXPECT_EQ(r.at("found"), r.at("expected_visible"));
      EXPECT_EQ(r.at("leaked"), 0);
      // Every mask but none forbids some probes (the future, beyond a window edge).
      EXPECT_EQ(r.at("expected_masked").get<int64_t>() > 0, masked);
      EXPECT_EQ(r.at("ranks_with_a_needle"), 4);
      EXPECT_GT(r.at("boundaries_with_needles_on_both_sides").get<int64_t>(), 0);
    }
  }
  EXPECT_EQ(j->at("cost").at("points").size(), 3u * 3u);
  EXPECT_TRUE(j->at("cost").at("memory_fit_quadratic").at("ok").get<bool>());
}

// Every strategy through the eval's exactness (every mask, layout, dtype,
// the W sweep) and reachability checks.
TEST_F(EvalTest, EveryStrategyPassesExactnessAndReachability) {
  for (auto [strategy, ulysses] : {std::pair{Strategy::kAllGather, 0},
                                   std::pair{Strategy::kUlysses, 0},
                                   std::pair{Strategy::kHybrid, 2}}) {
    const std::string name = StrategySpecName(strategy, ulysses, 4);
    SCOPED_TRACE(name);
    EvalOptions o = Small();
    o.heads = 4;
    o.kv_heads = 2;
    o.run_cost = false;
    o.long_seqs = {};
    o.needle_seqs = {150};
    o.strategy = strategy;
    o.ulysses = ulysses;
    fs::remove_all(dir_ / "out");
    ASSERT_TRUE(PrepareOutDir(o.out_dir).ok());
    const auto res = RunEval(o);
    ASSERT_TRUE(res.ok()) << res.status();
    for (const Verdict& v : res->verdicts) EXPECT_TRUE(v.pass) << v.check << ": " << v.reason;
    const std::string md = ReadFile(dir_ / "out" / "report.md");
    EXPECT_TRUE(absl::StrContains(md, absl::StrCat("Strategy **", name, "**"))) << md;
    auto j = ParseJson(ReadFile(dir_ / "out" / "report.json"));
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ(j->at("options").at("strategy"), name);
  }
}

TEST_F(EvalTest, BrokenMaskMakesReachabilityFail) {
  EvalOptions o = Small();
  o.run_exactness = false;
  o.run_cost = false;
  o.needle_seqs = {150};
  o.fault = Fault::kBrokenMask;
  const auto res = RunEval(o);
  ASSERT_TRUE(res.ok()) << res.status();
  const Verdict* v = Find(*res, "reachability");
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->pass);
  EXPECT_FALSE(res->pass);
  EXPECT_TRUE(absl::StrContains(v->reason, "NOT to retrieve") ||
              absl::StrContains(v->reason, "expected to retrieve"))
      << v->reason;
  EXPECT_TRUE(absl::StrContains(ReadFile(dir_ / "out" / "report.md"), "**reachability: FAIL**"));
}

TEST_F(EvalTest, DroppedRingStepMakesReachabilityFail) {
  EvalOptions o = Small();
  o.run_exactness = false;
  o.run_cost = false;
  o.needle_seqs = {150};
  o.shardings = {Sharding::kContiguous};
  o.fault = Fault::kDropRingStep;
  o.drop_step = 1;
  const auto res = RunEval(o);
  ASSERT_TRUE(res.ok()) << res.status();
  const Verdict* v = Find(*res, "reachability");
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->pass);
  EXPECT_TRUE(absl::StrContains(v->reason, "expected to retrieve it")) << v->reason;
}

TEST_F(EvalTest, NeedlesMissedOnlyWhereTheDroppedBlockCame) {
  // Contiguous, no mask, W = 2: at ring step 1 each rank gets the other
  // rank's block, so every probe misses exactly the needles of the other rank.
  NeedleSpec s;
  s.seqlen = 128;
  s.heads = 1;
  s.kv_heads = 1;
  s.head_dim = 32;
  s.world = 2;
  s.depths = {0.0, 0.5, 1.0};
  s.fault = Fault::kDropRingStep;
  auto r = RunNeedles(s);
  ASSERT_TRUE(r.ok()) << r.status();
  int64_t missed = 0, checked = 0;
  for (const Needle& n : r->needles) {
    for (const Probe& p : n.probes) {
      const int probe_rank = p.pos < 64 ? 0 : 1;
      EXPECT_EQ(p.ok, probe_rank == n.rank) << "needle " << n.pos << " probe " << p.pos;
      missed += !p.ok;
      ++checked;
    }
  }
  EXPECT_GT(missed, 0);
  EXPECT_LT(missed, checked);
  s.fault = Fault::kNone;
  r = RunNeedles(s);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->pass());
}

TEST_F(EvalTest, UnusableOutIsAClearErrorBeforeAnyWork) {
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "x";
  absl::Status s = PrepareOutDir(file.string());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "not a directory")) << s;
  s = PrepareOutDir((dir_ / "no" / "such" / "out").string());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "does not exist")) << s;
  s = PrepareOutDir((file / "sub").string());
  EXPECT_FALSE(s.ok());
  s = PrepareOutDir("");
  EXPECT_FALSE(s.ok());
  // A new directory under an existing parent is created.
  EXPECT_TRUE(PrepareOutDir((dir_ / "fresh").string()).ok());
  EXPECT_TRUE(fs::is_directory(dir_ / "fresh"));

  EvalOptions o = Small();
  o.out_dir = file.string();
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = RunEval(o);
  EXPECT_FALSE(res.ok());
  EXPECT_TRUE(absl::StrContains(res.status().message(), "--out")) << res.status();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
}

// One rank per process, the processes played by threads over a LocalWorld:
// every rank calls RunEval with its communicator (as under mpirun).
std::vector<absl::StatusOr<EvalResult>> RunAsProcesses(const EvalOptions& o) {
  auto world = comm::LocalWorld::Create(o.ranks);
  EXPECT_TRUE(world.ok()) << world.status();
  std::vector<absl::StatusOr<EvalResult>> res(o.ranks, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < o.ranks; ++r) {
    threads.emplace_back([&, r] {
      EvalOptions p = o;
      p.comm = &(*world)->Comm(r);
      p.comm_description = "local world, one rank per thread";
      // Only rank 0 touches --out.
      if (r != 0) p.out_dir = "/nonexistent/ringattn-eval-out";
      res[r] = RunEval(p);
    });
  }
  for (std::thread& t : threads) t.join();
  return res;
}

TEST_F(EvalTest, OneRankPerProcessMatchesLocalThreadsBitwise) {
  EvalOptions o = Small();
  o.ranks = 2;
  o.out_dir = (dir_ / "local").string();
  const auto local = RunEval(o);
  ASSERT_TRUE(local.ok()) << local.status();
  o.out_dir = (dir_ / "processes").string();
  const auto res = RunAsProcesses(o);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(res[r].ok()) << "rank " << r << ": " << res[r].status();
    EXPECT_TRUE(res[r]->pass) << "rank " << r;
  }
  EXPECT_EQ(res[0]->verdicts.size(), 3u);
  EXPECT_TRUE(res[1]->verdicts.empty());  // rank 0 reports
  EXPECT_FALSE(fs::exists("/nonexistent/ringattn-eval-out"));

  auto a = ParseJson(ReadFile(dir_ / "local" / "report.json"));
  auto b = ParseJson(ReadFile(dir_ / "processes" / "report.json"));
  ASSERT_TRUE(a.ok() && b.ok());
  // Every run of the processes is at W = 2, with the local run's errors.
  const Json& lr = a->at("exactness").at("runs");
  const Json& pr = b->at("exactness").at("runs");
  size_t twins = 0;
  for (const Json& l : lr) twins += l.at("world") == 2;
  ASSERT_EQ(pr.size(), twins);
  for (const Json& p : pr) {
    EXPECT_EQ(p.at("world"), 2);
    const Json* twin = nullptr;
    for (const Json& l : lr) {
      bool same = true;
      for (const char* k : {"phase", "dtype", "sharding", "mask_kind", "seqlen", "world"}) {
        same = same && l.at(k) == p.at(k);
      }
      if (same) twin = &l;
    }
    ASSERT_NE(twin, nullptr);
    for (const char* q : {"out", "lse", "dq", "dk", "dv"}) {
      EXPECT_EQ(p.at(q), twin->at(q)) << q;
    }
  }
  EXPECT_TRUE(b->at("exactness").at("growth_with_world").empty());
  EXPECT_TRUE(b->at("exactness").contains("growth_with_world_not_measured"));
  EXPECT_TRUE(absl::StrContains(ReadFile(dir_ / "processes" / "report.md"),
                                "Error vs W: **not measured**"));
  // Reachability: the same probes and scores.
  const Json& ln = a->at("reachability").at("configurations");
  const Json& pn = b->at("reachability").at("configurations");
  ASSERT_EQ(ln.size(), pn.size());
  for (size_t i = 0; i < ln.size(); ++i) {
    const Json& x = ln[i].at("runs");
    const Json& y = pn[i].at("runs");
    ASSERT_EQ(x.size(), y.size());
    for (size_t j = 0; j < x.size(); ++j) {
      EXPECT_EQ(x[j].at("needles"), y[j].at("needles"));
    }
  }
  // Cost: only W = 2, at every length.
  for (const Json& p : b->at("cost").at("points")) {
    EXPECT_EQ(p.at("world"), 2);
  }
  EXPECT_EQ(b->at("cost").at("points").size(), 3u);
}

TEST_F(EvalTest, OneRankPerProcessFaultFailsOnEveryRank) {
  EvalOptions o = Small();
  o.ranks = 2;
  o.run_exactness = false;
  o.run_cost = false;
  o.needle_seqs = {150};
  o.shardings = {Sharding::kContiguous};
  o.fault = Fault::kDropRingStep;
  const auto res = RunAsProcesses(o);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(res[r].ok()) << "rank " << r << ": " << res[r].status();
    EXPECT_FALSE(res[r]->pass) << "rank " << r;
  }
  const Verdict* v = Find(*res[0], "reachability");
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->pass);
}

TEST_F(EvalTest, OneRankPerProcessUnusableOutStopsEveryRankAtOnce) {
  EvalOptions o = Small();
  o.ranks = 2;
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "x";
  o.out_dir = file.string();
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = RunAsProcesses(o);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  ASSERT_FALSE(res[0].ok());
  EXPECT_TRUE(absl::StrContains(res[0].status().message(), "not a directory")) << res[0].status();
  ASSERT_FALSE(res[1].ok());
  EXPECT_TRUE(absl::StrContains(res[1].status().message(), "stopped by rank 0")) << res[1].status();
}

struct Exec {
  int code;
  std::string output;
};

Exec RunTool(const std::string& args) {
  const std::string cmd = absl::StrCat(RINGATTN_EVAL_BINARY, " ", args, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST_F(EvalTest, BinaryRefusesBadFlagsWithExitStatus2) {
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "x";
  Exec e = RunTool(absl::StrCat("--quick --out ", file.string()));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "not a directory")) << e.output;
  e = RunTool(absl::StrCat("--quick --out ", (dir_ / "missing" / "out").string()));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "does not exist")) << e.output;
  e = RunTool(absl::StrCat("--quick --backend cuda --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "only the 'cpu' backend")) << e.output;
  e = RunTool(absl::StrCat("--quick --comm nccl --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "'local' or 'ucx'")) << e.output;
  // One rank per process needs a launcher (mpirun); alone it is refused.
  e = RunTool(absl::StrCat("--quick --comm ucx --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "--comm ucx")) << e.output;
  e = RunTool(absl::StrCat("--quick --kv-heads 3 --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "--kv-heads")) << e.output;
  e = RunTool(absl::StrCat("--quick --dtype fp64 --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "--dtype")) << e.output;
  e = RunTool(absl::StrCat("--quick --mem-budget lots --out ", dir_.string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "--mem-budget")) << e.output;
  e = RunTool("--quick");
  EXPECT_EQ(e.code, 2);
  EXPECT_TRUE(absl::StrContains(e.output, "--out")) << e.output;
  // Numbers in their stated ranges, no stray words.
  for (const auto& [args, message] :
       std::vector<std::pair<std::string, std::string>>{
           {"--ranks 100000", "--ranks: expected in [1, 4096]"},
           {"--threads 100000", "--threads: expected in [0, 1024]"},
           {"--head-dim -1", "--head-dim: expected in [2, 512]"},
           {"--max-seq 32", "--max-seq: expected in [64, "},
           {"--rows -1", "--rows: expected in [0, 1000000]"},
           {"--time-budget nan", "--time-budget: expected a finite number"},
           {"--quick no-such-word", "unexpected argument 'no-such-word'"}}) {
    e = RunTool(absl::StrCat(args, " --out ", (dir_ / "fresh").string()));
    EXPECT_EQ(e.code, 2) << args;
    EXPECT_TRUE(absl::StrContains(e.output, message)) << args << ": " << e.output;
  }
  // A failed eval leaves no --out directory behind (it was created first).
  e = RunTool(absl::StrCat("--quick --kv-heads 3 --out ", (dir_ / "fresh").string()));
  EXPECT_EQ(e.code, 2);
  EXPECT_FALSE(fs::exists(dir_ / "fresh"));
}

// --max-seq bounds every length the eval runs: the calibration, the matrix
// and the given ladders (it used to let the ladders and a 64-token
// calibration through).
TEST_F(EvalTest, MaxSeqBoundsEveryLength) {
  EvalOptions o = Small();
  o.max_seq = 256;  // the matrix (203) and needles (150) stay; 300, 406 and above go
  o.cost_seqs = {64, 128, 256, 512};
  const auto res = RunEval(o);
  ASSERT_TRUE(res.ok()) << res.status();
  auto j = ParseJson(ReadFile(dir_ / "out" / "report.json"));
  ASSERT_TRUE(j.ok()) << j.status();
  int seen = 0;
  std::function<void(const Json&, const std::string&)> walk = [&](const Json& x, const std::string& key) {
    if (x.is_object()) {
      for (const auto& [k, v] : x.items()) walk(v, k);
    } else if (x.is_array()) {
      for (const Json& v : x) walk(v, key);
    } else if (x.is_number() && (key == "seqlen" || key == "matrix_seqlen" || key == "seqlens" ||
                                 key == "needle_seqlens" || key == "cost_seqlens")) {
      ++seen;
      EXPECT_LE(x.get<int64_t>(), 256) << key;
    }
  };
  walk(*j, "");
  EXPECT_GT(seen, 10);
}

TEST(BrokenMask, MovesEveryEdgeOutwardByOne) {
  const Mask causal = BrokenMask(Mask{true, -1, -1});
  EXPECT_TRUE(causal.Visible(10, 11));
  EXPECT_FALSE(causal.Visible(10, 12));
  const Mask win = BrokenMask(Mask{false, 8, 4});
  EXPECT_TRUE(win.Visible(20, 11));
  EXPECT_FALSE(win.Visible(20, 10));
  EXPECT_TRUE(win.Visible(20, 25));
  EXPECT_FALSE(win.Visible(20, 26));
  const Mask none = BrokenMask(Mask{});
  EXPECT_FALSE(none.Visible(3, 4));
}

// report.json's text contract (DumpJson, docs/EVAL.md): keys in insertion
// order, integers as integers, doubles bitwise, non-finite as null, bytes
// that are not UTF-8 replaced rather than thrown; ParseJson refuses garbage.
TEST(Json, DumpKeepsOrderTypesAndBitsAndParseRefusesGarbage) {
  Json j = Json::object();
  j["zeta"] = "a \"quoted\"\nline";
  j["int"] = int64_t{1} << 40;
  j["third"] = 0.1 + 0.2;  // 0.30000000000000004: needs all 17 digits
  j["nan"] = std::nan("");
  j["inf"] = -std::numeric_limits<double>::infinity();
  j["flag"] = true;
  j["list"] = std::vector<double>{1.5, -2, 1e-9};
  j["nested"]["deep"] = Json::array();
  j["bytes"] = std::string("caf\xe9");
  const std::string text = DumpJson(j);
  EXPECT_LT(text.find("\"zeta\""), text.find("\"int\""));
  EXPECT_TRUE(absl::StrContains(text, "\"int\": 1099511627776,"));
  EXPECT_TRUE(absl::StrContains(text, "\"nan\": null,"));
  EXPECT_TRUE(absl::StrContains(text, "\"inf\": null,"));
  EXPECT_EQ(text.back(), '\n');
  auto back = ParseJson(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->at("zeta"), "a \"quoted\"\nline");
  EXPECT_TRUE(back->at("int").is_number_integer());
  EXPECT_EQ(back->at("third").get<double>(), 0.1 + 0.2);
  EXPECT_TRUE(back->at("list").at(1).is_number_float());
  EXPECT_EQ(back->at("list").at(2).get<double>(), 1e-9);
  EXPECT_TRUE(back->at("flag").get<bool>());
  EXPECT_TRUE(back->at("nested").at("deep").is_array());
  EXPECT_EQ(back->at("bytes"), "caf\uFFFD");
  for (const char* bad :
       {"", "{", "{\"a\":}", "[1,]", "{\"a\":1,}", "tru", "1 2", "\"unterminated", "[01]"}) {
    EXPECT_FALSE(ParseJson(bad).ok()) << bad;
  }
}

TEST(Fit, RecoversPolynomialsAndSeesNoQuadraticTermInALine) {
  std::vector<double> x = {1000, 2000, 4000, 8000, 16000}, lin, quad;
  for (double v : x) {
    lin.push_back(3e5 + 7200 * v);
    quad.push_back(100 + 2 * v + 0.5 * v * v);
  }
  const Fit l = FitPolynomial(x, lin, 2);
  ASSERT_TRUE(l.ok);
  EXPECT_NEAR(l.b, 7200, 1e-6);
  EXPECT_LT(std::abs(l.QuadShare(16000)), 1e-9);
  const Fit q = FitPolynomial(x, quad, 2);
  ASSERT_TRUE(q.ok);
  EXPECT_NEAR(q.c, 0.5, 1e-9);
  EXPECT_GT(q.QuadShare(16000), 0.99);
  EXPECT_FALSE(FitPolynomial({1, 1, 1}, {1, 2, 3}, 1).ok);
}

TEST(Svg, ChartsAndHeatmapsAreWellFormed) {
  HeatmapSpec h;
  h.title = "a <title> & more";
  h.subtitle = "line one\nline two";
  h.x_ticks = {"1k", "2k"};
  h.y_ticks = {"0%", "100%"};
  h.values = {{0.0, 1.0}, {NAN, 0.5}};
  h.marks = {{1, 0}, {0, 2}};
  EXPECT_TRUE(WellFormedSvg(Heatmap(h)));
  ChartSpec c;
  c.title = "t";
  c.log_x = c.log_y = true;
  c.series.push_back({"s", {1, 10, 100}, {1e-7, 2e-7, 0}, "", true, true, false});
  c.series.push_back({"empty", {}, {}, "", true, true, true});
  EXPECT_TRUE(WellFormedSvg(LineChart(c)));
  EXPECT_EQ(CompactNumber(131072, true), "128k");
  EXPECT_EQ(CompactNumber(1536, true), "1.5k");
}

}  // namespace
}  // namespace ringattn::eval
