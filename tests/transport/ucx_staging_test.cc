// The UCX transport carrying device payloads through pinned host memory (UcxOptions::
// device_copier) when UCX itself cannot touch device memory. "Device memory" here belongs to a
// fake copier, so every path runs without a device; tests/transport/ucx_cuda_test.cc repeats the
// transfers with the CUDA copier on a GPU.
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/ucx/ucx_transport.h"
#include "tests/transport/fake_device_copier.h"
#include "tests/transport/transport_test_util.h"

namespace kvwire::transport::testing {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(20);
Deadline Soon() { return Deadline::In(kTimeout); }

UcxOptions OptionsFor(const std::string& name) {
  UcxOptions options;
  options.transports = name == "tcp" ? "tcp" : "posix,cma,self";
  return options;
}

class UcxStaging : public ::testing::TestWithParam<std::string> {
 protected:
  // Sender and receiver, each with its own copier (as on two machines).
  void Start(UcxOptions sender_options, UcxOptions receiver_options) {
    auto receiver = MakeUcxTransport(receiver_options);
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    receiver_ = std::move(*receiver);
    receiver_->SetAcceptor([this](const FrameInfo& info, absl::Span<const uint8_t>)
                               -> absl::StatusOr<Destination> {
      absl::MutexLock lock(&mu_);
      ++accepted_;
      if (dest_kind_ == MemoryKind::kCuda) {
        uint8_t* d = receiver_device_->AllocateDevice(info.payload_bytes);
        return Destination{absl::MakeSpan(d, info.payload_bytes), MemoryKind::kCuda};
      }
      host_buffers_.emplace_back(info.payload_bytes, uint8_t{0});
      return Destination{absl::MakeSpan(host_buffers_.back())};
    });
    auto sender = MakeUcxTransport(sender_options);
    ASSERT_TRUE(sender.ok()) << sender.status();
    sender_ = std::move(*sender);
    auto conn = sender_->Connect(receiver_->LocalAddress(), Soon());
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = std::move(*conn);
  }

  void StartBoth() {
    UcxOptions s = OptionsFor(GetParam());
    s.device_copier = sender_device_;
    UcxOptions r = OptionsFor(GetParam());
    r.device_copier = receiver_device_;
    Start(s, r);
  }

  void TearDown() override {
    conn_.reset();
    sender_.reset();
    receiver_.reset();
  }

  // The payload of `info` in the sender's fake device memory.
  uint8_t* DevicePayload(const FrameInfo& info) {
    const std::vector<uint8_t> bytes = MakePayload(info);
    uint8_t* d = sender_device_->AllocateDevice(bytes.size());
    if (!bytes.empty()) std::memcpy(d, bytes.data(), bytes.size());
    return d;
  }

  absl::Status SendDevice(const FrameInfo& info, const uint8_t* device) {
    auto op = conn_->StartSend(info, {}, absl::MakeConstSpan(device, info.payload_bytes),
                               MemoryKind::kCuda);
    if (!op.ok()) return op.status();
    return (*op)->Wait(Soon());
  }

  int accepted() {
    absl::MutexLock lock(&mu_);
    return accepted_;
  }

  std::shared_ptr<FakeDeviceCopier> sender_device_ = std::make_shared<FakeDeviceCopier>();
  std::shared_ptr<FakeDeviceCopier> receiver_device_ = std::make_shared<FakeDeviceCopier>();
  absl::Mutex mu_;
  MemoryKind dest_kind_ ABSL_GUARDED_BY(mu_) = MemoryKind::kCuda;
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::vector<uint8_t>> host_buffers_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Transport> receiver_;
  std::unique_ptr<Transport> sender_;
  std::unique_ptr<Connection> conn_;
};

TEST_P(UcxStaging, AdvertisesStagedDeviceMemoryOnlyWithACopier) {
  auto plain = MakeUcxTransport(OptionsFor(GetParam()));
  ASSERT_TRUE(plain.ok());
  if ((*plain)->capabilities().supports_gpu_memory) {
    GTEST_SKIP() << "this UCX handles CUDA memory itself, so nothing is staged";
  }
  EXPECT_FALSE((*plain)->capabilities().gpu_memory_staged);
  StartBoth();
  EXPECT_TRUE(sender_->capabilities().supports_gpu_memory);
  EXPECT_TRUE(sender_->capabilities().gpu_memory_staged);
}

TEST_P(UcxStaging, DeviceToDeviceForEachSize) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  // Empty, eager sizes and rendezvous sizes, across block classes.
  const std::vector<uint64_t> sizes = {0, 1, 4096, 65537, 1 << 20, (8 << 20) + 5};
  uint64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    FrameInfo info{request, 1, static_cast<uint32_t>(i), sizes[i], NewToken()};
    ASSERT_TRUE(SendDevice(info, DevicePayload(info)).ok()) << sizes[i];
    absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->payload.size(), sizes[i]);
    // The payload is in the receiver's device memory, not in a staging block.
    EXPECT_EQ(FirstMismatch(info, frame->payload), -1) << sizes[i];
    total += sizes[i];
  }
  EXPECT_EQ(sender_device_->counts().to_host_bytes, total);
  EXPECT_EQ(receiver_device_->counts().to_device_bytes, total);
  EXPECT_TRUE(receiver_->CancelReceive(request, Soon()).ok());
}

