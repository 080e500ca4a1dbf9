// ringattn-run end to end: .npy files in, .npy files out, against the
// float64 reference; --ranks/--sharding give the single-rank result; every
// bad-file case is refused with a message naming the file and writes nothing.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "attention/cuda/kernels.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"
#include "tests/tools/tool_exec.h"
#include "tools/npy.h"

namespace ringattn::testing {
namespace {

namespace fs = std::filesystem;

Exec RunTool(const std::string& args) {
  return RunCommand(absl::StrCat(RINGATTN_RUN_BINARY, " ", args));
}

class RunToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("ringattn_run_test_", getpid(), "_",
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "out");
    Case c;
    c.batch = 2;
    c.seqlen_q = c.seqlen_k = 131;
    c.heads = 4;
    c.heads_k = 2;
    c.head_dim = 32;
    c.mask = Mask{true, 50, -1};
    pr_ = MakeProblem(c, 21);
    Write("q.npy", {2, 131, 4, 32}, pr_.q);
    Write("k.npy", {2, 131, 2, 32}, pr_.k);
    Write("v.npy", {2, 131, 2, 32}, pr_.v);
    Write("do.npy", {2, 131, 4, 32}, pr_.dout);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& x) {
    ASSERT_TRUE(tools::WriteNpy((dir_ / name).string(), shape, x.data()).ok());
  }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  std::string Args(const std::string& q = "q.npy", const std::string& extra = "") const {
    return absl::StrCat("--q ", P(q), " --k ", P("k.npy"), " --v ", P("v.npy"), " --dout ",
                        P("do.npy"), " --out-dir ", P("out"), " --causal --window 50,-1 ", extra);
  }
  std::vector<float> Read(const std::string& name) {
    auto a = tools::ReadNpy(P("out/" + name));
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? a->data : std::vector<float>();
  }
  bool OutputEmpty() const { return fs::is_empty(dir_ / "out"); }
  // Writes `pr`'s inputs as q/k/v/do.npy, then for each run's extra flags:
  // runs the tool into an empty out/ and compares every output with the
  // float64 reference (flash-attn's rule, fp32 storage).
  void ExpectRunsMatchReference(const Problem& pr, const std::vector<std::string>& runs) {
    const Case& c = pr.c;
    Write("q.npy", {c.batch, c.seqlen_q, c.heads, c.head_dim}, pr.q);
    Write("k.npy", {c.batch, c.seqlen_k, c.heads_k, c.head_dim}, pr.k);
    Write("v.npy", {c.batch, c.seqlen_k, c.heads_k, c.head_dim}, pr.v);
    Write("do.npy", {c.batch, c.seqlen_q, c.heads, c.head_dim}, pr.dout);
    std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
    ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &out_ref, &lse_ref);
    ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &dq_ref,
                      &dk_ref, &dv_ref);
    std::vector<float> out_n, lse_n, dq_n, dk_n, dv_n;
    NaiveForward(pr, &out_n, &lse_n);
    NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
    const DType t = DType::kFloat32;
    for (const std::string& extra : runs) {
      fs::remove_all(dir_ / "out");
      fs::create_directories(dir_ / "out");
      const Exec e = RunTool(Args("q.npy", extra));
      ASSERT_EQ(e.code, 0) << e.output;
      EXPECT_LE(MaxError(Read("out.npy"), out_ref), Tolerance(MaxError(out_n, out_ref), t)) << extra;
      EXPECT_LE(MaxError(Read("lse.npy"), lse_ref), Tolerance(MaxError(lse_n, lse_ref), t)) << extra;
      EXPECT_LE(MaxError(Read("dq.npy"), dq_ref), Tolerance(MaxError(dq_n, dq_ref), t)) << extra;
      EXPECT_LE(MaxError(Read("dk.npy"), dk_ref), Tolerance(MaxError(dk_n, dk_ref), t)) << extra;
      EXPECT_LE(MaxError(Read("dv.npy"), dv_ref), Tolerance(MaxError(dv_n, dv_ref), t)) << extra;
    }
  }

  fs::path dir_;
  Problem pr_;
};

