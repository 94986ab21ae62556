// kvwire/format/frame.h — wire format v1: the fixed frame header and frame assembly.
//
// A request's stream is: Manifest (sequence 0), one Layer frame per layer (sequences 1..N, layers
// in any order), Commit (sequence N+1). An Abort frame may replace anything after the manifest.
// Every frame = 48-byte header + payload. All integers little-endian.
//
// Header layout (byte offset, size, field):
//    0  4  magic            "KVWF" (0x4B 0x56 0x57 0x46)
//    4  2  version          1
//    6  1  type             1 Manifest, 2 Layer, 3 Commit, 4 Abort
//    7  1  flags            must be 0 in v1
//    8  8  request_id       sender's request id, constant over the stream
//   16  4  sequence         position of the frame in its stream
//   20  4  reserved         must be 0
//   24  8  payload_length   bytes following the header
//   32  8  payload_hash     XXH3-64 (seed 0) of the payload
//   40  8  header_hash      XXH3-64 (seed 0) of header bytes 0..39
//
// Errors: malformed bytes, and any length or count over the configured Limits -> DATA_LOSS (a
// peer that sends them is broken or hostile); a version or flag this decoder does not speak ->
// FAILED_PRECONDITION. Pure functions; thread-safe.
#ifndef KVWIRE_FORMAT_FRAME_H_
#define KVWIRE_FORMAT_FRAME_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvwire::format {

inline constexpr uint32_t kFrameMagic = 0x4657564Bu;  // "KVWF" in little-endian byte order.
inline constexpr uint16_t kWireVersion = 1;
inline constexpr size_t kFrameHeaderSize = 48;

enum class FrameType : uint8_t { kManifest = 1, kLayer = 2, kCommit = 3, kAbort = 4 };

// Limits a decoder enforces before trusting any count or length. Defaults fit every model we
// serve; services tighten them per grant.
struct Limits {
  uint64_t max_payload_bytes = uint64_t{1} << 31;  // one frame's payload
  uint32_t max_layers = 1024;
  uint32_t max_kv_heads = 1024;
  uint32_t max_head_dim = 1024;
  uint32_t max_entries_per_head = 1u << 22;
  uint32_t max_method_length = 256;
  uint32_t max_message_length = 4096;
};

struct FrameHeader {
  FrameType type = FrameType::kManifest;
  uint8_t flags = 0;
  uint64_t request_id = 0;
  uint32_t sequence = 0;
  uint64_t payload_length = 0;
  uint64_t payload_hash = 0;
};

uint64_t HashBytes(absl::Span<const uint8_t> bytes);

// Writes the 48-byte header (computing header_hash) into out[0..48).
void EncodeHeader(const FrameHeader& header, uint8_t* out);

// Parses and checks a header: size, magic, version, type, flags, reserved, header hash, and
// payload_length against limits.max_payload_bytes. Does not look at the payload.
absl::StatusOr<FrameHeader> DecodeHeader(absl::Span<const uint8_t> bytes, const Limits& limits);

// Checks that `payload` has exactly header.payload_length bytes and the header's hash.
absl::Status VerifyPayload(const FrameHeader& header, absl::Span<const uint8_t> payload);

// Header + payload in one buffer, hash filled in (and stored to *payload_hash when given).
std::vector<uint8_t> AssembleFrame(FrameType type, uint64_t request_id, uint32_t sequence,
                                   absl::Span<const uint8_t> payload,
                                   uint64_t* payload_hash = nullptr);

// A frame that was decoded from one contiguous buffer: header checked, payload hash verified.
// `payload` points into the caller's buffer.
struct FrameView {
  FrameHeader header;
  absl::Span<const uint8_t> payload;
};
// Decodes header + payload from exactly one frame's bytes (trailing bytes are DATA_LOSS).
absl::StatusOr<FrameView> DecodeFrame(absl::Span<const uint8_t> bytes, const Limits& limits);

}  // namespace kvwire::format

#endif  // KVWIRE_FORMAT_FRAME_H_
