// Layer streaming over every transport: the sender and receiver of kv_stream.h with the
// GrantTable as the receiver's Acceptor. Compiled twice (see CMakeLists.txt): loopback only, and
// loopback plus UCX over TCP.
#include "kvwire/control/kv_stream.h"

#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvwire/base/status.h"
#include "kvwire/control/grant_table.h"
#include "tests/cache/cache_test_util.h"

#ifndef KVWIRE_CONTROL_TEST_LOOPBACK_ONLY
#include "kvwire/transport/ucx/ucx_transport.h"
#endif

namespace kvwire::control {
namespace {

using transport::Transport;

absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(const std::string& name) {
  if (name == "loopback") return transport::MakeLoopbackTransport();
#ifndef KVWIRE_CONTROL_TEST_LOOPBACK_ONLY
  if (name == "tcp") return transport::MakeUcxTransport({.transports = "tcp"});
#endif
  return absl::InvalidArgumentError(name);
}

std::vector<std::string> Transports() {
#ifdef KVWIRE_CONTROL_TEST_LOOPBACK_ONLY
  return {"loopback"};
#else
  return {"loopback", "tcp"};
#endif
}

constexpr cache::CacheShape kShape{.n_layers = 4, .n_kv_heads = 2, .head_dim = 16};
constexpr int32_t kLength = 40;

class KvStreamTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto receiver = MakeTransport(GetParam());
    auto sender = MakeTransport(GetParam());
    ASSERT_TRUE(receiver.ok() && sender.ok());
    receiver_ = *std::move(receiver);
    sender_ = *std::move(sender);
    receiver_->SetAcceptor(grants_.MakeAcceptor());
    auto conn = sender_->Connect(receiver_->LocalAddress(), Deadline::In(absl::Seconds(10)));
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *std::move(conn);
    cache_ = cache::testing::RandomCache(kShape, kLength, /*seed=*/5);
    // f32 on the wire so the received cache must equal the sent one bit for bit.
    manifest_ = cache::ManifestFor(cache_, 6, format::DType::kF32, "snapkv/adaptive/merge", 0.5f);
  }

  std::future<absl::StatusOr<cache::KvCache>> StartReceiver(RequestId id, absl::Duration timeout) {
    return std::async(std::launch::async, [this, id, timeout] {
      ReceiverOptions options;
      options.on_consumed = [this](const transport::ReceivedFrame& f) {
        grants_.FreeFrame(f.info.request_id, f.payload.data());
      };
      KvStreamReceiver receiver(receiver_.get(), id, std::move(options));
      return receiver.Run(Deadline::In(timeout));
    });
  }

  // Full stream with the sender; returns the sender's final status.
  absl::Status SendAll(const GrantInfo& grant) {
    KvStreamSender sender(conn_.get(), grant.request_id, grant.token, manifest_,
                          {.send_timeout = absl::Seconds(10)});
    KVWIRE_RETURN_IF_ERROR(sender.Start());
    for (uint32_t l = 0; l < cache_.layers.size(); ++l) {
      KVWIRE_RETURN_IF_ERROR(sender.SendLayer(l, cache_.layers[l]));
    }
    return sender.Commit();
  }

  GrantTable grants_;
  std::unique_ptr<Transport> receiver_;
  std::unique_ptr<Transport> sender_;
  std::unique_ptr<transport::Connection> conn_;
  cache::KvCache cache_;
  format::Manifest manifest_;
};

TEST_P(KvStreamTest, DeliversTheCacheBitExact) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  auto received = StartReceiver(grant->request_id, absl::Seconds(20));
  ASSERT_TRUE(SendAll(*grant).ok());
  auto cache = received.get();
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(*cache, cache_);
}

TEST_P(KvStreamTest, WrongTokenIsRejectedAndNothingInstalled) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  auto received = StartReceiver(grant->request_id, absl::Seconds(2));
  GrantInfo forged = *grant;
  forged.token = NewToken();
  const absl::Status sent = SendAll(forged);
  EXPECT_EQ(sent.code(), absl::StatusCode::kPermissionDenied) << sent;
  // Even the abort was refused, so the receiver sees nothing at all until its deadline.
  EXPECT_EQ(received.get().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(grants_.free_bytes_granted(), uint64_t{1} << 20);
}

