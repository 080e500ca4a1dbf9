// The file-store bootstrap, the one-rank bootstrap, and the choice between
// them and MPI from the launch environment (comm/launch.h).
//
// File store layout, under <dir>/job-<job id>/ (0700):
//   rank-<r>.claim         created O_EXCL at start: a second process with the
//                          same rank (or a stale store of a job with the same
//                          id) is refused, naming the first claimant
//   round-<n>.rank-<r>     the blob of rank r for the n-th collective, with a
//                          one-line header (job, world size, rank, round,
//                          length); written to a temporary name and renamed
// A rank deletes its file of round n-1 once round n completed (every rank
// wrote round n, so every rank has read round n-1).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/status.h"
#include "comm/bootstrap/bootstrap.h"
#include "comm/communicator.h"
#include "comm/launch.h"

namespace ringattn::comm {
namespace {

constexpr const char* kMagic = "RATTSTORE1";

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v;
}

std::string Errno(const std::string& what) {
  return absl::StrCat(what, ": ", std::strerror(errno));
}

absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(Errno(absl::StrCat("file store: write ", path)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// Owner-only directory: create it 0700 or check that it is.
absl::Status EnsurePrivateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(Errno(absl::StrCat("file store: mkdir ", dir)));
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(Errno(absl::StrCat("file store: stat ", dir)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("file store: ", dir, " is not a directory (or is a symbolic link)"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat("file store: ", dir, " is owned by uid ",
                                                      st.st_uid, ", not by this user (uid ",
                                                      ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("file store: %s has mode %04o; it must be owner-only (chmod 700)", dir,
                        st.st_mode & 0777));
  }
  return absl::OkStatus();
}

std::string Hostname() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "?";
  return host;
}

class FileStore final : public Bootstrap {
 public:
  FileStore(FileStoreOptions options, std::string job_dir)
      : options_(std::move(options)), job_dir_(std::move(job_dir)) {}

  int Rank() const override { return options_.rank; }
  int Size() const override { return options_.size; }
  std::string Name() const override { return "file"; }

  absl::Status Claim() {
    const std::string path = absl::StrCat(job_dir_, "/rank-", options_.rank, ".claim");
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) {
        std::string who;
        ReadFile(path, &who);
        return absl::AlreadyExistsError(
            absl::StrCat("file store: duplicate rank ", options_.rank, " in job \"",
                         options_.job_id, "\": already claimed by ",
                         who.empty() ? std::string("another process") : who, " (", path,
                         "; a second process with this rank, or a stale store of an earlier job "
                         "with the same RINGATTN_JOB_ID)"));
      }
      return absl::FailedPreconditionError(Errno(absl::StrCat("file store: create ", path)));
    }
    const std::string me = absl::StrCat("pid ", ::getpid(), " on host ", Hostname(),
                                        " (world size ", options_.size, ")");
    const absl::Status written = WriteAll(fd, me, path);
    ::close(fd);
    return written;
  }

  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration timeout) override {
    const int64_t round = round_++;
    const int w = options_.size;
    const int me = options_.rank;
    // Write mine: temporary name, then rename.
    const std::string path = FilePath(round, me);
    const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
    const std::string data = absl::StrCat(kMagic, " ", options_.job_id, " ", w, " ", me, " ", round,
                                          " ", mine.size(), "\n", mine);
    const int fd = ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
      return absl::FailedPreconditionError(Errno(absl::StrCat("file store: create ", tmp)));
    absl::Status written = WriteAll(fd, data, tmp);
    ::close(fd);
    if (written.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
      written = absl::InternalError(Errno(absl::StrCat("file store: rename to ", path)));
    }
    if (!written.ok()) {
      ::unlink(tmp.c_str());
      return written;
    }
    // Read everyone's, polling until all are there or the time is up.
    std::vector<std::string> blobs(w);
    std::vector<bool> have(w, false);
    int arrived = 0;
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      for (int r = 0; r < w; ++r) {
        if (have[r]) continue;
        std::string content;
        if (!ReadFile(FilePath(round, r), &content)) continue;
        ASSIGN_OR_RETURN(blobs[r], Parse(content, round, r));
        have[r] = true;
        ++arrived;
      }
      if (arrived == w) break;
      if (absl::Now() >= deadline) {
        std::vector<int> missing;
        for (int r = 0; r < w; ++r) {
          if (!have[r]) missing.push_back(r);
        }
        return absl::DeadlineExceededError(absl::StrCat(
            "file store ", job_dir_, " (rank ", me, ", collective ", round, "): ", arrived, " of ",
            w, " ranks arrived within ", absl::FormatDuration(timeout), "; missing rank",
            missing.size() == 1 ? " " : "s ", absl::StrJoin(missing, ", "),
            " (is the world size right, and did every rank start?)"));
      }
      absl::SleepFor(options_.poll);
    }
    if (round > 0) ::unlink(FilePath(round - 1, me).c_str());
    return blobs;
  }

  absl::Status Barrier(absl::Duration timeout) override {
    return AllGather(std::string(), timeout).status();
  }

 private:
  std::string FilePath(int64_t round, int rank) const {
    return absl::StrCat(job_dir_, "/round-", round, ".rank-", rank);
  }

  absl::StatusOr<std::string> Parse(const std::string& content, int64_t round, int rank) const {
    const size_t eol = content.find('\n');
    std::istringstream head(content.substr(0, eol == std::string::npos ? 0 : eol));
    std::string magic, job;
    int64_t size = -1, got_rank = -1, got_round = -1, length = -1;
    head >> magic >> job >> size >> got_rank >> got_round >> length;
    const std::string where = absl::StrCat("file store ", FilePath(round, rank));
    if (eol == std::string::npos || magic != kMagic || !head || length < 0 ||
        content.size() - eol - 1 != static_cast<size_t>(length)) {
      return absl::DataLossError(absl::StrCat(where, ": not a ringattn store file"));
    }
    if (job != options_.job_id || got_rank != rank || got_round != round) {
      return absl::FailedPreconditionError(absl::StrCat(
          where, ": belongs to job \"", job, "\" rank ", got_rank, " round ", got_round,
          ", not job \"", options_.job_id, "\" rank ", rank, " round ", round));
    }
    if (size != options_.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("file store: world size mismatch: rank ", rank, " declares world size ",
                       size, ", rank ", options_.rank, " (this process) declares ", options_.size));
    }
    return content.substr(eol + 1);
  }

  const FileStoreOptions options_;
  const std::string job_dir_;
  int64_t round_ = 0;
};

