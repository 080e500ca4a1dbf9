// Tests of the `ucx` backend and the bootstraps.
//
// Under mpirun (ctest's ucx_comm_mpi_<N>, label "mpi"), each process is one
// rank and runs the communicator conformance suite (Ucx/...) for the
// launched world size; the bootstrap is MPI (or the file store, with
// RINGATTN_BOOTSTRAP=file). Run alone, the binary runs the suite for one
// rank, the file-store tests (ranks as threads of this process), and the
// fault tests, which start their ranks as child processes of this binary
// (RINGATTN_UCX_TEST_CHILD selects what a child does) over a file store:
// mpirun would kill the survivors of a killed rank itself.
#include "comm/ucx/ucx_comm.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "gtest/gtest.h"
#include "tests/comm/conformance.h"
#include "tests/comm/process_bootstrap.h"

extern char** environ;

namespace ringattn::comm {
namespace {

using conformance::CommConformanceTest;

bool Contains(absl::string_view text, absl::string_view part) {
  return text.find(part) != absl::string_view::npos;
}

// ---- the conformance suite, one rank per process ---------------------------

class UcxCommWorld : public conformance::CommWorld {
 public:
  UcxCommWorld(Bootstrap* bootstrap, std::unique_ptr<Communicator> comm)
      : bootstrap_(bootstrap), comm_(std::move(comm)) {}
  ~UcxCommWorld() override {
    // Collective teardown: nobody closes while a peer still talks to it.
    (void)bootstrap_->Barrier(absl::Seconds(60));
    comm_.reset();
  }
  void Run(const std::function<void(Communicator&)>& body) override { body(*comm_); }

 private:
  Bootstrap* bootstrap_;
  std::unique_ptr<Communicator> comm_;
};

std::shared_ptr<const conformance::CommBackend> UcxBackend() {
  auto backend = std::make_shared<conformance::CommBackend>();
  backend->name = "ucx";
  backend->make_world =
      [](int size,
         absl::Duration timeout) -> absl::StatusOr<std::unique_ptr<conformance::CommWorld>> {
    Bootstrap* bootstrap = ProcessBootstrap();
    if (bootstrap->Size() != size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ucx suite runs with the launched world size ", bootstrap->Size(), ", not ", size));
    }
    UcxOptions options;
    options.timeout = timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm, CreateUcxCommunicator(bootstrap, options));
    return std::unique_ptr<conformance::CommWorld>(new UcxCommWorld(bootstrap, std::move(comm)));
  };
  // The receiver's refusal travels back to the sender (REPLY message).
  backend->sender_sees_header_mismatch = true;
  return backend;
}

// A build without UCX has nothing to run the suite on (the stub answers
// Unimplemented, checked below).
INSTANTIATE_TEST_SUITE_P(Ucx, CommConformanceTest,
                         ::testing::ValuesIn(conformance::ConformanceParams(
                             UcxBackend(),
                             UcxBuilt() ? std::vector<int>{LaunchedSize()} : std::vector<int>{})),
                         conformance::ConformanceParamName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CommConformanceTest);

TEST(UcxStubTest, UnbuiltBackendAnswersUnimplemented) {
  if (UcxBuilt()) GTEST_SKIP() << "UCX is built";
  auto comm = CreateUcxCommunicator(nullptr);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnimplemented) << comm.status();
}

