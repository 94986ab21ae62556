// The transport contract: one parameterised suite every Transport implementation passes, in one
// process and (for transports that cross processes) against a peer process.
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/wire_header.h"
#include "tests/transport/transport_test_util.h"

namespace kvwire::transport::testing {

// Defined per test binary: the transports this binary runs the contract against.
std::vector<std::string> ContractTransports();

namespace {

constexpr absl::Duration kTimeout = absl::Seconds(20);

Deadline Soon() { return Deadline::In(kTimeout); }

// Hands out one buffer per accepted frame and remembers every call.
class RecordingAcceptor {
 public:
  Acceptor AsAcceptor() {
    return [this](const FrameInfo& info,
                  absl::Span<const uint8_t> header) -> absl::StatusOr<Destination> {
      absl::MutexLock lock(&mu_);
      ++calls_;
      if (reject_.contains(info.request_id)) {
        return absl::PermissionDeniedError(
            absl::StrCat("no live grant for request ", info.request_id));
      }
      buffers_.emplace_back(info.payload_bytes, uint8_t{0xEE});
      return Destination{absl::MakeSpan(buffers_.back())};
    };
  }
  void Reject(RequestId id) {
    absl::MutexLock lock(&mu_);
    reject_.insert(id);
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<RequestId> reject_ ABSL_GUARDED_BY(mu_);
  std::deque<std::vector<uint8_t>> buffers_ ABSL_GUARDED_BY(mu_);
};

class TransportContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto receiver = MakeTransportByName(GetParam());
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    receiver_ = std::move(*receiver);
    receiver_->SetAcceptor(acceptor_.AsAcceptor());
    auto sender = MakeTransportByName(GetParam());
    ASSERT_TRUE(sender.ok()) << sender.status();
    sender_ = std::move(*sender);
    auto conn = sender_->Connect(receiver_->LocalAddress(), Soon());
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = std::move(*conn);
  }

  void TearDown() override {
    conn_.reset();
    sender_.reset();
    receiver_.reset();
  }

  bool CrossProcess() const { return GetParam() != "loopback"; }

  absl::Status SendPatterned(const FrameInfo& info, absl::Span<const uint8_t> header = {}) {
    const std::vector<uint8_t> payload = MakePayload(info);
    return conn_->Send(info, header, payload, Soon());
  }

  RecordingAcceptor acceptor_;
  std::unique_ptr<Transport> receiver_;
  std::unique_ptr<Transport> sender_;
  std::unique_ptr<Connection> conn_;
};

TEST_P(TransportContract, DeliversEveryByteForEachSize) {
  const RequestId request = NewRequestId();
  const std::vector<uint64_t> sizes = {0,       1, 7, 4096, 4097, 65537, 1 << 20, (1 << 20) + 3,
                                       64 << 20};
  const std::string header = "frame-header";
  for (size_t i = 0; i < sizes.size(); ++i) {
    FrameInfo info{request, 3, static_cast<uint32_t>(i), sizes[i], NewToken()};
    ASSERT_TRUE(
        SendPatterned(info, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(header.data()),
                                                header.size()))
            .ok())
        << sizes[i];
    absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->info.payload_bytes, sizes[i]);
    EXPECT_EQ(frame->info.sequence, i);
    EXPECT_EQ(frame->info.stream, 3u);
    EXPECT_TRUE(frame->info.credential == info.credential);
    EXPECT_EQ(frame->frame_header, header);
    EXPECT_EQ(FirstMismatch(info, frame->payload), -1) << "size " << sizes[i];
  }
  EXPECT_TRUE(receiver_->CancelReceive(request, Soon()).ok());
}

TEST_P(TransportContract, MovesBetweenRegisteredRegions) {
  const RequestId request = NewRequestId();
  FrameInfo info{request, 0, 0, (4 << 20) + 1, {}};
  std::vector<uint8_t> source = MakePayload(info);
  std::vector<uint8_t> dest(source.size() + 64, 0);
  auto source_region = sender_->RegisterMemory(source.data(), source.size(), MemoryKind::kHost);
  auto dest_region = receiver_->RegisterMemory(dest.data(), dest.size(), MemoryKind::kHost);
  ASSERT_TRUE(source_region.ok() && dest_region.ok());
  EXPECT_EQ((*dest_region)->size(), dest.size());
  receiver_->SetAcceptor(
      [&](const FrameInfo& f, absl::Span<const uint8_t>) -> absl::StatusOr<Destination> {
        // Lands 64 bytes into the region, to show offsets inside a registration work.
        return Destination{absl::MakeSpan(dest).subspan(64), MemoryKind::kHost, dest_region->get()};
      });
  // A payload that starts inside the registered source range.
  ASSERT_TRUE(conn_->Send(info, {}, source, Soon()).ok());
  absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->payload.data(), dest.data() + 64);
  EXPECT_EQ(FirstMismatch(info, frame->payload), -1);
}

