#include "kvwire/format/frame.h"

#include <gtest/gtest.h>

#include "tests/format/test_util.h"

namespace kvwire::format {
namespace {

using testing::Poke;
using testing::RehashHeader;

std::vector<uint8_t> SampleFrame(size_t payload_size = 100) {
  std::vector<uint8_t> payload(payload_size);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7 + 3);
  return AssembleFrame(FrameType::kLayer, 0x1122334455667788ull, 5, payload);
}

TEST(FrameDecoder, RoundTripsHeaderAndPayload) {
  const std::vector<uint8_t> frame = SampleFrame();
  auto view = DecodeFrame(frame, Limits{});
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->header.type, FrameType::kLayer);
  EXPECT_EQ(view->header.request_id, 0x1122334455667788ull);
  EXPECT_EQ(view->header.sequence, 5u);
  EXPECT_EQ(view->header.payload_length, 100u);
  EXPECT_EQ(view->payload.size(), 100u);
  EXPECT_EQ(view->payload[3], static_cast<uint8_t>(3 * 7 + 3));
}

TEST(FrameDecoder, AcceptsEmptyPayload) {
  const std::vector<uint8_t> frame = SampleFrame(0);
  auto view = DecodeFrame(frame, Limits{});
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_TRUE(view->payload.empty());
}

TEST(FrameDecoder, RejectsTruncationAtEveryOffset) {
  const std::vector<uint8_t> frame = SampleFrame(64);
  for (size_t n = 0; n < frame.size(); ++n) {
    auto view = DecodeFrame(absl::MakeConstSpan(frame.data(), n), Limits{});
    ASSERT_FALSE(view.ok()) << "accepted a frame truncated to " << n << " bytes";
    EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss) << n;
    EXPECT_FALSE(view.status().message().empty());
  }
}

TEST(FrameDecoder, RejectsTrailingBytes) {
  std::vector<uint8_t> frame = SampleFrame();
  frame.push_back(0);
  auto view = DecodeFrame(frame, Limits{});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(view.status().message().find("trailing"), absl::string_view::npos);
}

TEST(FrameDecoder, RejectsBadMagic) {
  std::vector<uint8_t> frame = SampleFrame();
  frame[0] = 'X';
  RehashHeader(frame);
  auto view = DecodeFrame(frame, Limits{});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(view.status().message().find("magic"), absl::string_view::npos);
}

TEST(FrameDecoder, RejectsUnknownVersionAsFailedPrecondition) {
  std::vector<uint8_t> frame = SampleFrame();
  Poke<uint16_t>(frame, 4, 2);
  RehashHeader(frame);
  EXPECT_EQ(DecodeFrame(frame, Limits{}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(FrameDecoder, RejectsUnknownTypeFlagsAndReserved) {
  for (uint8_t type : {0, 5, 255}) {
    std::vector<uint8_t> frame = SampleFrame();
    frame[6] = type;
    RehashHeader(frame);
    EXPECT_EQ(DecodeFrame(frame, Limits{}).status().code(), absl::StatusCode::kDataLoss) << +type;
  }
  std::vector<uint8_t> flagged = SampleFrame();
  flagged[7] = 0x80;
  RehashHeader(flagged);
  EXPECT_EQ(DecodeFrame(flagged, Limits{}).status().code(), absl::StatusCode::kFailedPrecondition);
  std::vector<uint8_t> reserved = SampleFrame();
  Poke<uint32_t>(reserved, 20, 1);
  RehashHeader(reserved);
  EXPECT_EQ(DecodeFrame(reserved, Limits{}).status().code(), absl::StatusCode::kDataLoss);
}

TEST(FrameDecoder, RejectsInflatedLengthBeforeReadingPayload) {
  std::vector<uint8_t> frame = SampleFrame();
  Poke<uint64_t>(frame, 24, ~uint64_t{0});
  RehashHeader(frame);
  auto header = DecodeHeader(frame, Limits{});
  EXPECT_EQ(header.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(header.status().message().find("exceeds the limit"), absl::string_view::npos);
  // Within limits but longer than what arrived: truncated.
  Poke<uint64_t>(frame, 24, 101);
  RehashHeader(frame);
  EXPECT_EQ(DecodeFrame(frame, Limits{}).status().code(), absl::StatusCode::kDataLoss);
}

TEST(FrameDecoder, EnforcesConfiguredPayloadLimit) {
  const std::vector<uint8_t> frame = SampleFrame(100);
  Limits tight;
  tight.max_payload_bytes = 99;
  EXPECT_EQ(DecodeFrame(frame, tight).status().code(), absl::StatusCode::kDataLoss);
  tight.max_payload_bytes = 100;
  EXPECT_TRUE(DecodeFrame(frame, tight).ok());
}

TEST(FrameDecoder, DetectsEverySingleBitFlip) {
  const std::vector<uint8_t> frame = SampleFrame(32);
  for (size_t byte = 0; byte < frame.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> bad = frame;
      bad[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_FALSE(DecodeFrame(bad, Limits{}).ok()) << "flip at byte " << byte << " bit " << bit;
    }
  }
}

TEST(FrameDecoder, PayloadHashMismatchIsDataLoss) {
  std::vector<uint8_t> frame = SampleFrame();
  frame.back() ^= 1;
  auto view = DecodeFrame(frame, Limits{});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(view.status().message().find("hash"), absl::string_view::npos);
}

}  // namespace
}  // namespace kvwire::format
