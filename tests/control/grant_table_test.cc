#include "kvwire/control/grant_table.h"

#include <vector>

#include "gtest/gtest.h"
#include "kvwire/format/frame.h"

namespace kvwire::control {
namespace {

class FakeClock {
 public:
  absl::Time Now() const { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

class GrantTableTest : public ::testing::Test {
 protected:
  GrantTableTest()
      : table_(GrantTableOptions{.capacity = 2, .now = [this] { return clock_.Now(); }}) {}

  // A format header of `type` (only the type byte matters to the table).
  static std::vector<uint8_t> Header(format::FrameType type) {
    std::vector<uint8_t> header(format::kFrameHeaderSize);
    format::EncodeHeader(format::FrameHeader{.type = type}, header.data());
    return header;
  }
  absl::StatusOr<transport::Destination> Offer(const GrantInfo& grant, uint64_t payload,
                                               format::FrameType type = format::FrameType::kLayer) {
    return table_.Accept(transport::FrameInfo{grant.request_id, 0, 0, payload, grant.token},
                         Header(type));
  }

  FakeClock clock_;
  GrantTable table_;
};

TEST_F(GrantTableTest, ReserveGivesDistinctSlotsAndFreshTokens) {
  auto a = table_.Reserve(1, 1000, absl::Seconds(1));
  auto b = table_.Reserve(2, 1000, absl::Seconds(1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->slot_id, b->slot_id);
  EXPECT_NE(a->token, b->token);
  EXPECT_EQ(table_.live_grants(), 2u);
}

TEST_F(GrantTableTest, ReserveRejectsFullTableDuplicatesAndBadArguments) {
  ASSERT_TRUE(table_.Reserve(1, 1000, absl::Seconds(1)).ok());
  EXPECT_EQ(table_.Reserve(1, 1000, absl::Seconds(1)).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(table_.Reserve(2, 1000, absl::Seconds(1)).ok());
  EXPECT_EQ(table_.Reserve(3, 1000, absl::Seconds(1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table_.Reserve(4, 0, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GrantTableTest, AcceptsGrantedFrameIntoContiguousBuffer) {
  auto grant = table_.Reserve(7, 1000, absl::Seconds(1));
  ASSERT_TRUE(grant.ok());
  auto dest = Offer(*grant, 100);
  ASSERT_TRUE(dest.ok()) << dest.status();
  EXPECT_EQ(dest->buffer.size(), 100u);
  transport::ReceivedFrame frame;
  const std::vector<uint8_t> header = Header(format::FrameType::kLayer);
  frame.frame_header.assign(header.begin(), header.end());
  frame.payload = dest->buffer;
  auto contiguous = GrantTable::ContiguousFrame(frame);
  ASSERT_EQ(contiguous.size(), format::kFrameHeaderSize + 100);
  EXPECT_TRUE(std::equal(header.begin(), header.end(), contiguous.begin()));
}

TEST_F(GrantTableTest, WrongTokenAndUnknownRequestArePermissionDenied) {
  auto grant = table_.Reserve(7, 1000, absl::Seconds(1));
  ASSERT_TRUE(grant.ok());
  GrantInfo forged = *grant;
  forged.token.bytes[3] ^= 1;
  EXPECT_EQ(Offer(forged, 10).status().code(), absl::StatusCode::kPermissionDenied);
  GrantInfo unknown = *grant;
  unknown.request_id = 8;
  EXPECT_EQ(Offer(unknown, 10).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(table_.free_bytes_granted(), 1000u);  // nothing was installed
}

TEST_F(GrantTableTest, BytesPastTheGrantAreResourceExhausted) {
  auto grant = table_.Reserve(7, 2 * format::kFrameHeaderSize + 150, absl::Seconds(1));
  ASSERT_TRUE(grant.ok());
  ASSERT_TRUE(Offer(*grant, 100).ok());
  EXPECT_EQ(Offer(*grant, 51).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Offer(*grant, 50).ok());
  EXPECT_EQ(Offer(*grant, 1).status().code(), absl::StatusCode::kResourceExhausted);
  // A small Abort frame still gets through so the sender can say why it stopped.
  EXPECT_TRUE(Offer(*grant, 64, format::FrameType::kAbort).ok());
}

TEST_F(GrantTableTest, HugePayloadDoesNotOverflowTheCheck) {
  auto grant = table_.Reserve(7, 1000, absl::Seconds(1));
  ASSERT_TRUE(grant.ok());
  EXPECT_EQ(Offer(*grant, ~uint64_t{0} - 10).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(GrantTableTest, LeaseExpiresBeforeStreamStartsButNotAfter) {
  auto idle = table_.Reserve(1, 1000, absl::Milliseconds(100));
  auto busy = table_.Reserve(2, 1000, absl::Milliseconds(100));
  ASSERT_TRUE(idle.ok() && busy.ok());
  ASSERT_TRUE(Offer(*busy, 10).ok());
  clock_.Advance(absl::Milliseconds(101));
  EXPECT_EQ(Offer(*idle, 10).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Offer(*busy, 10).ok());
  EXPECT_EQ(table_.live_grants(), 1u);
}

TEST_F(GrantTableTest, FinishedGrantIsConsumedAndReleaseFreesTheSlot) {
  auto grant = table_.Reserve(7, 1000, absl::Seconds(1));
  ASSERT_TRUE(grant.ok());
  ASSERT_TRUE(Offer(*grant, 10).ok());
  ASSERT_TRUE(table_.Finish(7).ok());
  EXPECT_EQ(Offer(*grant, 10).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(table_.Release(7, grant->slot_id + 1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(table_.Release(7, grant->slot_id).ok());
  EXPECT_EQ(table_.live_grants(), 0u);
  EXPECT_EQ(table_.Release(7, grant->slot_id).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvwire::control