TEST_P(UcxStaging, HostToDeviceAndDeviceToHost) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  FrameInfo to_device{request, 0, 0, 3 << 20, {}};
  const std::vector<uint8_t> host = MakePayload(to_device);
  ASSERT_TRUE(conn_->Send(to_device, {}, host, Soon()).ok());
  absl::StatusOr<ReceivedFrame> a = receiver_->Receive(request, Soon());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(FirstMismatch(to_device, a->payload), -1);
  EXPECT_EQ(sender_device_->counts().to_host_copies, 0);

  {
    absl::MutexLock lock(&mu_);
    dest_kind_ = MemoryKind::kHost;
  }
  FrameInfo to_host{request, 0, 1, (2 << 20) + 3, {}};
  ASSERT_TRUE(SendDevice(to_host, DevicePayload(to_host)).ok());
  absl::StatusOr<ReceivedFrame> b = receiver_->Receive(request, Soon());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(FirstMismatch(to_host, b->payload), -1);
  EXPECT_EQ(receiver_device_->counts().to_device_bytes, to_device.payload_bytes);
}

TEST_P(UcxStaging, TheSendersDeviceBufferIsFreeOnceStartSendReturns) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  FrameInfo info{request, 0, 0, 4 << 20, {}};
  uint8_t* device = DevicePayload(info);
  auto op = conn_->StartSend(info, {}, absl::MakeConstSpan(device, info.payload_bytes),
                             MemoryKind::kCuda);
  ASSERT_TRUE(op.ok()) << op.status();
  std::memset(device, 0xAB, info.payload_bytes);  // reused at once, e.g. for the next layer
  ASSERT_TRUE((*op)->Wait(Soon()).ok());
  absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(FirstMismatch(info, frame->payload), -1);
}

TEST_P(UcxStaging, ManyFramesReuseAFewPinnedBlocks) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  constexpr int kFrames = 48;
  std::vector<std::unique_ptr<SendOperation>> ops;
  std::vector<FrameInfo> infos;
  for (int i = 0; i < kFrames; ++i) {
    infos.push_back(FrameInfo{request, 2, static_cast<uint32_t>(i), 300 << 10, {}});
    auto op = conn_->StartSend(infos.back(), {},
                               absl::MakeConstSpan(DevicePayload(infos.back()), 300 << 10),
                               MemoryKind::kCuda);
    ASSERT_TRUE(op.ok()) << op.status();
    ops.push_back(std::move(*op));
    if (ops.size() == 8) {  // eight in flight at a time
      for (auto& o : ops) ASSERT_TRUE(o->Wait(Soon()).ok());
      ops.clear();
    }
  }
  for (int i = 0; i < kFrames; ++i) {
    absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(FirstMismatch(infos[frame->info.sequence], frame->payload), -1);
  }
  EXPECT_LE(sender_device_->counts().pinned_allocations, 8);
  EXPECT_LE(receiver_device_->counts().pinned_allocations, 8);
}