TEST_F(RunToolTest, MatchesReferenceOnOneAndManyRanks) {
  ExpectRunsMatchReference(pr_, {"", "--ranks 3 --sharding zigzag", "--ranks 4 --sharding striped",
                                 "--ranks 2 --sharding contiguous"});
}

// Every strategy through the tool: the same outputs within the rule.
TEST_F(RunToolTest, EveryStrategyMatchesReference) {
  ExpectRunsMatchReference(pr_, {"--ranks 4 --strategy allgather --sharding zigzag",
                                 "--ranks 4 --strategy ulysses", "--ranks 2 --strategy ulysses",
                                 "--ranks 4 --strategy hybrid:2x2 --sharding striped",
                                 "--ranks 2 --strategy auto"});
  for (const char* extra : {"--ranks 4 --strategy hybrid:3x2", "--ranks 4 --strategy fastest",
                            "--ranks 8 --strategy ulysses"}) {  // 4 heads < 8
    fs::remove_all(dir_ / "out");
    fs::create_directories(dir_ / "out");
    const Exec e = RunTool(Args("q.npy", extra));
    EXPECT_NE(e.code, 0) << extra;
    EXPECT_TRUE(absl::StrContains(e.output, "--strategy")) << e.output;
    EXPECT_TRUE(OutputEmpty()) << extra;
  }
}

// --timing: the attention calls' time against the whole run's, both
// measured in that run (docs/PERF.md has the figures of a large problem).
TEST_F(RunToolTest, TimingReportsTheKernelsShareOfTheRun) {
  const Exec e = RunTool(Args("q.npy", "--timing --ranks 2"));
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("ringattn-run: attention calls "), std::string::npos) << e.output;
  EXPECT_NE(e.output.find(", backward "), std::string::npos) << e.output;
  EXPECT_NE(e.output.find(" of the time in the kernels"), std::string::npos) << e.output;
  const Exec quiet = RunTool(Args("q.npy"));
  EXPECT_EQ(quiet.output.find("attention calls"), std::string::npos) << quiet.output;
}

TEST_F(RunToolTest, Bf16IsWithinBf16Tolerance) {
  const Exec e = RunTool(Args("q.npy", "--dtype bf16"));
  ASSERT_EQ(e.code, 0) << e.output;
  // The bf16 reference: inputs rounded to bf16 first.
  Case c = pr_.c;
  c.dtype = DType::kBFloat16;
  Problem pb = pr_;
  pb.c = c;
  for (auto* x : {&pb.q, &pb.k, &pb.v, &pb.dout})
    for (float& f : *x) f = RoundTo(DType::kBFloat16, f);
  std::vector<double> out_ref, lse_ref;
  ReferenceForward(pb.ref, pb.q.data(), pb.k.data(), pb.v.data(), &out_ref, &lse_ref);
  std::vector<float> out_n, lse_n;
  NaiveForward(pb, &out_n, &lse_n);
  EXPECT_LE(MaxError(Read("out.npy"), out_ref), Tolerance(MaxError(out_n, out_ref), DType::kBFloat16));
}

// A 1-D little-endian integer .npy ('<i4' or '<i8'), as np.save writes it.
void WriteIntNpy(const std::string& path, const std::string& descr,
                 const std::vector<int64_t>& values) {
  std::string dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                  values.size(), ",), }");
  const size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(dict.size() & 0xff));
  bytes.push_back(static_cast<char>(dict.size() >> 8));
  bytes += dict;
  for (int64_t v : values) {
    if (descr == "<i4") {
      const int32_t x = static_cast<int32_t>(v);
      bytes.append(reinterpret_cast<const char*>(&x), 4);
    } else {
      bytes.append(reinterpret_cast<const char*>(&v), 8);
    }
  }
  std::ofstream(path, std::ios::binary) << bytes;
}