class SelfBootstrap final : public Bootstrap {
 public:
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  std::string Name() const override { return "self"; }
  absl::StatusOr<std::vector<std::string>> AllGather(const std::string& mine,
                                                     absl::Duration) override {
    return std::vector<std::string>{mine};
  }
  absl::Status Barrier(absl::Duration) override { return absl::OkStatus(); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Bootstrap>> CreateFileStoreBootstrap(const FileStoreOptions& options,
                                                                    absl::Duration timeout) {
  if (options.dir.empty()) {
    return absl::InvalidArgumentError(
        "file store: no directory (set RINGATTN_STORE_DIR to a directory on a filesystem that "
        "every rank sees)");
  }
  if (options.job_id.empty()) {
    return absl::InvalidArgumentError(
        "file store: no job id (set RINGATTN_JOB_ID, the same for every rank of this job and "
        "different from earlier jobs; srun and mpirun provide one)");
  }
  for (char ch : options.job_id) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '@';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("file store: job id \"", options.job_id,
                       "\": only letters, digits and . _ - @ are allowed"));
    }
  }
  if (options.size < 1) return ArgError("file store: world size", ">= 1", options.size);
  if (options.rank < 0 || options.rank >= options.size) {
    return ArgError("file store: rank", absl::StrCat("a rank in [0, ", options.size, ")"),
                    options.rank);
  }
  RETURN_IF_ERROR(EnsurePrivateDir(options.dir));
  const std::string job_dir = absl::StrCat(options.dir, "/job-", options.job_id);
  RETURN_IF_ERROR(EnsurePrivateDir(job_dir));
  auto store = std::make_unique<FileStore>(options, job_dir);
  RETURN_IF_ERROR(store->Claim());
  // The first collective checks everyone's world size and presence.
  RETURN_IF_ERROR(store->Barrier(timeout));
  return std::unique_ptr<Bootstrap>(std::move(store));
}

std::unique_ptr<Bootstrap> CreateSelfBootstrap() { return std::make_unique<SelfBootstrap>(); }

absl::StatusOr<std::unique_ptr<Bootstrap>> CreateBootstrapFromEnvironment(absl::Duration timeout) {
  ASSIGN_OR_RETURN(LaunchInfo info, DetectLaunch());
  if (!info.launched) return CreateSelfBootstrap();
  const char* choice = Env("RINGATTN_BOOTSTRAP");
  const std::string want = choice ? choice : "";
  if (!want.empty() && want != "mpi" && want != "file") {
    return absl::InvalidArgumentError(
        absl::StrCat("RINGATTN_BOOTSTRAP: expected \"mpi\" or \"file\", got \"", want, "\""));
  }
  if (want == "mpi" || (want.empty() && info.under_mpirun && MpiBootstrapBuilt())) {
    ASSIGN_OR_RETURN(std::unique_ptr<Bootstrap> mpi, CreateMpiBootstrap(timeout));
    if (mpi->Size() != info.size || mpi->Rank() != info.rank) {
      return absl::InvalidArgumentError(absl::StrCat("MPI says rank ", mpi->Rank(), " of ",
                                                     mpi->Size(), ", but ", info.source,
                                                     " say rank ", info.rank, " of ", info.size));
    }
    return mpi;
  }
  FileStoreOptions options;
  const char* dir = Env("RINGATTN_STORE_DIR");
  options.dir = dir ? dir : "";
  options.job_id = info.job_id;
  options.rank = info.rank;
  options.size = info.size;
  return CreateFileStoreBootstrap(options, timeout);
}

}  // namespace ringattn::comm
