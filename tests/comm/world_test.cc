// The launch environment (comm/launch.h: one list of launcher variables,
// torchrun's included; the GPU choice) and the world factory (comm/world.h:
// local worlds, the options it refuses, a remote backend without a launch).
#include "comm/world.h"

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "comm/launch.h"
#include "gtest/gtest.h"

namespace ringattn::comm {
namespace {

using absl::StrContains;

using Vars = std::vector<std::pair<const char*, const char*>>;

// Sets environment variables for one scope (and unsets every launcher's).
class ScopedEnv {
 public:
  explicit ScopedEnv(const Vars& vars) {
    for (const char* name :
         {"RINGATTN_RANK", "RINGATTN_WORLD_SIZE", "RINGATTN_LOCAL_RANK", "RANK", "WORLD_SIZE",
          "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
          "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
          "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS",
          "SLURM_LOCALID", "RINGATTN_JOB_ID", "SLURM_JOB_ID", "PMIX_NAMESPACE",
          "OMPI_MCA_orte_ess_jobid", "TORCHELASTIC_RUN_ID", "RINGATTN_DEVICE"}) {
      Save(name);
      ::unsetenv(name);
    }
    for (const auto& [name, value] : vars) {
      Save(name);
      ::setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }

 private:
  void Save(const char* name) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(DetectLaunchTest, ReadsRingattnAndLauncherVariables) {
  {
    ScopedEnv env(
        {{"RINGATTN_RANK", "2"}, {"RINGATTN_WORLD_SIZE", "4"}, {"RINGATTN_JOB_ID", "abc"}});
    auto info = DetectLaunch();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_TRUE(info->launched);
    EXPECT_EQ(info->rank, 2);
    EXPECT_EQ(info->size, 4);
    EXPECT_EQ(info->local_rank, -1);
    EXPECT_EQ(info->job_id, "abc");
  }
  {
    ScopedEnv env({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "99"},
                   {"SLURM_LOCALID", "1"}});
    auto info = DetectLaunch();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->rank, 1);
    EXPECT_EQ(info->local_rank, 1);
    EXPECT_EQ(info->job_id, "slurm-99.0");
    EXPECT_FALSE(info->under_mpirun);
  }
  {
    ScopedEnv env({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
    auto info = DetectLaunch();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->rank, 3);
    EXPECT_EQ(info->local_rank, 1);
    EXPECT_TRUE(info->under_mpirun);
  }
  {
    ScopedEnv env({});
    auto info = DetectLaunch();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_FALSE(info->launched);
    EXPECT_EQ(info->local_rank, -1);
  }
}

TEST(DetectLaunchTest, TorchrunUnderSlurmIsTorchrunsRank) {
  // torchrun started by srun: one Slurm task per node, several ranks each.
  ScopedEnv env({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
                 {"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                 {"TORCHELASTIC_RUN_ID", "r7"}});
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->rank, 5);
  EXPECT_EQ(info->size, 8);
  EXPECT_EQ(info->local_rank, 1);
  EXPECT_EQ(info->source, "RANK/WORLD_SIZE");
  EXPECT_EQ(info->job_id, "torch-r7");
}

TEST(DetectLaunchTest, LocalRankFromAnotherLauncherWhenTheFirstHasNone) {
  ScopedEnv env({{"RINGATTN_RANK", "0"}, {"RINGATTN_WORLD_SIZE", "2"}, {"MPI_LOCALRANKID", "1"}});
  auto info = DetectLaunch();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->local_rank, 1);
}

TEST(DetectLaunchTest, GarbageIsAnErrorNamingTheVariable) {
  const std::vector<Vars> cases = {
      {{"RINGATTN_RANK", "abc"}, {"RINGATTN_WORLD_SIZE", "2"}},
      {{"RINGATTN_RANK", "-1"}, {"RINGATTN_WORLD_SIZE", "2"}},
      {{"RINGATTN_RANK", "0"}, {"RINGATTN_WORLD_SIZE", "0"}},
      {{"RINGATTN_RANK", "1"}, {"RINGATTN_WORLD_SIZE", "two"}},
      {{"RINGATTN_RANK", "3"}, {"RINGATTN_WORLD_SIZE", "2"}},
      {{"RINGATTN_RANK", "1"}},
      {{"OMPI_COMM_WORLD_RANK", "1 "}, {"OMPI_COMM_WORLD_SIZE", "2"}},
      {{"RANK", "1"}},
      {{"LOCAL_RANK", "x"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}},
      {{"SLURM_LOCALID", "-2"}},
  };
  for (const auto& vars : cases) {
    ScopedEnv env(vars);
    auto info = DetectLaunch();
    ASSERT_FALSE(info.ok()) << vars[0].first << "=" << vars[0].second;
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(StrContains(info.status().message(), vars[0].first) ||
                StrContains(info.status().message(), "WORLD_SIZE"))
        << info.status();
  }
}

TEST(ChooseDeviceTest, EnvironmentThenLocalRankThenFallback) {
  LaunchInfo launch;
  {
    ScopedEnv env({});
    EXPECT_EQ(*ChooseDevice(launch, 4, 6), 2);  // fallback modulo the GPUs
    launch.local_rank = 5;
    EXPECT_EQ(*ChooseDevice(launch, 4), 1);
    EXPECT_EQ(ChooseDevice(launch, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    ScopedEnv env(Vars{{"RINGATTN_DEVICE", "3"}});
    EXPECT_EQ(*ChooseDevice(launch, 4), 3);
  }
  for (const char* bad : {"4", "-1", "gpu0", ""}) {
    ScopedEnv env(Vars{{"RINGATTN_DEVICE", bad}});
    auto d = ChooseDevice(launch, 4);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_TRUE(StrContains(d.status().message(), "RINGATTN_DEVICE")) << d.status();
  }
}

TEST(ResolveTimeoutTest, OptionThenEnvironmentThenDefault) {
  {
    ScopedEnv env(Vars{{"RINGATTN_TIMEOUT_MS", "1500"}});
    EXPECT_EQ(*ResolveTimeout(absl::Seconds(3), "t"), absl::Seconds(3));
    EXPECT_EQ(*ResolveTimeout(absl::ZeroDuration(), "t"), absl::Milliseconds(1500));
    auto bad = ResolveTimeout(absl::Seconds(-1), "my_timeout");
    ASSERT_FALSE(bad.ok());
    EXPECT_TRUE(StrContains(bad.status().message(), "my_timeout")) << bad.status();
  }
  {
    ScopedEnv env(Vars{{"RINGATTN_TIMEOUT_MS", "soon"}});
    auto bad = ResolveTimeout(absl::ZeroDuration(), "t");
    ASSERT_FALSE(bad.ok());
    EXPECT_TRUE(StrContains(bad.status().message(), "RINGATTN_TIMEOUT_MS")) << bad.status();
  }
}

TEST(WorldTest, LocalWorldDrivesEveryRank) {
  WorldOptions o;
  o.backend = "local";
  o.ranks = 3;
  o.timeout = absl::Seconds(7);
  auto world = World::Create(o);
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ((*world)->size(), 3);
  EXPECT_EQ((*world)->timeout(), absl::Seconds(7));
  EXPECT_FALSE((*world)->one_rank_per_process());
  ASSERT_EQ((*world)->comms().size(), 3u);
  EXPECT_TRUE((*world)->root());
  EXPECT_TRUE(StrContains((*world)->Describe(), "local: 3 ranks"));
  std::vector<int> seen(3, 0);
  ASSERT_TRUE((*world)->Run([&](Communicator& c) {
    seen[c.Rank()] += 1;
    return c.Barrier(absl::Seconds(5));
  }).ok());
  EXPECT_EQ(seen, std::vector<int>({1, 1, 1}));
  // A rank's error is the world's.
  absl::Status s = (*world)->Run([](Communicator& c) {
    return c.Rank() == 1 ? absl::InternalError("rank 1 broke") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
}

TEST(WorldTest, RefusesWhatItCannotBuild) {
  ScopedEnv env({});
  auto expect = [](WorldOptions o, absl::StatusCode code, const char* part) {
    auto world = World::Create(o);
    ASSERT_FALSE(world.ok()) << o.backend;
    EXPECT_EQ(world.status().code(), code) << world.status();
    EXPECT_TRUE(StrContains(world.status().message(), part)) << world.status();
  };
  WorldOptions o;
  o.backend = "carrier-pigeon";
  expect(o, absl::StatusCode::kUnimplemented, "carrier-pigeon");
  o.backend = "local";
  o.ranks = 0;
  expect(o, absl::StatusCode::kInvalidArgument, "ranks");
  o.ranks = 2;
  o.timeout = absl::Seconds(-3);
  expect(o, absl::StatusCode::kInvalidArgument, "timeout");
  o.timeout = absl::ZeroDuration();
  o.bootstrap = BootstrapKind::kMpi;
  expect(o, absl::StatusCode::kInvalidArgument, "in-process");
  if (BackendBuilt("ucx")) {
    WorldOptions u;
    u.backend = "ucx";
    u.ranks = 0;
    expect(u, absl::StatusCode::kFailedPrecondition, "no launcher found");
    u.bootstrap = BootstrapKind::kExternal;
    expect(u, absl::StatusCode::kInvalidArgument, "external_bootstrap");
    u.bootstrap = BootstrapKind::kInProcess;
    expect(u, absl::StatusCode::kInvalidArgument, "one rank per process");
  }
}

TEST(WorldTest, ExternalBootstrapSetsTheWorld) {
  if (!BackendBuilt("ucx")) GTEST_SKIP() << "UCX not built";
  ScopedEnv env({});
  std::unique_ptr<Bootstrap> self = CreateSelfBootstrap();
  WorldOptions o;
  o.backend = "ucx";
  o.ranks = 0;
  o.bootstrap = BootstrapKind::kExternal;
  o.external_bootstrap = self.get();
  auto world = World::Create(o);
  ASSERT_TRUE(world.ok()) << world.status();
  EXPECT_EQ((*world)->size(), 1);
  EXPECT_TRUE((*world)->one_rank_per_process());
  EXPECT_TRUE(StrContains((*world)->Describe(), "bootstrap self")) << (*world)->Describe();
  o.ranks = 2;
  auto mismatch = World::Create(o);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(StrContains(mismatch.status().message(), "does not match the launched world size"))
      << mismatch.status();
}

}  // namespace
}  // namespace ringattn::comm