// A bool ('|b1') or uint8 ('|u1') .npy of `shape`, as np.save writes it.
void WriteByteNpy(const std::string& path, const std::string& descr,
                  const std::vector<int64_t>& shape, const std::vector<uint8_t>& values) {
  std::string dims;
  for (int64_t d : shape) absl::StrAppend(&dims, d, ",", shape.size() == 1 ? "" : " ");
  if (shape.size() > 1) dims.pop_back(), dims.pop_back();
  std::string dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                  dims, "), }");
  const size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(dict.size() & 0xff));
  bytes.push_back(static_cast<char>(dict.size() >> 8));
  bytes += dict;
  bytes.append(values.begin(), values.end());
  std::ofstream(path, std::ios::binary) << bytes;
}

// Block masks (--block-mask, bool or uint8, shared or per head; blocks of
// 32 over 131 tokens: 5 per side, the last one short) with causal and a
// window on top, on one rank and across ranks, against the reference.
TEST_F(RunToolTest, BlockMasksMatchTheReference) {
  std::mt19937 rng(5);
  std::vector<uint8_t> shared(25), per_head(4 * 25);
  for (uint8_t& b : shared) b = rng() % 2;
  for (uint8_t& b : per_head) b = rng() % 3 == 0 ? 0 : 1 + rng() % 200;
  WriteByteNpy(P("blocks.npy"), "|b1", {5, 5}, shared);
  WriteByteNpy(P("heads.npy"), "|u1", {4, 5, 5}, per_head);
  Case c = pr_.c;
  c.mask = pr_.c.mask.WithBlocks(shared.data(), 1, 5, 5, 32);
  const std::string shared_flags = "--causal --window 50,-1 --block-size 32 --block-mask " + P("blocks.npy");
  ExpectRunsMatchReference(MakeProblem(c, 24), {shared_flags, shared_flags + " --ranks 3 --sharding zigzag"});
  c.mask = pr_.c.mask.WithBlocks(per_head.data(), 4, 5, 5, 32);
  const std::string head_flags = "--causal --window 50,-1 --block-size 32 --block-mask " + P("heads.npy");
  ExpectRunsMatchReference(MakeProblem(c, 25), {head_flags + " --ranks 2 --sharding striped"});
}

// Packed documents (--cu-seqlens, int32 or int64; a document of one token
// and an empty one) with prefix-LM on top, on one rank and across ranks in
// every sharding (balanced included), against the float64 reference.
TEST_F(RunToolTest, PackedDocumentsMatchTheReference) {
  static const int64_t kDocs[] = {0, 1, 1, 40, 64, 100, 131};
  Case c = pr_.c;
  c.mask = Mask{true, 50, -1, 20}.WithDocuments(kDocs, 7);
  const Problem pd = MakeProblem(c, 22);
  WriteIntNpy(P("docs64.npy"), "<i8", std::vector<int64_t>(std::begin(kDocs), std::end(kDocs)));
  WriteIntNpy(P("docs32.npy"), "<i4", std::vector<int64_t>(std::begin(kDocs), std::end(kDocs)));
  const std::string d64 = "--mask prefix-lm:20 --cu-seqlens " + P("docs64.npy"),
                    d32 = "--mask prefix-lm:20 --cu-seqlens " + P("docs32.npy");
  ExpectRunsMatchReference(pd, {d64, d32 + " --ranks 3 --sharding zigzag",
                                d64 + " --ranks 4 --sharding balanced",
                                d32 + " --ranks 2 --sharding striped --stripe 3"});
}

// StreamingLLM's sink + sliding window through the tool, across ranks.
TEST_F(RunToolTest, SinkMaskMatchesTheReference) {
  Case c = pr_.c;
  c.mask = Mask::Sink(3, 50);
  ExpectRunsMatchReference(MakeProblem(c, 23), {"--mask sink:3", "--mask sink:3 --ranks 3 --sharding zigzag",
                                                "--mask sink:3 --ranks 2 --sharding contiguous"});
}

