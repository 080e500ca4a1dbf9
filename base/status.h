// Status plumbing shared by every room: RETURN_IF_ERROR / ASSIGN_OR_RETURN
// and a helper that formats "argument: expected X, got Y" errors.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define RINGATTN_CONCAT_INNER(a, b) a##b
#define RINGATTN_CONCAT(a, b) RINGATTN_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the caller if not OK.
#define RETURN_IF_ERROR(expr)                                    \
  do {                                                           \
    ::absl::Status ringattn_status_ = (expr);                    \
    if (!ringattn_status_.ok()) return ringattn_status_;         \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())` binds x to F()'s value or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  RINGATTN_ASSIGN_OR_RETURN_IMPL(RINGATTN_CONCAT(ringattn_sor_, __LINE__), lhs, expr)
#define RINGATTN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

namespace ringattn {

// InvalidArgument naming the argument with the expected and actual values.
template <typename E, typename A>
absl::Status ArgError(absl::string_view arg, const E& expected, const A& actual) {
  return absl::InvalidArgumentError(
      absl::StrCat(arg, ": expected ", expected, ", got ", actual));
}

}  // namespace ringattn
