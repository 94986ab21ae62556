#include "kvwire/transport/wire_header.h"

#include "gtest/gtest.h"

namespace kvwire::transport {
namespace {

TransportHeader Sample() {
  TransportHeader h;
  h.connection_id = 0x1122334455667788;
  h.send_id = 42;
  h.info = FrameInfo{0xABCDEF, 7, 9, 123456, NewToken()};
  h.frame_header_bytes = 64;
  return h;
}

TEST(TransportHeader, RoundTripsEveryField) {
  const TransportHeader h = Sample();
  auto decoded = DecodeTransportHeader(EncodeTransportHeader(h), kMaxPayloadBytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->connection_id, h.connection_id);
  EXPECT_EQ(decoded->send_id, h.send_id);
  EXPECT_EQ(decoded->info.request_id, h.info.request_id);
  EXPECT_EQ(decoded->info.stream, h.info.stream);
  EXPECT_EQ(decoded->info.sequence, h.info.sequence);
  EXPECT_EQ(decoded->info.payload_bytes, h.info.payload_bytes);
  EXPECT_TRUE(decoded->info.credential == h.info.credential);
  EXPECT_EQ(decoded->frame_header_bytes, h.frame_header_bytes);
}

TEST(TransportHeader, LayoutIsLittleEndianWithMagicFirst) {
  auto bytes = EncodeTransportHeader(Sample());
  EXPECT_EQ(bytes[0], 'K');
  EXPECT_EQ(bytes[1], 'V');
  EXPECT_EQ(bytes[2], 'W');
  EXPECT_EQ(bytes[3], 'T');
  EXPECT_EQ(bytes[16], 42);  // send id, low byte first
}

TEST(TransportHeader, RejectsEverySingleBitFlip) {
  const auto good = EncodeTransportHeader(Sample());
  for (size_t byte = 0; byte < good.size(); ++byte) {
    auto bad = good;
    bad[byte] ^= 0x10;
    EXPECT_TRUE(absl::IsDataLoss(DecodeTransportHeader(bad, kMaxPayloadBytes).status()))
        << "byte " << byte;
  }
}

TEST(TransportHeader, RejectsTruncationAndTrailingBytes) {
  const auto good = EncodeTransportHeader(Sample());
  std::vector<uint8_t> longer(good.begin(), good.end());
  longer.push_back(0);
  EXPECT_TRUE(absl::IsDataLoss(
      DecodeTransportHeader(absl::MakeConstSpan(good).first(71), kMaxPayloadBytes).status()));
  EXPECT_TRUE(absl::IsDataLoss(DecodeTransportHeader(longer, kMaxPayloadBytes).status()));
}

TEST(TransportHeader, RejectsInflatedLengthsEvenWithValidChecksum) {
  TransportHeader h = Sample();
  h.frame_header_bytes = kMaxFrameHeaderBytes + 1;
  EXPECT_TRUE(
      absl::IsDataLoss(DecodeTransportHeader(EncodeTransportHeader(h), kMaxPayloadBytes).status()));
  h = Sample();
  EXPECT_TRUE(absl::IsDataLoss(
      DecodeTransportHeader(EncodeTransportHeader(h), h.info.payload_bytes - 1).status()));
}

TEST(CheckOutgoingFrame, RejectsInconsistentCallerArguments) {
  FrameInfo info{1, 0, 0, 10, {}};
  EXPECT_TRUE(CheckOutgoingFrame(info, 0, 10, kMaxPayloadBytes).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(CheckOutgoingFrame(info, 0, 9, kMaxPayloadBytes)));
  EXPECT_TRUE(absl::IsInvalidArgument(
      CheckOutgoingFrame(info, kMaxFrameHeaderBytes + 1, 10, kMaxPayloadBytes)));
  EXPECT_TRUE(absl::IsInvalidArgument(CheckOutgoingFrame(info, 0, 10, 9)));
}

}  // namespace
}  // namespace kvwire::transport
