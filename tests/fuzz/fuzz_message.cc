// libFuzzer target: what arrives from a peer. The bytes are a message
// header (comm/communicator.h) followed by a payload, and an options digest
// (runtime/validate.h): the checks must refuse or pass, never crash, and
// printing them must be safe whatever the fields hold.
#include <cstdint>
#include <cstring>

#include "comm/communicator.h"
#include "runtime/validate.h"

using ringattn::comm::MessageHeader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MessageHeader got;
  if (size < sizeof(got)) return 0;
  std::memcpy(&got, data, sizeof(got));
  const uint8_t* payload = data + sizeof(got);
  const size_t payload_size = size - sizeof(got);
  MessageHeader expected;
  expected.src_rank = 1;
  expected.dst_rank = 0;
  expected.bytes = static_cast<int64_t>(payload_size);
  expected.meta.ndim = 1;
  expected.meta.shape[0] = static_cast<int64_t>(payload_size);
  (void)ringattn::comm::HeaderToString(got);
  (void)ringattn::comm::CheckHeaderIntact(got);
  const bool matches = ringattn::comm::CheckHeader(got, expected).ok();
  if (matches && got.bytes != expected.bytes) __builtin_trap();  // a size slipped through
  if (matches) (void)ringattn::comm::CheckPayloadIntact(got, payload);
  // A sealed copy of a matching header is intact, and its payload too.
  MessageHeader sealed = expected;
  ringattn::comm::SealHeader(&sealed, payload);
  if (!ringattn::comm::CheckHeaderIntact(sealed).ok() ||
      !ringattn::comm::CheckPayloadIntact(sealed, payload).ok()) {
    __builtin_trap();
  }
  ringattn::OptionsDigest theirs;
  std::memcpy(&theirs, data, std::min(size, sizeof(theirs)));
  const ringattn::OptionsDigest mine;
  (void)ringattn::CompareDigests(mine, 0, theirs, 1);
  if (!ringattn::CompareDigests(theirs, 0, theirs, 1).ok() && theirs.magic == mine.magic &&
      theirs.softcap == theirs.softcap && theirs.scale == theirs.scale) {
    __builtin_trap();  // a digest must equal itself (NaN floats aside)
  }
  return 0;
}
