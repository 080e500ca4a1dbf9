// libnccl, opened at run time: see nccl_loader.h.
#include "comm/nccl/nccl_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#ifndef RINGATTN_NCCL_LIBRARY_PATH
#define RINGATTN_NCCL_LIBRARY_PATH ""
#endif

namespace ringattn::comm {

std::string VersionString(int code) {
  if (code < 10000) return absl::StrCat(code / 1000, ".", (code % 1000) / 100, ".", code % 100);
  return absl::StrCat(code / 10000, ".", (code % 10000) / 100, ".", code % 100);
}

absl::StatusOr<const NcclApi*> Nccl() {
  static std::once_flag once;
  static NcclApi api;
  static absl::Status status;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("RINGATTN_NCCL_LIBRARY"); env != nullptr && *env != '\0') {
      candidates.push_back(env);
    } else {
      candidates.push_back("libnccl.so.2");
      const std::string built = RINGATTN_NCCL_LIBRARY_PATH;
      if (!built.empty()) candidates.push_back(built);
    }
    void* handle = nullptr;
    std::vector<std::string> failures;
    for (const std::string& name : candidates) {
      handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) {
        api.library = name;
        break;
      }
      const char* why = dlerror();
      failures.push_back(why != nullptr ? why : name);
    }
    if (handle == nullptr) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "nccl: cannot load the NCCL library (", absl::StrJoin(failures, "; "),
          "): install NCCL (libnccl2) or set RINGATTN_NCCL_LIBRARY to libnccl.so.2's path"));
      return;
    }
    std::vector<std::string> missing;
    auto bind = [&](auto& fn, const char* symbol) {
      void* p = dlsym(handle, symbol);
      if (p == nullptr) missing.push_back(symbol);
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    bind(api.GetVersion, "ncclGetVersion");
    bind(api.GetUniqueId, "ncclGetUniqueId");
    bind(api.CommInitRankConfig, "ncclCommInitRankConfig");
    bind(api.CommFinalize, "ncclCommFinalize");
    bind(api.CommDestroy, "ncclCommDestroy");
    bind(api.CommAbort, "ncclCommAbort");
    bind(api.CommGetAsyncError, "ncclCommGetAsyncError");
    bind(api.GetErrorString, "ncclGetErrorString");
    bind(api.GetLastError, "ncclGetLastError");
    bind(api.GroupStart, "ncclGroupStart");
    bind(api.GroupEnd, "ncclGroupEnd");
    bind(api.Send, "ncclSend");
    bind(api.Recv, "ncclRecv");
    bind(api.AllReduce, "ncclAllReduce");
    api.CommRevoke =
        reinterpret_cast<ncclResult_t (*)(ncclComm_t, int)>(dlsym(handle, "ncclCommRevoke"));
    if (!missing.empty()) {
      status = absl::FailedPreconditionError(
          absl::StrCat("nccl: ", api.library, " lacks ", absl::StrJoin(missing, ", "),
                       ": the nccl backend needs NCCL ", VersionString(kMinNcclVersion),
                       " or newer"));
      return;
    }
    if (api.GetVersion(&api.version) != ncclSuccess || api.version < kMinNcclVersion) {
      status = absl::FailedPreconditionError(
          absl::StrCat("nccl: ", api.library, " is NCCL ", VersionString(api.version),
                       "; the nccl backend needs ", VersionString(kMinNcclVersion),
                       " or newer (non-blocking communicators)"));
    }
  });
  if (!status.ok()) return status;
  return &api;
}

}  // namespace ringattn::comm
