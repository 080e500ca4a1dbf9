// A small, strict reader and writer of NumPy .npy files for the CLI tools.
// Only little-endian float32 ('<f4') in C order is accepted; format versions
// 1.0, 2.0 and 3.0 are read, and files are written as NumPy's own np.save
// would write them (version 1.0, or 2.0 when the header does not fit).
// Every refusal names the file and the problem, and all size arithmetic is
// checked for int64 overflow before anything is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringattn::tools {

struct NpyArray {
  std::vector<int64_t> shape;  // () for a scalar, which holds one element
  std::vector<float> data;     // C order, product(shape) elements
};

// Reads a '<f4', C-order .npy file. A missing or unreadable file gives the
// errno's status (NotFound, PermissionDenied, ...); a file that is not such
// an array gives InvalidArgument. Messages start with "<path>: ".
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// Writes product(shape) floats from `data` (may be null when that is zero)
// as a '<f4' .npy file, byte for byte as np.save would. The bytes go to a
// temporary file in the same directory which is then renamed over `path`,
// so a failure leaves neither a partial file nor a changed `path` behind.
absl::Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                      const float* data);

// "()", "(3,)", "(2, 3)": NumPy's spelling of a shape.
std::string ShapeToString(const std::vector<int64_t>& shape);

// InvalidArgument naming `path` with the expected and actual shapes unless
// `a.shape` matches `expected`, where -1 matches any size of that dimension.
absl::Status CheckShape(const NpyArray& a, const std::string& path,
                        const std::vector<int64_t>& expected);

}  // namespace ringattn::tools
