// libFuzzer target: the .npy reader (tools/npy.h) on arbitrary bytes. It
// must refuse or read, never crash, hang or allocate what the file cannot
// hold; what it reads must write back and read again identically. The
// integer reader (ReadNpyInt) and the row reader (NpyFloatFile) get the same bytes.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tools/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/ringattn_fuzz_npy_" + std::to_string(getpid()) + ".npy";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  // The integer reader (cu_seqlens) on the same bytes: refuse or read.
  auto ints = ringattn::tools::ReadNpyInt(path);
  if (ints.ok()) {
    int64_t count = 1;
    for (int64_t d : ints->shape) count *= d;
    if (static_cast<int64_t>(ints->data.size()) != count) __builtin_trap();
  }
  auto a = ringattn::tools::ReadNpy(path);
  // The file opener ringattn-run reads rows with agrees with ReadNpy: the
  // same verdict, and the same elements through ReadElements.
  auto rows = ringattn::tools::NpyFloatFile::Open(path);
  if (rows.ok() != a.ok()) __builtin_trap();
  if (rows.ok()) {
    if (rows->shape() != a->shape) __builtin_trap();
    std::vector<float> all(a->data.size());
    if (!rows->ReadElements(0, static_cast<int64_t>(all.size()), all.data()).ok()) __builtin_trap();
    if (!all.empty() &&
        std::memcmp(all.data(), a->data.data(), all.size() * sizeof(float)) != 0) {
      __builtin_trap();
    }
    if (rows->ReadElements(1, static_cast<int64_t>(all.size()), all.data()).ok()) __builtin_trap();
  }
  if (a.ok()) {
    if (!ringattn::tools::WriteNpy(path, a->shape, a->data.data()).ok()) __builtin_trap();
    auto b = ringattn::tools::ReadNpy(path);
    if (!b.ok() || b->shape != a->shape || b->data.size() != a->data.size()) __builtin_trap();
  }
  std::remove(path.c_str());
  return 0;
}