TEST_P(TransportContract, InterleavesManyRequestsAndFrames) {
  constexpr int kRequests = 16;
  constexpr int kFrames = 32;
  std::vector<RequestId> ids;
  for (int r = 0; r < kRequests; ++r) ids.push_back(NewRequestId());
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};
  for (int r = 0; r < kRequests; ++r) {
    senders.emplace_back([&, r] {
      std::vector<std::vector<uint8_t>> payloads;
      std::vector<std::unique_ptr<SendOperation>> ops;
      for (int f = 0; f < kFrames; ++f) {
        FrameInfo info{ids[r],
                       static_cast<uint32_t>(f % 4),
                       static_cast<uint32_t>(f),
                       static_cast<uint64_t>(1000 + 4099 * f + 17 * r),
                       {}};
        payloads.push_back(MakePayload(info));
        auto op = conn_->StartSend(info, {}, payloads.back());
        if (!op.ok()) {
          ++failures;
          return;
        }
        ops.push_back(std::move(*op));
      }
      for (auto& op : ops) {
        if (!op->Wait(Soon()).ok()) ++failures;
      }
    });
  }
  for (int r = 0; r < kRequests; ++r) {
    std::vector<bool> seen(kFrames, false);
    for (int f = 0; f < kFrames; ++f) {
      absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(ids[r], Soon());
      ASSERT_TRUE(frame.ok()) << frame.status();
      EXPECT_EQ(FirstMismatch(frame->info, frame->payload), -1);
      ASSERT_LT(frame->info.sequence, static_cast<uint32_t>(kFrames));
      EXPECT_FALSE(seen[frame->info.sequence]);
      seen[frame->info.sequence] = true;
    }
  }
  for (auto& t : senders) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(TransportContract, ConnectToDeadAddressFailsWithinDeadline) {
  std::string dead_address;
  {
    auto gone = MakeTransportByName(GetParam());
    ASSERT_TRUE(gone.ok());
    dead_address = (*gone)->LocalAddress();
  }
  const auto start = absl::Now();
  auto conn = sender_->Connect(dead_address, Deadline::In(absl::Seconds(2)));
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(conn.status()) || absl::IsUnavailable(conn.status()))
      << conn.status();
  EXPECT_LT(took, absl::Seconds(3));
}

TEST_P(TransportContract, ConnectRejectsForeignAddress) {
  auto conn = sender_->Connect("not-an-address", Deadline::In(absl::Seconds(2)));
  EXPECT_TRUE(absl::IsInvalidArgument(conn.status())) << conn.status();
}

