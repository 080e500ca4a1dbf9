// A small, strict reader and writer of NumPy .npy files for the CLI tools,
// and the all-or-nothing output sets they write.
// Only little-endian float32 ('<f4') in C order is accepted (int32 or
// int64 by ReadNpyInt, bool or uint8 by ReadNpyBytes); format versions
// 1.0, 2.0 and 3.0 are read, and files are written as NumPy's own np.save
// would write them (version 1.0, or 2.0 when the header does not fit).
// Every refusal names the file and the problem, and all size arithmetic is
// checked for int64 overflow before anything is allocated.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ringattn::tools {

struct NpyArray {
  std::vector<int64_t> shape;  // () for a scalar, which holds one element
  std::vector<float> data;     // C order, product(shape) elements
};

// Reads a '<f4', C-order .npy file. A missing or unreadable file gives the
// errno's status (NotFound, PermissionDenied, ...); a file that is not such
// an array gives InvalidArgument. Messages start with "<path>: ".
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// A '<f4', C-order .npy file opened and checked as ReadNpy checks it
// (header, sizes, the data filling the file exactly) but not read:
// ReadElements copies any run of its elements (pread), so that a tool reads
// each rank's rows straight into the buffers the kernels use, with no copy
// of the whole array.
class NpyFloatFile {
 public:
  static absl::StatusOr<NpyFloatFile> Open(const std::string& path);
  NpyFloatFile(NpyFloatFile&& other) noexcept;
  NpyFloatFile& operator=(NpyFloatFile&& other) noexcept;
  ~NpyFloatFile();

  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& path() const { return path_; }
  // Elements [first, first + count) in C order into dst.
  absl::Status ReadElements(int64_t first, int64_t count, float* dst) const;

 private:
  NpyFloatFile() = default;
  int fd_ = -1;
  std::string path_;
  std::vector<int64_t> shape_;
  int64_t offset_ = 0, count_ = 0;
};

// An integer array ('<i4' or '<i8', C order; e.g. cu_seqlens), widened to
// int64. The same checks and messages as ReadNpy.
struct NpyIntArray {
  std::vector<int64_t> shape;
  std::vector<int64_t> data;
};
absl::StatusOr<NpyIntArray> ReadNpyInt(const std::string& path);

// A bool or uint8 array ('|b1' or '|u1'; e.g. a block mask), one byte per
// element as stored. The same checks and messages as ReadNpy.
struct NpyByteArray {
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};
absl::StatusOr<NpyByteArray> ReadNpyBytes(const std::string& path);

// Writes product(shape) floats from `data` (may be null when that is zero)
// as a '<f4' .npy file, byte for byte as np.save would: an OutputFiles of
// one file, so a failure leaves neither a partial file nor a changed `path`.
absl::Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
                      const float* data);

// A set of output files written all or nothing: each Add* writes a
// temporary file beside its target (and fsyncs it); Commit() removes the
// `stale` paths (outputs of an earlier run that this set does not write)
// and renames every temporary onto its target. A failed Add* (a full disk,
// a write error) leaves every target as it was, and the destructor removes
// the temporaries of a set that was not committed, so an earlier complete
// set stays intact.
class OutputFiles {
 public:
  OutputFiles() = default;
  OutputFiles(const OutputFiles&) = delete;
  OutputFiles& operator=(const OutputFiles&) = delete;
  ~OutputFiles();

  absl::Status AddNpy(const std::string& path, const std::vector<int64_t>& shape,
                      const float* data);
  // The same file as AddNpy, its elements produced in C-order chunks by
  // produce(first, count, dst): no whole-array buffer is needed.
  absl::Status AddNpyFrom(const std::string& path, const std::vector<int64_t>& shape,
                          const std::function<void(int64_t first, int64_t count, float* dst)>& produce);
  absl::Status AddText(const std::string& path, absl::string_view text);
  absl::Status Commit(const std::vector<std::string>& stale = {});

 private:
  struct Staged {
    std::string tmp, path;
  };
  absl::Status Stage(const std::string& path, const std::function<bool(int fd)>& write);
  std::vector<Staged> staged_;
};

// Whether a file can be created at `path` (its directory exists and is
// writable, and `path` is not a directory), by creating and removing a
// temporary beside it: for an output flag, checked before the work.
// Errors start with "<flag> <path>".
absl::Status CheckCanCreate(absl::string_view flag, const std::string& path);

// An output directory for `flag`: made if missing (its parent must exist),
// refused if it is a file or not writable. Errors start with "<flag> <dir>".
absl::Status PrepareOutDir(absl::string_view flag, const std::string& dir);

// "()", "(3,)", "(2, 3)": NumPy's spelling of a shape.
std::string ShapeToString(const std::vector<int64_t>& shape);

// InvalidArgument naming `path` with the expected and actual shapes unless
// `a.shape` matches `expected`, where -1 matches any size of that dimension.
absl::Status CheckShape(const NpyArray& a, const std::string& path,
                        const std::vector<int64_t>& expected);
absl::Status CheckShape(const std::vector<int64_t>& shape, const std::string& path,
                        const std::vector<int64_t>& expected);

}  // namespace ringattn::tools
