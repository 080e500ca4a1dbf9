// Small helpers shared by the communicator backends (local, ucx, nccl);
// not part of the interface the runtime sees (communicator.h).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "comm/communicator.h"

namespace ringattn::comm {

// "step 5 (kind 0)": where a message sits in the runtime's protocol.
inline std::string Describe(const MessageHeader& h) {
  return absl::StrCat("step ", h.meta.step, " (kind ", h.meta.kind, ")");
}

// Waits on `cv` until pred() holds or `timeout` elapsed; returns pred().
// A timeout of a year or more waits forever (no overflow of the deadline).
template <typename Pred>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
             absl::Duration timeout, Pred pred) {
  if (timeout >= absl::Hours(24 * 365)) {
    cv.wait(lock, pred);
    return true;
  }
  if (timeout <= absl::ZeroDuration()) return pred();
  return cv.wait_until(lock, std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout),
                       pred);
}

}  // namespace ringattn::comm