TEST_P(UcxStaging, AHostPointerMarkedAsDeviceIsRefusedAndNothingIsSent) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  FrameInfo info{request, 0, 0, 1 << 20, {}};
  const std::vector<uint8_t> host = MakePayload(info);
  auto op = conn_->StartSend(info, {}, host, MemoryKind::kCuda);
  ASSERT_FALSE(op.ok());
  EXPECT_EQ(op.status().code(), absl::StatusCode::kInvalidArgument) << op.status();
  EXPECT_NE(op.status().message().find("staging a device payload"), std::string::npos);
  // A range that runs past its device allocation is refused too.
  uint8_t* device = sender_device_->AllocateDevice(1000);
  FrameInfo longer{request, 0, 1, 1001, {}};
  EXPECT_EQ(SendDevice(longer, device).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(receiver_->Receive(request, Deadline::In(absl::Milliseconds(300))).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(accepted(), 0);
  // The connection still works.
  FrameInfo fine{request, 0, 2, 5000, {}};
  ASSERT_TRUE(SendDevice(fine, DevicePayload(fine)).ok());
  EXPECT_TRUE(receiver_->Receive(request, Soon()).ok());
}

TEST_P(UcxStaging, AFailedCopyToTheDeviceFailsTheSendAndTheReceive) {
  StartBoth();
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  receiver_device_->FailToDevice(absl::InternalError("fake: an uncorrectable ECC error"));
  const RequestId request = NewRequestId();
  for (uint64_t size : {uint64_t{100}, uint64_t{2} << 20}) {  // eager and rendezvous
    FrameInfo info{request, 0, static_cast<uint32_t>(size), size, {}};
    absl::Status sent = SendDevice(info, DevicePayload(info));
    EXPECT_EQ(sent.code(), absl::StatusCode::kInternal) << sent;
    EXPECT_NE(sent.message().find("copying a received payload"), std::string::npos) << sent;
    absl::StatusOr<ReceivedFrame> frame = receiver_->Receive(request, Soon());
    EXPECT_EQ(frame.status().code(), absl::StatusCode::kInternal) << frame.status();
  }
}

TEST_P(UcxStaging, StagingPastTheLimitIsRefusedOnEitherSide) {
  UcxOptions s = OptionsFor(GetParam());
  s.device_copier = sender_device_;
  s.staging_limit_bytes = 1 << 20;
  UcxOptions r = OptionsFor(GetParam());
  r.device_copier = receiver_device_;
  r.staging_limit_bytes = 1 << 20;
  Start(s, r);
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  const RequestId request = NewRequestId();
  FrameInfo info{request, 0, 0, 2 << 20, {}};
  EXPECT_EQ(SendDevice(info, DevicePayload(info)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(accepted(), 0);
  // A host payload into a device destination: the receiver cannot stage it and says so.
  const std::vector<uint8_t> host = MakePayload(info);
  absl::Status sent = conn_->Send(info, {}, host, Soon());
  EXPECT_EQ(sent.code(), absl::StatusCode::kResourceExhausted) << sent;
  EXPECT_EQ(receiver_->Receive(request, Soon()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_P(UcxStaging, AHungCopyEndsWithDeadlineExceeded) {
  UcxOptions s = OptionsFor(GetParam());
  s.device_copier = sender_device_;
  s.staging_copy_timeout = absl::Milliseconds(50);
  UcxOptions r = OptionsFor(GetParam());
  r.device_copier = receiver_device_;
  Start(s, r);
  if (!sender_->capabilities().gpu_memory_staged) GTEST_SKIP() << "UCX has CUDA support";
  sender_device_->Hang();
  FrameInfo info{NewRequestId(), 0, 0, 4096, {}};
  EXPECT_EQ(SendDevice(info, DevicePayload(info)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(accepted(), 0);
}

TEST_P(UcxStaging, WithoutACopierDeviceMemoryIsInvalidArgument) {
  Start(OptionsFor(GetParam()), OptionsFor(GetParam()));
  if (sender_->capabilities().supports_gpu_memory) GTEST_SKIP() << "UCX has CUDA support";
  FrameInfo info{NewRequestId(), 0, 0, 4096, {}};
  absl::Status sent = SendDevice(info, DevicePayload(info));
  EXPECT_EQ(sent.code(), absl::StatusCode::kInvalidArgument) << sent;
  EXPECT_EQ(receiver_->RegisterMemory(DevicePayload(info), 4096, MemoryKind::kCuda)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Ucx, UcxStaging, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvwire::transport::testing