// Bad document boundaries and named masks: refused naming the flag and the
// problem, nothing written.
TEST_F(RunToolTest, RefusesBadDocumentsAndMasks) {
  WriteIntNpy(P("start.npy"), "<i8", {1, 50, 131});
  WriteIntNpy(P("end.npy"), "<i8", {0, 50, 130});
  WriteIntNpy(P("down.npy"), "<i4", {0, 60, 50, 131});
  WriteIntNpy(P("one.npy"), "<i8", {0});
  Write("float.npy", {3}, {0.0f, 50.0f, 131.0f});
  Write("flat.npy", {1, 3}, {0.0f, 50.0f, 131.0f});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--cu-seqlens " + P("start.npy"), "cu_seqlens[0]: expected 0, got 1"},
      {"--cu-seqlens " + P("end.npy"), "cu_seqlens[2] (the last boundary): expected seqlen = 131, got 130"},
      {"--cu-seqlens " + P("down.npy"), "cu_seqlens[2]: expected >= cu_seqlens[1] = 60"},
      {"--cu-seqlens " + P("one.npy"), "--cu-seqlens"},
      {"--cu-seqlens " + P("float.npy"), "unsupported dtype '<f4' (expected little-endian int32"},
      {"--cu-seqlens " + P("missing.npy"), "missing.npy"},
      {"--mask prefix-lm:x", "--mask: expected prefix-lm:P with an integer P >= 1"},
      {"--mask sliding", "--mask: expected none, prefix-lm:P or sink:N"},
      {"--mask sink:0", "--mask: expected sink:N with an integer N >= 1"},
      {"--mask prefix-lm:500", "mask.prefix: expected in [0, seqlen = 131], got 500"},
      {"--block-mask " + P("b4.npy"), "--block-mask " + P("b4.npy") + ": expected shape (2, 2) or (4, 2, 2)"},
      {"--block-size 32 --block-mask " + P("b4.npy"), "got (4, 4)"},
      {"--block-size 32 --block-mask " + P("h3.npy"), "expected shape (5, 5) or (4, 5, 5)"},
      {"--block-size 0 --block-mask " + P("b4.npy"), "--block-size: expected >= 1, got 0"},
      {"--block-size 32 --block-mask " + P("float.npy"), "unsupported dtype '<f4' (expected bool '|b1' or uint8 '|u1')"},
      {"--block-mask dense", "--block-mask: expected FILE.npy, random:DENSITY[:SEED] or diagonal"},
      {"--block-mask random:1.5", "--block-mask: expected random:DENSITY[:SEED] with DENSITY in [0, 1]"},
  };
  WriteByteNpy(P("b4.npy"), "|b1", {4, 4}, std::vector<uint8_t>(16, 1));
  WriteByteNpy(P("h3.npy"), "|u1", {3, 5, 5}, std::vector<uint8_t>(75, 1));
  for (const auto& [extra, want] : cases) {
    const Exec e = RunTool(Args("q.npy", extra));
    EXPECT_NE(e.code, 0) << extra;
    EXPECT_TRUE(absl::StrContains(e.output, want)) << extra << "\n" << e.output;
    EXPECT_TRUE(OutputEmpty()) << extra;
  }
}

// Each broken input file: exit non-zero, the message names the file and
// the problem, the output directory stays empty.
TEST_F(RunToolTest, RefusesBadFiles) {
  auto write_raw = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(P(name), std::ios::binary) << bytes;
  };
  std::string good;
  {
    std::ifstream f(P("q.npy"), std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(f), {});
  }
  const size_t header_end = good.find('\n') + 1;
  auto header_with = [&](const std::string& from, const std::string& to) {
    std::string h = good.substr(0, header_end);
    const size_t at = h.find(from);
    h.replace(at, from.size(), to);
    return h + good.substr(header_end);
  };
  struct BadCase {
    std::string name, bytes, expect;
  };
  const std::vector<BadCase> cases = {
      {"magic.npy", "XXNUMPY" + good.substr(7), "magic"},
      {"dtype.npy", header_with("'<f4'", "'<f8'"), "<f8"},
      {"fortran.npy", header_with("False", "True "), "fortran"},
      {"truncated.npy", good.substr(0, good.size() - 100), "truncated"},
      {"overflow.npy", header_with("(2, 131, 4, 32)", "(9223372036854775807, 4, 4, 32)"), "overflow"},
  };
  for (const BadCase& c : cases) {
    write_raw(c.name, c.bytes);
    const Exec e = RunTool(Args(c.name));
    EXPECT_NE(e.code, 0) << c.name;
    EXPECT_TRUE(absl::StrContains(e.output, c.name)) << e.output;
    EXPECT_TRUE(absl::StrContains(e.output, c.expect)) << e.output;
    EXPECT_TRUE(OutputEmpty()) << c.name;
  }
  // Mismatched shapes: k with a different head dim.
  Write("k_bad.npy", {2, 131, 2, 16}, std::vector<float>(2 * 131 * 2 * 16, 0.5f));
  const Exec e = RunTool(absl::StrCat("--q ", P("q.npy"), " --k ", P("k_bad.npy"), " --v ",
                                      P("v.npy"), " --out-dir ", P("out")));
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(absl::StrContains(e.output, "k_bad.npy")) << e.output;
  EXPECT_TRUE(OutputEmpty());
  // Missing file.
  const Exec m = RunTool(Args("missing.npy"));
  EXPECT_NE(m.code, 0);
  EXPECT_TRUE(absl::StrContains(m.output, "missing.npy")) << m.output;
  EXPECT_TRUE(OutputEmpty());
}

