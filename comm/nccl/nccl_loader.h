// libnccl, opened at run time (dlopen): RINGATTN_NCCL_LIBRARY when set,
// else libnccl.so.2 on the loader's path, else the library CMake found
// (RINGATTN_NCCL_LIBRARY_PATH), so that every binary linking the nccl
// communicator starts on machines without NCCL and --comm nccl then says
// why. The entry points the communicator calls are bound once into an
// NcclApi; a library older than kMinNcclVersion is refused.
#pragma once

#include <nccl.h>

#include <string>

#include "absl/status/statusor.h"

namespace ringattn::comm {

// Non-blocking communicators and ncclCommGetAsyncError's ncclInProgress.
constexpr int kMinNcclVersion = NCCL_VERSION(2, 14, 0);

// The NCCL functions the communicator calls.
struct NcclApi {
  decltype(&ncclGetVersion) GetVersion = nullptr;
  decltype(&ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&ncclCommInitRankConfig) CommInitRankConfig = nullptr;
  decltype(&ncclCommFinalize) CommFinalize = nullptr;
  decltype(&ncclCommDestroy) CommDestroy = nullptr;
  decltype(&ncclCommAbort) CommAbort = nullptr;
  decltype(&ncclCommGetAsyncError) CommGetAsyncError = nullptr;
  decltype(&ncclGetErrorString) GetErrorString = nullptr;
  decltype(&ncclGetLastError) GetLastError = nullptr;
  decltype(&ncclGroupStart) GroupStart = nullptr;
  decltype(&ncclGroupEnd) GroupEnd = nullptr;
  decltype(&ncclSend) Send = nullptr;
  decltype(&ncclRecv) Recv = nullptr;
  decltype(&ncclAllReduce) AllReduce = nullptr;
  // Optional (NCCL 2.27 and newer): stops a communicator's kernels without
  // freeing anything yet.
  ncclResult_t (*CommRevoke)(ncclComm_t, int) = nullptr;
  int version = 0;
  std::string library;
};

// The loaded library, bound on first use (thread safe); FailedPrecondition
// naming what is missing.
absl::StatusOr<const NcclApi*> Nccl();

// "2.28.3" from NCCL's version code.
std::string VersionString(int code);

}  // namespace ringattn::comm