TEST_P(TransportContract, ReceiveWithNothingComingTimesOut) {
  const auto start = absl::Now();
  auto frame = receiver_->Receive(NewRequestId(), Deadline::In(absl::Milliseconds(200)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(frame.status())) << frame.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_P(TransportContract, CancelReceiveWakesWaiterAndRejectsLaterFrames) {
  const RequestId request = NewRequestId();
  absl::Status waiter_status;
  std::thread waiter([&] { waiter_status = receiver_->Receive(request, Soon()).status(); });
  ASSERT_TRUE(receiver_->CancelReceive(request, Soon()).ok());
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(waiter_status)) << waiter_status;
  const int calls_before = acceptor_.calls();
  absl::Status sent = SendPatterned(FrameInfo{request, 0, 0, 4096, {}});
  EXPECT_TRUE(absl::IsCancelled(sent)) << sent;
  EXPECT_EQ(acceptor_.calls(), calls_before);
}

TEST_P(TransportContract, SenderCancelFailsLaterSends) {
  const RequestId request = NewRequestId();
  ASSERT_TRUE(SendPatterned(FrameInfo{request, 0, 0, 100, {}}).ok());
  conn_->Cancel(request);
  absl::Status sent = SendPatterned(FrameInfo{request, 0, 1, 100, {}});
  EXPECT_TRUE(absl::IsCancelled(sent)) << sent;
  EXPECT_TRUE(SendPatterned(FrameInfo{NewRequestId(), 0, 0, 100, {}}).ok());
}

TEST_P(TransportContract, RejectedFrameFailsSenderAndWritesNothing) {
  const RequestId request = NewRequestId();
  acceptor_.Reject(request);
  for (uint64_t size : {uint64_t{16}, uint64_t{4} << 20}) {
    absl::Status sent = SendPatterned(FrameInfo{request, 0, 0, size, {}});
    EXPECT_TRUE(absl::IsPermissionDenied(sent)) << sent;
    EXPECT_NE(sent.message().find("no live grant"), absl::string_view::npos) << sent;
  }
  auto frame = receiver_->Receive(request, Deadline::In(absl::Milliseconds(100)));
  EXPECT_TRUE(absl::IsDeadlineExceeded(frame.status())) << frame.status();
  // The connection stays usable after a rejection.
  EXPECT_TRUE(SendPatterned(FrameInfo{NewRequestId(), 0, 0, 64, {}}).ok());
}

TEST_P(TransportContract, CorruptedTransportHeaderIsDataLoss) {
  const std::vector<uint8_t> payload(1000, 7);
  TransportHeader good{0, 0, FrameInfo{NewRequestId(), 0, 0, 1000, {}}, 0};
  auto corrupt = [&](auto mutate) {
    auto bytes = EncodeTransportHeader(good);
    mutate(bytes);
    return bytes;
  };
  struct Case {
    std::string what;
    std::array<uint8_t, kTransportHeaderBytes> bytes;
  };
  std::vector<Case> cases;
  cases.push_back({"bad magic", corrupt([](auto& b) { b[0] ^= 0xFF; })});
  cases.push_back({"checksum", corrupt([](auto& b) { b[30] ^= 0x01; })});
  TransportHeader oversized = good;
  oversized.frame_header_bytes = 1 << 20;
  cases.push_back({"oversized frame header", EncodeTransportHeader(oversized)});
  TransportHeader wrong_length = good;
  wrong_length.info.payload_bytes = 999;
  cases.push_back({"length mismatch", EncodeTransportHeader(wrong_length)});
  for (Case& c : cases) {
    auto op = conn_->StartSendRawForTesting(c.bytes, {}, payload);
    ASSERT_TRUE(op.ok()) << op.status();
    absl::Status sent = (*op)->Wait(Soon());
    // A transport that cannot attribute the frame may only time out; none may accept it.
    EXPECT_TRUE(absl::IsDataLoss(sent)) << c.what << ": " << sent;
  }
  EXPECT_EQ(acceptor_.calls(), 0);
}

TEST_P(TransportContract, RejectsOversizedFrameHeaderAtSender) {
  std::vector<uint8_t> header(kMaxFrameHeaderBytes + 1);
  absl::Status sent = conn_->Send(FrameInfo{NewRequestId(), 0, 0, 0, {}}, header, {}, Soon());
  EXPECT_TRUE(absl::IsInvalidArgument(sent)) << sent;
  absl::Status mismatch = conn_->Send(FrameInfo{NewRequestId(), 0, 0, 5, {}}, {}, header, Soon());
  EXPECT_TRUE(absl::IsInvalidArgument(mismatch)) << mismatch;
}

TEST_P(TransportContract, ReceiverGoneFailsSendsWithUnavailable) {
  ASSERT_TRUE(SendPatterned(FrameInfo{NewRequestId(), 0, 0, 100, {}}).ok());
  receiver_.reset();
  const Deadline deadline = Deadline::In(absl::Seconds(10));
  absl::Status sent;
  // Sends may still be in flight when the receiver goes; one of them must report UNAVAILABLE.
  while (!deadline.Expired()) {
    sent = conn_->Send(FrameInfo{NewRequestId(), 0, 0, 1 << 16, {}}, {},
                       std::vector<uint8_t>(1 << 16), deadline);
    if (!sent.ok()) break;
  }
  EXPECT_TRUE(absl::IsUnavailable(sent)) << sent;
}

// --- across processes -----------------------------------------------------------------------

std::string PeerBinary() { return KVWIRE_TRANSPORT_PEER; }

TEST_P(TransportContract, CrossProcessDeliversEveryByteBothWays) {
  if (!CrossProcess()) GTEST_SKIP() << GetParam() << " addresses do not cross processes";
  const RequestId request = NewRequestId();
  // Parent sends to a child receiver that checks the bytes.
  auto child = ChildProcess::Spawn({PeerBinary(), "recv", GetParam(), absl::StrCat(request), "5"});
  ASSERT_TRUE(child.ok()) << child.status();
  auto line = (*child)->ReadTagged("ADDR ", Soon());
  ASSERT_TRUE(line.ok()) << line.status();
  auto address = AddressFromHex(*line);
  ASSERT_TRUE(address.ok());
  auto conn = sender_->Connect(*address, Soon());
  ASSERT_TRUE(conn.ok()) << conn.status();
  const std::vector<uint64_t> sizes = {0, 1, 4096, (1 << 20) + 5, 64 << 20};
  for (size_t i = 0; i < sizes.size(); ++i) {
    FrameInfo info{request, 0, static_cast<uint32_t>(i), sizes[i], {}};
    ASSERT_TRUE((*conn)->Send(info, {}, MakePayload(info), Soon()).ok()) << sizes[i];
  }
  line = (*child)->ReadTagged("OK ", Soon());
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "5");
  EXPECT_EQ((*child)->Wait(Soon()).value_or(-1), 0);

  // A child sender to this process.
  const RequestId back = NewRequestId();
  auto sender = ChildProcess::Spawn({PeerBinary(), "send", GetParam(),
                                     AddressToHex(receiver_->LocalAddress()), absl::StrCat(back),
                                     "3", absl::StrCat(3 << 20)});
  ASSERT_TRUE(sender.ok());
  for (int i = 0; i < 3; ++i) {
    auto frame = receiver_->Receive(back, Soon());
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(FirstMismatch(frame->info, frame->payload), -1);
  }
  EXPECT_EQ((*sender)->Wait(Soon()).value_or(-1), 0);
}