TEST_P(KvStreamTest, OversizedStreamIsResourceExhaustedOnBothSides) {
  auto grant = grants_.Reserve(NewRequestId(), 2000, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  auto received = StartReceiver(grant->request_id, absl::Seconds(20));
  const absl::Status sent = SendAll(*grant);
  EXPECT_EQ(sent.code(), absl::StatusCode::kResourceExhausted) << sent;
  // The sender's abort still reaches the receiver and carries the reason.
  EXPECT_EQ(received.get().status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_P(KvStreamTest, ExpiredLeaseRefusesTheStream) {
  absl::Time now = absl::Now();
  GrantTable short_lease({.capacity = 1, .now = [&now] { return now; }});
  receiver_->SetAcceptor(short_lease.MakeAcceptor());
  auto grant = short_lease.Reserve(NewRequestId(), 1 << 20, absl::Milliseconds(100));
  ASSERT_TRUE(grant.ok());
  now += absl::Milliseconds(100);
  EXPECT_EQ(SendAll(*grant).code(), absl::StatusCode::kPermissionDenied);
  receiver_->SetAcceptor(grants_.MakeAcceptor());
}

TEST_P(KvStreamTest, CorruptedFrameIsDataLoss) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  auto received = StartReceiver(grant->request_id, absl::Seconds(20));
  auto frames = cache::EncodeCacheFrames(grant->request_id, manifest_, cache_);
  ASSERT_TRUE(frames.ok());
  (*frames)[1].back() ^= 0x40;  // a payload byte of layer frame 1: the hash no longer matches
  for (uint32_t i = 0; i < 2; ++i) {
    auto span = absl::MakeConstSpan((*frames)[i]);
    ASSERT_TRUE(conn_
                    ->Send({grant->request_id, 0, i, span.size() - 48, grant->token},
                           span.first(48), span.subspan(48), Deadline::In(absl::Seconds(10)))
                    .ok());
  }
  EXPECT_EQ(received.get().status().code(), absl::StatusCode::kDataLoss);
}

TEST_P(KvStreamTest, SenderGoneMidStreamIsUnavailableWithinDeadline) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  const absl::Time start = absl::Now();
  auto received = StartReceiver(grant->request_id, absl::Seconds(30));
  auto frames = cache::EncodeCacheFrames(grant->request_id, manifest_, cache_);
  ASSERT_TRUE(frames.ok());
  for (uint32_t i = 0; i < 3; ++i) {  // manifest and two layers, then the sender dies
    auto span = absl::MakeConstSpan((*frames)[i]);
    ASSERT_TRUE(conn_
                    ->Send({grant->request_id, 0, i, span.size() - 48, grant->token},
                           span.first(48), span.subspan(48), Deadline::In(absl::Seconds(10)))
                    .ok());
  }
  conn_.reset();
  sender_.reset();
  const absl::Status status = received.get().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

TEST_P(KvStreamTest, ReceiverGoneMidStreamFailsTheSenderWithUnavailable) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  KvStreamSender sender(conn_.get(), grant->request_id, grant->token, manifest_,
                        {.send_timeout = absl::Seconds(10), .max_in_flight = 1});
  ASSERT_TRUE(sender.Start().ok());
  ASSERT_TRUE(sender.SendLayer(0, cache_.layers[0]).ok());
  receiver_.reset();
  const absl::Time start = absl::Now();
  absl::Status status;
  for (uint32_t l = 1; l < cache_.layers.size() && status.ok(); ++l) {
    status = sender.SendLayer(l, cache_.layers[l]);
  }
  if (status.ok()) status = sender.Commit();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(sender.Commit().code(), status.code());  // the failure sticks
}

TEST_P(KvStreamTest, ManifestCheckFailureEndsTheStream) {
  auto grant = grants_.Reserve(NewRequestId(), 1 << 20, absl::Seconds(10));
  ASSERT_TRUE(grant.ok());
  auto received = std::async(std::launch::async, [&] {
    ReceiverOptions options;
    options.check_manifest = [](const format::Manifest& m) {
      return absl::FailedPreconditionError(absl::StrCat("model ", m.model_fingerprint));
    };
    return KvStreamReceiver(receiver_.get(), grant->request_id, options)
        .Run(Deadline::In(absl::Seconds(20)));
  });
  (void)SendAll(*grant).code();  // the sender may or may not finish before the receiver stops
  EXPECT_EQ(received.get().status().code(), absl::StatusCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(Transports, KvStreamTest, ::testing::ValuesIn(Transports()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvwire::control
