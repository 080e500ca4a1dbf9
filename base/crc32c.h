// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and gRPC: what the
// communicators put in a message header so that a payload or header
// corrupted in transit is an error, never a silently wrong result.
// SSE4.2's crc32 instruction where the CPU has it (about 8 bytes a cycle),
// a table otherwise; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringattn {

// The CRC-32C of `n` bytes at `data`, continuing from `crc` (0 to start).
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace ringattn
