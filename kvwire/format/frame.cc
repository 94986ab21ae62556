#include "kvwire/format/frame.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvwire/format/bytes.h"

namespace kvwire::format {
namespace {

constexpr size_t kHashedHeaderBytes = 40;

bool IsKnownType(uint8_t t) { return t >= 1 && t <= 4; }

}  // namespace

uint64_t HashBytes(absl::Span<const uint8_t> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

void EncodeHeader(const FrameHeader& header, uint8_t* out) {
  ByteWriter w(absl::MakeSpan(out, kFrameHeaderSize));
  w.Put<uint32_t>(kFrameMagic);
  w.Put<uint16_t>(kWireVersion);
  w.Put<uint8_t>(static_cast<uint8_t>(header.type));
  w.Put<uint8_t>(header.flags);
  w.Put<uint64_t>(header.request_id);
  w.Put<uint32_t>(header.sequence);
  w.Put<uint32_t>(0);
  w.Put<uint64_t>(header.payload_length);
  w.Put<uint64_t>(header.payload_hash);
  w.Put<uint64_t>(HashBytes(absl::MakeConstSpan(out, kHashedHeaderBytes)));
}

absl::StatusOr<FrameHeader> DecodeHeader(absl::Span<const uint8_t> bytes, const Limits& limits) {
  if (bytes.size() < kFrameHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("frame header truncated: ", bytes.size(), " of ", kFrameHeaderSize, " bytes"));
  }
  ByteReader r(bytes.subspan(0, kFrameHeaderSize));
  uint32_t magic = 0, reserved = 0;
  uint16_t version = 0;
  uint8_t type = 0;
  uint64_t header_hash = 0;
  FrameHeader h;
  r.Get(&magic);
  r.Get(&version);
  r.Get(&type);
  r.Get(&h.flags);
  r.Get(&h.request_id);
  r.Get(&h.sequence);
  r.Get(&reserved);
  r.Get(&h.payload_length);
  r.Get(&h.payload_hash);
  r.Get(&header_hash);
  if (magic != kFrameMagic) {
    return absl::DataLossError(absl::StrCat("bad frame magic 0x", absl::Hex(magic)));
  }
  if (header_hash != HashBytes(bytes.subspan(0, kHashedHeaderBytes))) {
    return absl::DataLossError("frame header hash mismatch");
  }
  if (version != kWireVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("unsupported wire version ", version, " (this build speaks ", kWireVersion, ")"));
  }
  if (!IsKnownType(type)) return absl::DataLossError(absl::StrCat("unknown frame type ", type));
  if (h.flags != 0) {
    return absl::FailedPreconditionError(absl::StrCat("unsupported frame flags 0x", absl::Hex(h.flags)));
  }
  if (reserved != 0) return absl::DataLossError("frame header reserved field is not zero");
  if (h.payload_length > limits.max_payload_bytes) {
    return absl::DataLossError(absl::StrCat("frame payload length ", h.payload_length,
                                            " exceeds the limit of ", limits.max_payload_bytes));
  }
  h.type = static_cast<FrameType>(type);
  return h;
}

absl::Status VerifyPayload(const FrameHeader& header, absl::Span<const uint8_t> payload) {
  if (payload.size() != header.payload_length) {
    return absl::DataLossError(absl::StrCat("payload is ", payload.size(),
                                            " bytes, header says ", header.payload_length));
  }
  if (HashBytes(payload) != header.payload_hash) {
    return absl::DataLossError("frame payload hash mismatch");
  }
  return absl::OkStatus();
}

std::vector<uint8_t> AssembleFrame(FrameType type, uint64_t request_id, uint32_t sequence,
                                   absl::Span<const uint8_t> payload, uint64_t* payload_hash) {
  std::vector<uint8_t> frame(kFrameHeaderSize + payload.size());
  FrameHeader h;
  h.type = type;
  h.request_id = request_id;
  h.sequence = sequence;
  h.payload_length = payload.size();
  h.payload_hash = HashBytes(payload);
  if (payload_hash != nullptr) *payload_hash = h.payload_hash;
  EncodeHeader(h, frame.data());
  if (!payload.empty()) std::memcpy(frame.data() + kFrameHeaderSize, payload.data(), payload.size());
  return frame;
}

absl::StatusOr<FrameView> DecodeFrame(absl::Span<const uint8_t> bytes, const Limits& limits) {
  absl::StatusOr<FrameHeader> header = DecodeHeader(bytes, limits);
  if (!header.ok()) return header.status();
  const uint64_t available = bytes.size() - kFrameHeaderSize;
  if (available < header->payload_length) {
    return absl::DataLossError(absl::StrCat("frame truncated: payload has ", available, " of ",
                                            header->payload_length, " bytes"));
  }
  if (available > header->payload_length) {
    return absl::DataLossError(
        absl::StrCat(available - header->payload_length, " trailing bytes after frame payload"));
  }
  FrameView view{*header, bytes.subspan(kFrameHeaderSize)};
  if (auto s = VerifyPayload(view.header, view.payload); !s.ok()) return s;
  return view;
}

}  // namespace kvwire::format
