// kvwire/transport/wire_header.h — the fixed transport header every frame travels with.
//
// Byte layout (72 bytes, all integers little-endian):
//   [0,4)   magic 0x5457564B ("KVWT" read as bytes K V W T)
//   [4,6)   version (1)
//   [6,8)   reserved, 0
//   [8,16)  connection id: the sending connection (chosen by the sender at Connect)
//   [16,24) send id: the sender's operation id, echoed in the receiver's reply
//   [24,32) request id
//   [32,40) payload bytes
//   [40,44) stream
//   [44,48) sequence
//   [48,52) frame header bytes that follow this header (<= kMaxFrameHeaderBytes)
//   [52,68) credential (16 opaque bytes)
//   [68,72) XXH32 (seed 0) of bytes [0,68)
// Decoding never trusts a length: anything malformed is DATA_LOSS naming the bad field.
// Thread-safety: pure functions.
#ifndef KVWIRE_TRANSPORT_WIRE_HEADER_H_
#define KVWIRE_TRANSPORT_WIRE_HEADER_H_

#include <array>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport {

inline constexpr size_t kTransportHeaderBytes = 72;
inline constexpr uint32_t kTransportMagic = 0x5457564B;
inline constexpr uint16_t kTransportVersion = 1;

struct TransportHeader {
  uint64_t connection_id = 0;
  uint64_t send_id = 0;
  FrameInfo info;
  uint32_t frame_header_bytes = 0;
};

std::array<uint8_t, kTransportHeaderBytes> EncodeTransportHeader(const TransportHeader& header);

// Parses and checks `bytes` (exactly kTransportHeaderBytes). DATA_LOSS on bad size, magic,
// version, checksum, or lengths above `max_payload_bytes` / kMaxFrameHeaderBytes.
absl::StatusOr<TransportHeader> DecodeTransportHeader(absl::Span<const uint8_t> bytes,
                                                      uint64_t max_payload_bytes);

// Checks a frame a caller wants to send: INVALID_ARGUMENT when info.payload_bytes disagrees with
// the payload, or a length is over its limit.
absl::Status CheckOutgoingFrame(const FrameInfo& info, size_t frame_header_bytes,
                                size_t payload_bytes, uint64_t max_payload_bytes);

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_WIRE_HEADER_H_
