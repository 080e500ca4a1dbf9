// The mask flags, declared once for every CLI tool (ringattn-bench,
// ringattn-run, ringattn-eval): --causal, --window LEFT,RIGHT (flash-attn
// semantics, -1 = unbounded) and --mask prefix-lm:P | sink:N. Packed
// documents come from each tool's own source (ringattn-run --cu-seqlens
// FILE, ringattn-bench --docs) and are attached with Mask::WithDocuments.
// mask_flags.cc is compiled into each tool (tools/CMakeLists.txt,
// ringattn_mask_flags) because the tools differ in one default: the bench
// and the eval measure causal attention unless told otherwise, ringattn-run
// computes exactly what it is asked. A new kind of mask (block masks next)
// gets its flag here and its place in MaskFromFlags, and every tool has it.
#pragma once

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "attention/mask.h"

ABSL_DECLARE_FLAG(bool, causal);
ABSL_DECLARE_FLAG(std::string, window);
ABSL_DECLARE_FLAG(std::string, mask);

namespace ringattn::tools {

// The mask the flags describe; a bad value is an InvalidArgument naming
// the flag.
absl::StatusOr<Mask> MaskFromFlags();

// Whether --window was given (the eval picks its own windows otherwise).
bool WindowFlagGiven();

}  // namespace ringattn::tools