TEST_F(RunToolTest, RefusesBadFlags) {
  for (const char* extra : {"--window 3", "--dtype fp64", "--ranks 0", "--sharding diagonal",
                            "--backend tpu", "--scale nan", "--dtype fp16",
                            "--backend cuda --dtype fp32", "--backend cuda --comm ucx --dtype bf16",
                            "--backend cuda --comm local --dtype bf16", "--comm carrier-pigeon",
                            "--comm nccl"}) {
    const Exec e = RunTool(Args("q.npy", extra));
    EXPECT_NE(e.code, 0) << extra;
    EXPECT_TRUE(OutputEmpty()) << extra;
  }
  // The cuda backend's flag errors name the flag to change.
  Exec e = RunTool(Args("q.npy", "--backend cuda --dtype fp32"));
  EXPECT_TRUE(absl::StrContains(e.output, "--dtype fp32: the cuda backend takes bf16 or fp16"))
      << e.output;
  e = RunTool(Args("q.npy", "--backend cuda --comm local --dtype bf16"));
  EXPECT_TRUE(absl::StrContains(e.output, "--backend cuda needs --comm cuda-local")) << e.output;
  // nccl moves device memory only.
  e = RunTool(Args("q.npy", "--comm nccl"));
  EXPECT_TRUE(absl::StrContains(e.output, "--comm nccl moves device memory")) << e.output;
}

// Without CUDA built, or without a device: a clear error naming --backend
// cuda, nothing written.
// Numbers out of their stated range, and stray words, are refused naming the
// flag (or the word) before any work; nothing is written.
TEST_F(RunToolTest, RefusesAbsurdNumbersAndStrayWords) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--threads 100000", "--threads: expected in [0, 1024], got 100000"},
      {"--ranks 100000", "--ranks: expected in [1, 4096], got 100000"},
      {"--ranks -2", "--ranks: expected in [1, 4096], got -2"},
      {"--stripe 0", "--stripe: expected in [1, "},
      {"--softcap -1", "--softcap: expected a finite number in [0, "},
      {"--scale inf", "--scale: expected a finite number in [0, "},
      {"--deterministic maybe", "unexpected argument 'maybe'"},
      {"extra.npy", "unexpected argument 'extra.npy'"}};
  for (const auto& [extra, message] : cases) {
    const Exec e = RunTool(Args("q.npy", extra));
    EXPECT_EQ(e.code, 2) << extra;
    EXPECT_TRUE(absl::StrContains(e.output, message)) << extra << ": " << e.output;
    EXPECT_TRUE(OutputEmpty()) << extra;
  }
}