// ---- file store, ranks as threads --------------------------------------------

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/ringattn-store-XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { std::system(absl::StrCat("rm -rf '", path_, "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

FileStoreOptions StoreOptions(const std::string& dir, const std::string& job, int rank, int size) {
  FileStoreOptions o;
  o.dir = dir;
  o.job_id = job;
  o.rank = rank;
  o.size = size;
  return o;
}

// Runs CreateFileStoreBootstrap + one AllGather on each (rank, size) given.
std::vector<absl::Status> RunStores(const std::string& dir,
                                    const std::vector<std::pair<int, int>>& ranks,
                                    absl::Duration timeout,
                                    std::vector<std::vector<std::string>>* gathered = nullptr) {
  std::vector<absl::Status> result(ranks.size());
  if (gathered) gathered->assign(ranks.size(), {});
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ranks.size(); ++i) {
    threads.emplace_back([&, i] {
      auto store = CreateFileStoreBootstrap(
          StoreOptions(dir, "job-7", ranks[i].first, ranks[i].second), timeout);
      if (!store.ok()) {
        result[i] = store.status();
        return;
      }
      std::string blob = absl::StrCat("blob of ", ranks[i].first);
      blob.push_back('\0');
      blob += "\n tail";
      auto all = (*store)->AllGather(blob, timeout);
      if (!all.ok()) {
        result[i] = all.status();
        return;
      }
      if (gathered) (*gathered)[i] = *all;
      result[i] = (*store)->Barrier(timeout);
    });
  }
  for (std::thread& t : threads) t.join();
  return result;
}

TEST(FileStoreTest, ExchangesBlobsAndKeepsFilesPrivate) {
  TempDir dir;
  std::vector<std::vector<std::string>> gathered;
  const auto results =
      RunStores(dir.path(), {{0, 3}, {1, 3}, {2, 3}}, absl::Seconds(10), &gathered);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i];
    ASSERT_EQ(gathered[i].size(), 3u);
    for (int r = 0; r < 3; ++r) {
      std::string want = absl::StrCat("blob of ", r);
      want.push_back('\0');
      want += "\n tail";
      EXPECT_EQ(gathered[i][r], want);
    }
  }
  struct stat st;
  ASSERT_EQ(::stat(absl::StrCat(dir.path(), "/job-job-7/rank-0.claim").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(absl::StrCat(dir.path(), "/job-job-7").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(FileStoreTest, WrongWorldSizeTimesOutNamingMissingRanks) {
  TempDir dir;
  const absl::Time start = absl::Now();
  const auto results = RunStores(dir.path(), {{0, 3}, {1, 3}}, absl::Milliseconds(300));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  for (const absl::Status& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_TRUE(Contains(s.message(), "2 of 3 ranks arrived")) << s;
    EXPECT_TRUE(Contains(s.message(), "missing rank 2")) << s;
  }
}

TEST(FileStoreTest, DisagreeingWorldSizesAreAnError) {
  TempDir dir;
  const auto results = RunStores(dir.path(), {{0, 2}, {1, 3}}, absl::Milliseconds(500));
  EXPECT_EQ(results[0].code(), absl::StatusCode::kInvalidArgument) << results[0];
  EXPECT_TRUE(Contains(results[0].message(), "world size mismatch: rank 1 declares world size 3"))
      << results[0];
  EXPECT_FALSE(results[1].ok());
}

TEST(FileStoreTest, DuplicateRankIsRefused) {
  TempDir dir;
  const auto results = RunStores(dir.path(), {{0, 2}, {0, 2}}, absl::Milliseconds(300));
  int duplicates = 0;
  for (const absl::Status& s : results) {
    EXPECT_FALSE(s.ok());
    if (s.code() == absl::StatusCode::kAlreadyExists) {
      ++duplicates;
      EXPECT_TRUE(Contains(s.message(), "duplicate rank 0")) << s;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
      EXPECT_TRUE(Contains(s.message(), "missing rank 1")) << s;
    }
  }
  EXPECT_EQ(duplicates, 1);
}

TEST(FileStoreTest, StaleJobWithSameIdIsNotReused) {
  TempDir dir;
  ASSERT_TRUE(RunStores(dir.path(), {{0, 1}}, absl::Seconds(5))[0].ok());
  const absl::Status again = RunStores(dir.path(), {{0, 1}}, absl::Seconds(5))[0];
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_TRUE(Contains(again.message(), "RINGATTN_JOB_ID")) << again;
}

TEST(FileStoreTest, BadArgumentsAndOpenDirectoryAreRefused) {
  TempDir dir;
  auto bad_rank = CreateFileStoreBootstrap(StoreOptions(dir.path(), "j", 2, 2), absl::Seconds(1));
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad_rank.status().message(), "rank")) << bad_rank.status();
  auto no_job = CreateFileStoreBootstrap(StoreOptions(dir.path(), "", 0, 1), absl::Seconds(1));
  EXPECT_EQ(no_job.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_job = CreateFileStoreBootstrap(StoreOptions(dir.path(), "../x", 0, 1), absl::Seconds(1));
  EXPECT_EQ(bad_job.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string open_dir = absl::StrCat(dir.path(), "/open");
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0755), 0);
  ::chmod(open_dir.c_str(), 0755);
  auto open = CreateFileStoreBootstrap(StoreOptions(open_dir, "j", 0, 1), absl::Seconds(1));
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(open.status().message(), "owner-only")) << open.status();
  // The mode in octal, as chmod and ls spell it (it was printed in hex, "01ed").
  EXPECT_TRUE(Contains(open.status().message(), "has mode 0755;")) << open.status();
}

// ---- fault tests: ranks as child processes -----------------------------------

struct Child {
  pid_t pid = -1;
  std::string log;
  int status = 0;
  bool exited = false;
};

// Starts `size` children running scenario `name`, waits for all of them
// (killing leftovers after `limit`), and returns them with their output.
std::vector<Child> RunChildren(const std::string& name, int size, absl::Duration limit,
                               const std::vector<std::string>& extra_env) {
  TempDir store;
  const std::string job = absl::StrCat("fault-", ::getpid(), "-", absl::ToUnixNanos(absl::Now()));
  std::vector<Child> children(size);
  for (int r = 0; r < size; ++r) {
    children[r].log = absl::StrCat(store.path(), "/log-", r);
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const absl::string_view var(*e);
      if (var.substr(0, 9) == "RINGATTN_" || var.substr(0, 5) == "OMPI_" ||
          var.substr(0, 4) == "PMI_" || var.substr(0, 6) == "SLURM_" ||
          var.substr(0, 4) == "UCX_") {
        continue;
      }
      env.emplace_back(*e);
    }
    env.push_back(absl::StrCat("RINGATTN_UCX_TEST_CHILD=", name));
    env.push_back(absl::StrCat("RINGATTN_RANK=", r));
    env.push_back(absl::StrCat("RINGATTN_WORLD_SIZE=", size));
    env.push_back(absl::StrCat("RINGATTN_STORE_DIR=", store.path(), "/store"));
    env.push_back(absl::StrCat("RINGATTN_JOB_ID=", job));
    env.push_back("RINGATTN_TIMEOUT_MS=3000");
    env.push_back("UCX_TLS=tcp,self");
    env.push_back("UCX_NET_DEVICES=lo");
    env.push_back("UCX_WARN_UNUSED_ENV_VARS=n");
    for (const std::string& e : extra_env) env.push_back(e);
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, children[r].log.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    char exe[] = "/proc/self/exe";
    char* argv[] = {exe, nullptr};
    const int rc =
        posix_spawn(&children[r].pid, "/proc/self/exe", &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(rc, 0) << "posix_spawn: " << std::strerror(rc);
  }
  const absl::Time deadline = absl::Now() + limit;
  int left = size;
  while (left > 0) {
    for (Child& c : children) {
      if (c.exited || c.pid <= 0) continue;
      if (::waitpid(c.pid, &c.status, WNOHANG) == c.pid) {
        c.exited = true;
        --left;
      }
    }
    if (left == 0) break;
    if (absl::Now() > deadline) {
      for (Child& c : children) {
        if (!c.exited && c.pid > 0) {
          ADD_FAILURE() << "child " << c.pid << " still running after "
                        << absl::FormatDuration(limit);
          ::kill(c.pid, SIGKILL);
          ::waitpid(c.pid, &c.status, 0);
          c.exited = true;
        }
      }
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  for (Child& c : children) {
    std::ifstream in(c.log);
    std::stringstream ss;
    ss << in.rdbuf();
    c.log = ss.str();
  }
  return children;
}

std::string Explain(const Child& c) {
  std::string how = WIFEXITED(c.status)     ? absl::StrCat("exit ", WEXITSTATUS(c.status))
                    : WIFSIGNALED(c.status) ? absl::StrCat("signal ", WTERMSIG(c.status))
                                            : std::string("?");
  return absl::StrCat(how, ", output:\n", c.log);
}

void ExpectSurvivorsNameDeadPeer(const std::vector<Child>& children, int victim) {
  for (int r = 0; r < static_cast<int>(children.size()); ++r) {
    if (r == victim) continue;
    const Child& c = children[r];
    EXPECT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) != 0)
        << "rank " << r << ": " << Explain(c);
    EXPECT_TRUE(Contains(c.log, absl::StrCat("rank ", victim)))
        << "rank " << r << ": " << Explain(c);
  }
}

TEST(UcxFaultTest, KilledRankFailsEveryOtherRankNamingIt) {
  if (!UcxBuilt()) GTEST_SKIP() << "UCX not built";
  const absl::Time start = absl::Now();
  const auto children = RunChildren("ring", 3, absl::Seconds(15),
                                    {"RINGATTN_TEST_VICTIM=1", "RINGATTN_TEST_HOW=kill"});
  EXPECT_TRUE(WIFSIGNALED(children[1].status)) << Explain(children[1]);
  ExpectSurvivorsNameDeadPeer(children, 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(12));
}

TEST(UcxFaultTest, ExitedRankFailsEveryOtherRankNamingIt) {
  if (!UcxBuilt()) GTEST_SKIP() << "UCX not built";
  const auto children = RunChildren("ring", 4, absl::Seconds(15),
                                    {"RINGATTN_TEST_VICTIM=2", "RINGATTN_TEST_HOW=exit"});
  EXPECT_TRUE(WIFEXITED(children[2].status) && WEXITSTATUS(children[2].status) == 0)
      << Explain(children[2]);
  ExpectSurvivorsNameDeadPeer(children, 2);
}

TEST(UcxFaultTest, HeadDimMismatchIsReportedOnEveryRank) {
  if (!UcxBuilt()) GTEST_SKIP() << "UCX not built";
  const auto children = RunChildren("mismatch", 3, absl::Seconds(15), {});
  for (int r = 0; r < 3; ++r) {
    const Child& c = children[r];
    EXPECT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) != 0) << Explain(c);
    // Ranks 0 and 2 talk to rank 1 directly; every rank sees both shapes
    // or the abort that carries them.
    EXPECT_TRUE(Contains(c.log, "shape [1, 4, 2, 64]") && Contains(c.log, "shape [1, 4, 2, 128]"))
        << "rank " << r << ": " << Explain(c);
  }
}