TEST_P(TransportContract, CrossProcessSenderKilledMidStreamIsUnavailable) {
  if (!CrossProcess()) GTEST_SKIP() << GetParam() << " addresses do not cross processes";
  const RequestId request = NewRequestId();
  auto child = ChildProcess::Spawn({PeerBinary(), "send", GetParam(),
                                    AddressToHex(receiver_->LocalAddress()), absl::StrCat(request),
                                    "0", absl::StrCat(1 << 20)});
  ASSERT_TRUE(child.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(receiver_->Receive(request, Soon()).ok());
  (*child)->Kill();
  const auto start = absl::Now();
  absl::Status status;
  while (status.ok())
    status = receiver_->Receive(request, Deadline::In(absl::Seconds(10))).status();
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_TRUE(receiver_->CancelReceive(request, Soon()).ok());
}

TEST_P(TransportContract, CrossProcessReceiverKilledMidStreamIsUnavailable) {
  if (!CrossProcess()) GTEST_SKIP() << GetParam() << " addresses do not cross processes";
  const RequestId request = NewRequestId();
  auto child = ChildProcess::Spawn({PeerBinary(), "recv", GetParam(), absl::StrCat(request), "0"});
  ASSERT_TRUE(child.ok());
  auto line = (*child)->ReadTagged("ADDR ", Soon());
  ASSERT_TRUE(line.ok()) << line.status();
  auto conn = sender_->Connect(AddressFromHex(*line).value_or(""), Soon());
  ASSERT_TRUE(conn.ok()) << conn.status();
  for (uint32_t i = 0; i < 3; ++i) {
    FrameInfo info{request, 0, i, 1 << 20, {}};
    ASSERT_TRUE((*conn)->Send(info, {}, MakePayload(info), Soon()).ok());
  }
  (*child)->Kill();
  const auto start = absl::Now();
  const Deadline deadline = Deadline::In(absl::Seconds(10));
  absl::Status sent;
  for (uint32_t i = 3; sent.ok() && !deadline.Expired(); ++i) {
    FrameInfo info{request, 0, i, 1 << 20, {}};
    sent = (*conn)->Send(info, {}, MakePayload(info), deadline);
  }
  EXPECT_TRUE(absl::IsUnavailable(sent)) << sent;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

INSTANTIATE_TEST_SUITE_P(AllTransports, TransportContract,
                         ::testing::ValuesIn(ContractTransports()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvwire::transport::testing
