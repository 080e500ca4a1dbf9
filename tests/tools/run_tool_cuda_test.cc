// ringattn-run --backend cuda end to end (W ranks on GPU 0 over cuda-local):
// the same .npy files as --backend cpu, both within flash-attn's bf16
// tolerance of the float64 reference and within the sum of the two
// tolerances of each other; fp16 against its own reference; --deterministic
// gives the same bytes twice. Label gpu: without a device every test is
// skipped with "no CUDA device".
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attention/cuda/kernels.h"
#include "gtest/gtest.h"
#include "tests/attention/attn_test_util.h"
#include "tests/tools/tool_exec.h"
#include "tools/npy.h"

namespace ringattn::testing {
namespace {

namespace fs = std::filesystem;

#define SKIP_WITHOUT_DEVICE() \
  if (!cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device"

constexpr int64_t kB = 2, kS = 131, kH = 4, kHk = 2, kD = 64;

// The ringattn-run binary: $RINGATTN_RUN_BINARY, else the build's (baked in
// at compile time), else one beside this test (a carried bin/ directory),
// else the build tree's tools/ relative to this test.
std::string RunBinary() {
  if (const char* env = std::getenv("RINGATTN_RUN_BINARY"); env != nullptr && *env != '\0') {
    return env;
  }
  if (fs::exists(RINGATTN_RUN_BINARY)) return RINGATTN_RUN_BINARY;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& p : {self.parent_path() / "ringattn-run",
                            self.parent_path() / ".." / ".." / "tools" / "ringattn-run"}) {
    if (!ec && fs::exists(p)) return p.string();
  }
  return RINGATTN_RUN_BINARY;  // not found: the error names it
}

class RunToolCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_DEVICE();
    dir_ = fs::temp_directory_path() /
           absl::StrCat("ringattn_run_cuda_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Inputs already representable in `t`, written as fp32 .npy files.
  Problem WriteInputs(DType t, const std::string& prefix) {
    Case c;
    c.batch = kB;
    c.seqlen_q = c.seqlen_k = kS;
    c.heads = kH;
    c.heads_k = kHk;
    c.head_dim = kD;
    c.mask = Mask{true, 50, -1};
    c.dtype = t;
    Problem pr = MakeProblem(c, 21);
    Write(prefix + "q.npy", {kB, kS, kH, kD}, pr.q);
    Write(prefix + "k.npy", {kB, kS, kHk, kD}, pr.k);
    Write(prefix + "v.npy", {kB, kS, kHk, kD}, pr.v);
    Write(prefix + "do.npy", {kB, kS, kH, kD}, pr.dout);
    return pr;
  }
  void Write(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& x) {
    ASSERT_TRUE(tools::WriteNpy((dir_ / name).string(), shape, x.data()).ok());
  }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  // Runs the tool on the inputs of `prefix` into a fresh directory `out`.
  Exec Run(const std::string& prefix, const std::string& out, const std::string& extra) {
    fs::remove_all(dir_ / out);
    fs::create_directories(dir_ / out);
    return RunCommand(absl::StrCat(RunBinary(), " --q ", P(prefix + "q.npy"), " --k ",
                                   P(prefix + "k.npy"), " --v ", P(prefix + "v.npy"), " --dout ",
                                   P(prefix + "do.npy"), " --out-dir ", P(out),
                                   " --causal --window 50,-1 ", extra));
  }
  std::vector<float> Read(const std::string& out, const std::string& name) {
    auto a = tools::ReadNpy(P(out + "/" + name));
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? a->data : std::vector<float>();
  }
  std::string Bytes(const std::string& out, const std::string& name) {
    std::ifstream f(P(out + "/" + name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  fs::path dir_;
};

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
  double tol[5];  // out, lse, dq, dk, dv
};

Reference MakeReference(const Problem& pr) {
  Reference r;
  ReferenceForward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), &r.out, &r.lse);
  ReferenceBackward(pr.ref, pr.q.data(), pr.k.data(), pr.v.data(), pr.dout.data(), &r.dq, &r.dk,
                    &r.dv);
  std::vector<float> out_n, lse_n, dq_n, dk_n, dv_n;
  NaiveForward(pr, &out_n, &lse_n);
  NaiveBackward(pr, &dq_n, &dk_n, &dv_n);
  const DType t = pr.c.dtype;
  r.tol[0] = Tolerance(MaxError(out_n, r.out), t);
  r.tol[1] = Tolerance(MaxError(lse_n, r.lse), DType::kFloat32);
  r.tol[2] = Tolerance(MaxError(dq_n, r.dq), t);
  r.tol[3] = Tolerance(MaxError(dk_n, r.dk), t);
  r.tol[4] = Tolerance(MaxError(dv_n, r.dv), t);
  return r;
}

const char* const kFiles[] = {"out.npy", "lse.npy", "dq.npy", "dk.npy", "dv.npy"};

const std::vector<double>& RefOf(const Reference& r, int i) {
  const std::vector<double>* all[] = {&r.out, &r.lse, &r.dq, &r.dk, &r.dv};
  return *all[i];
}

TEST_F(RunToolCudaTest, Bf16MatchesCpuBackendAndReference) {
  const Problem pr = WriteInputs(DType::kBFloat16, "");
  const Reference ref = MakeReference(pr);
  const Exec cpu = Run("", "cpu", "--backend cpu --dtype bf16 --ranks 3 --sharding zigzag");
  ASSERT_EQ(cpu.code, 0) << cpu.output;
  const Exec gpu = Run("", "cuda", "--backend cuda --dtype bf16 --ranks 3 --sharding zigzag");
  ASSERT_EQ(gpu.code, 0) << gpu.output;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE(kFiles[i]);
    const std::vector<float> a = Read("cpu", kFiles[i]), b = Read("cuda", kFiles[i]);
    EXPECT_LE(MaxError(a, RefOf(ref, i)), ref.tol[i]) << "cpu";
    EXPECT_LE(MaxError(b, RefOf(ref, i)), ref.tol[i]) << "cuda";
    // Each within tol of the reference: within 2 tol of each other.
    EXPECT_LE(MaxError(b, ToDouble(a)), 2 * ref.tol[i]) << "cuda vs cpu";
  }
}

TEST_F(RunToolCudaTest, Fp16MatchesReference) {
  const Problem pr = WriteInputs(DType::kFloat16, "h_");
  const Reference ref = MakeReference(pr);
  const Exec e =
      Run("h_", "cuda", "--backend cuda --dtype fp16 --ranks 4 --sharding striped --stripe 3");
  ASSERT_EQ(e.code, 0) << e.output;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE(kFiles[i]);
    EXPECT_LE(MaxError(Read("cuda", kFiles[i]), RefOf(ref, i)), ref.tol[i]);
  }
}

TEST_F(RunToolCudaTest, DeterministicRunsWriteTheSameBytes) {
  WriteInputs(DType::kBFloat16, "");
  const char* flags = "--backend cuda --dtype bf16 --ranks 2 --sharding contiguous --deterministic";
  const Exec a = Run("", "a", flags);
  ASSERT_EQ(a.code, 0) << a.output;
  const Exec b = Run("", "b", flags);
  ASSERT_EQ(b.code, 0) << b.output;
  for (const char* f : kFiles) {
    const std::string x = Bytes("a", f);
    EXPECT_FALSE(x.empty()) << f;
    EXPECT_TRUE(x == Bytes("b", f)) << f;
  }
}

}  // namespace
}  // namespace ringattn::testing