TEST(UcxFaultTest, WrongWorldSizeFailsInTheBootstrap) {
  if (!UcxBuilt()) GTEST_SKIP() << "UCX not built";
  // Three declared, two started: the file store times out naming rank 2.
  TempDir store;
  const auto children = RunChildren("ring", 2, absl::Seconds(15), {"RINGATTN_TEST_DECLARE=3"});
  for (const Child& c : children) {
    EXPECT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) != 0) << Explain(c);
    EXPECT_TRUE(Contains(c.log, "2 of 3 ranks arrived")) << Explain(c);
    EXPECT_TRUE(Contains(c.log, "missing rank 2")) << Explain(c);
  }
}

// ---- what a child process does -------------------------------------------------

int Fail(int rank, const absl::Status& status) {
  std::fprintf(stderr, "rank %d: error: %s\n", rank, status.ToString().c_str());
  std::fflush(stderr);
  return 1;
}

MessageMeta KvMeta(int step, int64_t head_dim) {
  MessageMeta meta;
  meta.step = step;
  meta.dtype = 1;
  meta.ndim = 4;
  meta.shape[0] = 1;
  meta.shape[1] = 4;
  meta.shape[2] = 2;
  meta.shape[3] = head_dim;
  return meta;
}

int ChildMain(const std::string& scenario) {
  if (const char* declare = std::getenv("RINGATTN_TEST_DECLARE"))
    ::setenv("RINGATTN_WORLD_SIZE", declare, 1);
  absl::StatusOr<absl::Duration> timeout = DefaultTimeout();
  if (!timeout.ok()) return Fail(-1, timeout.status());
  auto bootstrap = CreateBootstrapFromEnvironment(*timeout);
  if (!bootstrap.ok()) return Fail(-1, bootstrap.status());
  const int rank = (*bootstrap)->Rank();
  auto made = CreateUcxCommunicator(bootstrap->get());
  if (!made.ok()) return Fail(rank, made.status());
  Communicator& c = **made;
  const int w = c.Size();
  const int next = (rank + 1) % w, prev = (rank + w - 1) % w;
  const char* victim_text = std::getenv("RINGATTN_TEST_VICTIM");
  const int victim = victim_text ? std::atoi(victim_text) : -1;
  const char* how = std::getenv("RINGATTN_TEST_HOW");
  const int64_t my_dim = scenario == "mismatch" && rank == 1 ? 64 : 128;
  const int steps = scenario == "mismatch" ? 1 : 40;
  std::vector<float> send(4 * 2 * 128, 1.0f * rank), recv(4 * 2 * 128);
  for (int step = 0; step < steps; ++step) {
    if (rank == victim && step == 5) {
      if (std::string(how ? how : "") == "kill") ::raise(SIGKILL);
      std::fflush(stdout);
      std::_Exit(0);  // a plain exit, without a word to the peers
    }
    const int64_t bytes = 4 * 2 * my_dim * static_cast<int64_t>(sizeof(float));
    auto request = c.SendRecv(send.data(), bytes, next, KvMeta(step, my_dim), recv.data(), bytes,
                              prev, KvMeta(step, my_dim));
    absl::Status status = request.status();
    if (status.ok()) status = (*request)->Wait(*timeout);
    if (!status.ok()) {
      c.Abort(status);
      Fail(rank, status);
      absl::SleepFor(absl::Milliseconds(200));  // let the abort go out
      std::_Exit(1);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::fprintf(stderr, "rank %d: finished %d steps\n", rank, steps);
  const absl::Status barrier = (*bootstrap)->Barrier(*timeout);
  if (!barrier.ok()) return Fail(rank, barrier);
  return 0;
}

}  // namespace
}  // namespace ringattn::comm

int main(int argc, char** argv) {
  if (const char* scenario = std::getenv("RINGATTN_UCX_TEST_CHILD")) {
    std::_Exit(ringattn::comm::ChildMain(scenario));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
