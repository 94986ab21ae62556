#include "kvwire/transport/wire_header.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace kvwire::transport {
namespace {

constexpr size_t kChecksumOffset = 68;

template <typename T>
void Put(uint8_t* out, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

template <typename T>
T Get(const uint8_t* in, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(in[offset + i]) << (8 * i);
  return value;
}

uint32_t Checksum(const uint8_t* bytes) { return XXH32(bytes, kChecksumOffset, 0); }

absl::Status CheckLengths(const TransportHeader& h, uint64_t max_payload_bytes) {
  if (h.frame_header_bytes > kMaxFrameHeaderBytes) {
    return absl::DataLossError(absl::StrCat("transport header: frame header of ",
                                            h.frame_header_bytes, " bytes exceeds the limit of ",
                                            kMaxFrameHeaderBytes));
  }
  if (h.info.payload_bytes > max_payload_bytes) {
    return absl::DataLossError(absl::StrCat("transport header: payload of ", h.info.payload_bytes,
                                            " bytes exceeds the limit of ", max_payload_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

std::array<uint8_t, kTransportHeaderBytes> EncodeTransportHeader(const TransportHeader& h) {
  std::array<uint8_t, kTransportHeaderBytes> out{};
  uint8_t* p = out.data();
  Put<uint32_t>(p, 0, kTransportMagic);
  Put<uint16_t>(p, 4, kTransportVersion);
  Put<uint64_t>(p, 8, h.connection_id);
  Put<uint64_t>(p, 16, h.send_id);
  Put<uint64_t>(p, 24, h.info.request_id);
  Put<uint64_t>(p, 32, h.info.payload_bytes);
  Put<uint32_t>(p, 40, h.info.stream);
  Put<uint32_t>(p, 44, h.info.sequence);
  Put<uint32_t>(p, 48, h.frame_header_bytes);
  std::memcpy(p + 52, h.info.credential.bytes.data(), h.info.credential.bytes.size());
  Put<uint32_t>(p, kChecksumOffset, Checksum(p));
  return out;
}

absl::StatusOr<TransportHeader> DecodeTransportHeader(absl::Span<const uint8_t> bytes,
                                                      uint64_t max_payload_bytes) {
  if (bytes.size() != kTransportHeaderBytes) {
    return absl::DataLossError(absl::StrCat("transport header: ", bytes.size(), " bytes, expected ",
                                            kTransportHeaderBytes));
  }
  const uint8_t* p = bytes.data();
  if (const uint32_t magic = Get<uint32_t>(p, 0); magic != kTransportMagic) {
    return absl::DataLossError(absl::StrCat("transport header: bad magic 0x", absl::Hex(magic)));
  }
  if (const uint16_t version = Get<uint16_t>(p, 4); version != kTransportVersion) {
    return absl::DataLossError(absl::StrCat("transport header: unknown version ", version));
  }
  if (const uint32_t sum = Get<uint32_t>(p, kChecksumOffset); sum != Checksum(p)) {
    return absl::DataLossError(
        absl::StrCat("transport header: checksum mismatch (0x", absl::Hex(sum), ")"));
  }
  TransportHeader h;
  h.connection_id = Get<uint64_t>(p, 8);
  h.send_id = Get<uint64_t>(p, 16);
  h.info.request_id = Get<uint64_t>(p, 24);
  h.info.payload_bytes = Get<uint64_t>(p, 32);
  h.info.stream = Get<uint32_t>(p, 40);
  h.info.sequence = Get<uint32_t>(p, 44);
  h.frame_header_bytes = Get<uint32_t>(p, 48);
  std::memcpy(h.info.credential.bytes.data(), p + 52, h.info.credential.bytes.size());
  if (absl::Status s = CheckLengths(h, max_payload_bytes); !s.ok()) return s;
  return h;
}

absl::Status CheckOutgoingFrame(const FrameInfo& info, size_t frame_header_bytes,
                                size_t payload_bytes, uint64_t max_payload_bytes) {
  if (info.payload_bytes != payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame says ", info.payload_bytes, " payload bytes but the payload has ", payload_bytes));
  }
  if (frame_header_bytes > kMaxFrameHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("frame header of ", frame_header_bytes,
                                                   " bytes exceeds ", kMaxFrameHeaderBytes));
  }
  if (payload_bytes > max_payload_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload of ", payload_bytes, " bytes exceeds ", max_payload_bytes));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::transport