// A boolean flag means what it says in every spelling: `--causal false`
// used to run causal attention (absl read `--causal` and dropped "false").
TEST_F(RunToolTest, BooleanFlagsMeanWhatTheySay) {
  const std::string base = absl::StrCat("--q ", P("q.npy"), " --k ", P("k.npy"), " --v ", P("v.npy"),
                                        " --out-dir ", P("out"), " ");
  auto out_of = [&](const std::string& flags) {
    fs::remove_all(dir_ / "out");
    fs::create_directories(dir_ / "out");
    const Exec e = RunTool(base + flags);
    EXPECT_EQ(e.code, 0) << flags << ": " << e.output;
    return Read("out.npy");
  };
  const std::vector<float> full = out_of(""), causal = out_of("--causal");
  ASSERT_FALSE(full.empty());
  ASSERT_NE(full, causal);
  for (const char* f : {"--causal false", "--causal=false", "--nocausal", "--causal no",
                        "--causal 0", "-causal False"}) {
    EXPECT_EQ(out_of(f), full) << f;
  }
  for (const char* f : {"--causal true", "--causal=true", "--causal yes", "--causal 1"}) {
    EXPECT_EQ(out_of(f), causal) << f;
  }
}

// The outputs are one set: a forward-only run removes the gradients of an
// earlier run with --dout, and a run that cannot write (a full disk, here a
// file size limit) fails and leaves the earlier set intact, with no
// temporary files.
TEST_F(RunToolTest, OutputSetIsReplacedWholeOrNotAtAll) {
  ASSERT_EQ(RunTool(Args()).code, 0);
  for (const char* f : {"out.npy", "lse.npy", "dq.npy", "dk.npy", "dv.npy"}) {
    ASSERT_TRUE(fs::exists(dir_ / "out" / f)) << f;
  }
  auto snapshot = [&] {
    std::vector<std::pair<std::string, std::string>> files;
    for (const auto& e : fs::directory_iterator(dir_ / "out")) {
      std::ifstream in(e.path(), std::ios::binary);
      files.emplace_back(e.path().filename().string(),
                         std::string(std::istreambuf_iterator<char>(in), {}));
    }
    std::sort(files.begin(), files.end());
    return files;
  };
  const auto before = snapshot();
  // 64 KiB per file: out.npy (134 KB) cannot be written; SIGXFSZ ignored so
  // that write() fails with EFBIG as on a full disk.
  const Exec full = RunCommand(absl::StrCat("bash -c 'trap \"\" XFSZ; ulimit -f 64; exec ",
                                            RINGATTN_RUN_BINARY, " ", Args("q.npy", "--softcap 5"), "'"));
  EXPECT_EQ(full.code, 2) << full.output;
  EXPECT_TRUE(absl::StrContains(full.output, "File too large")) << full.output;
  EXPECT_EQ(snapshot(), before);

  const std::string fwd_only = absl::StrCat("--q ", P("q.npy"), " --k ", P("k.npy"), " --v ",
                                            P("v.npy"), " --out-dir ", P("out"));
  ASSERT_EQ(RunTool(fwd_only).code, 0);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_ / "out")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"lse.npy", "out.npy"}));
}

// Inputs larger than the machine's memory are refused before they are
// read (a sparse 1 TiB file stands for one), naming the sizes.
TEST_F(RunToolTest, InputsBeyondMemoryAreRefusedBeforeReading) {
  std::filesystem::resize_file(dir_ / "q.npy", std::uintmax_t{1} << 40);
  const Exec e = RunCommand(absl::StrCat("timeout 30 ", RINGATTN_RUN_BINARY, " ", Args()));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "of .npy files) needs about")) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "available")) << e.output;
  EXPECT_TRUE(OutputEmpty());
}

// A FIFO as an input is refused by name at once (it used to block forever).
TEST_F(RunToolTest, FifoInputIsRefused) {
  ASSERT_EQ(::mkfifo(P("fifo.npy").c_str(), 0600), 0);
  const Exec e = RunCommand(absl::StrCat("timeout 30 ", RINGATTN_RUN_BINARY, " ", Args("fifo.npy")));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, P("fifo.npy") + ": not a regular file")) << e.output;
  EXPECT_TRUE(OutputEmpty());
}

TEST_F(RunToolTest, CudaBackendWithoutDeviceIsAClearError) {
  if (cuda::DeviceAvailable()) GTEST_SKIP() << "a CUDA device is present (run_tool_cuda_test)";
  const Exec e = RunTool(Args("q.npy", "--backend cuda --dtype bf16"));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "--backend cuda: ")) << e.output;
  EXPECT_TRUE(OutputEmpty());
}

}  // namespace
}  // namespace ringattn::testing
