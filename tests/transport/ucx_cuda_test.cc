// The UCX transport moving CUDA device memory between two transports on one GPU, staged through
// pinned host memory by kernels::cuda::MakeDeviceCopier (or natively where UCX has CUDA support),
// and the copier's own checks. Label `gpu`: skips, saying why, without a device.
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_copier.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/ucx/ucx_transport.h"
#include "tests/transport/transport_test_util.h"

namespace kvwire::transport::testing {
namespace {

namespace kc = ::kvwire::kernels::cuda;

Deadline Soon() { return Deadline::In(absl::Seconds(30)); }

const absl::Status& Probe() {
  static const absl::Status* const probe = new absl::Status(kc::ProbeDevice());
  return *probe;
}

#define SKIP_WITHOUT_DEVICE() \
  if (!Probe().ok()) GTEST_SKIP() << Probe().message()

TEST(CudaCopier, WithoutADeviceSaysSo) {
  if (Probe().ok()) GTEST_SKIP() << "a device is present";
  absl::StatusOr<std::shared_ptr<DeviceCopier>> copier = kc::MakeDeviceCopier(0);
  EXPECT_EQ(copier.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(copier.status().message().find("no CUDA device"), std::string::npos)
      << copier.status();
}

TEST(CudaCopier, CopiesBothWaysAndRefusesWhatIsNotItsDeviceMemory) {
  SKIP_WITHOUT_DEVICE();
  auto copier = kc::MakeDeviceCopier(0);
  ASSERT_TRUE(copier.ok()) << copier.status();
  EXPECT_EQ((*copier)->description().rfind("cuda:0 ", 0), 0u) << (*copier)->description();
  EXPECT_EQ(kc::MakeDeviceCopier(1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
  constexpr size_t kBytes = (1 << 20) + 7;
  absl::StatusOr<kc::DeviceBuffer> device = kc::DeviceBuffer::Allocate(kBytes);
  ASSERT_TRUE(device.ok());
  absl::StatusOr<void*> pinned = (*copier)->AllocatePinned(kBytes);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  auto* host = static_cast<uint8_t*>(*pinned);
  for (size_t i = 0; i < kBytes; ++i) host[i] = static_cast<uint8_t>(i * 31 + 5);
  ASSERT_TRUE((*copier)->ToDevice(device->data(), host, kBytes, Soon()).ok());
  std::vector<uint8_t> back(kBytes, 0);
  ASSERT_TRUE((*copier)->ToHost(back.data(), device->data(), kBytes, Soon()).ok());
  EXPECT_EQ(std::memcmp(back.data(), host, kBytes), 0);
  // Part of an allocation, at an offset.
  ASSERT_TRUE((*copier)->ToHost(back.data(), device->as<uint8_t>() + 100, 1000, Soon()).ok());
  EXPECT_EQ(std::memcmp(back.data(), host + 100, 1000), 0);

  absl::Status host_as_device = (*copier)->ToHost(back.data(), host, 16, Soon());
  EXPECT_EQ(host_as_device.code(), absl::StatusCode::kInvalidArgument) << host_as_device;
  std::vector<uint8_t> pageable(16);
  EXPECT_EQ((*copier)->ToDevice(pageable.data(), host, 16, Soon()).code(),
            absl::StatusCode::kInvalidArgument);
  // Far past the end, beyond any rounding of the allocation's size by the driver.
  std::vector<uint8_t> big(kBytes + (size_t{64} << 20));
  absl::Status past_end =
      (*copier)->ToHost(big.data(), device->as<uint8_t>() + 8, big.size(), Soon());
  EXPECT_EQ(past_end.code(), absl::StatusCode::kInvalidArgument) << past_end;
  EXPECT_TRUE((*copier)->ToHost(back.data(), host, 0, Soon()).ok());  // zero bytes: nothing
  // The device is still healthy after the refusals.
  ASSERT_TRUE((*copier)->ToHost(back.data(), device->data(), kBytes, Soon()).ok());
  EXPECT_EQ(std::memcmp(back.data(), host, kBytes), 0);
  (*copier)->FreePinned(host);
}

class UcxCuda : public ::testing::TestWithParam<std::string> {};

TEST_P(UcxCuda, DeviceToDeviceForEachSize) {
  SKIP_WITHOUT_DEVICE();
  auto copier = kc::MakeDeviceCopier(0);
  ASSERT_TRUE(copier.ok()) << copier.status();
  auto ctx = kc::Context::Create(0);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  UcxOptions options;
  options.transports = GetParam() == "tcp" ? "tcp" : "posix,cma,self";
  options.device_copier = *copier;
  auto receiver = MakeUcxTransport(options);
  auto sender = MakeUcxTransport(options);
  ASSERT_TRUE(receiver.ok() && sender.ok());
  ASSERT_TRUE((*sender)->capabilities().supports_gpu_memory);
  std::cout << "UCX device memory: "
            << ((*sender)->capabilities().gpu_memory_staged ? "staged through pinned host memory"
                                                            : "native")
            << "\n";
  absl::Mutex mu;
  std::vector<kc::DeviceBuffer> destinations;
  (*receiver)->SetAcceptor([&](const FrameInfo& info, absl::Span<const uint8_t>)
                               -> absl::StatusOr<Destination> {
    absl::MutexLock lock(&mu);
    KVWIRE_ASSIGN_OR_RETURN(kc::DeviceBuffer buf, kc::DeviceBuffer::Allocate(info.payload_bytes));
    destinations.push_back(std::move(buf));
    return Destination{absl::MakeSpan(destinations.back().as<uint8_t>(), info.payload_bytes),
                       MemoryKind::kCuda};
  });
  auto conn = (*sender)->Connect((*receiver)->LocalAddress(), Soon());
  ASSERT_TRUE(conn.ok()) << conn.status();
  const RequestId request = NewRequestId();
  const std::vector<uint64_t> sizes = {0, 1, 4096, (1 << 20) + 3, 64 << 20};
  for (size_t i = 0; i < sizes.size(); ++i) {
    FrameInfo info{request, 0, static_cast<uint32_t>(i), sizes[i], NewToken()};
    const std::vector<uint8_t> payload = MakePayload(info);
    absl::StatusOr<kc::DeviceBuffer> source = kc::DeviceBuffer::Allocate(sizes[i]);
    ASSERT_TRUE(source.ok());
    if (sizes[i] > 0) {
      ASSERT_TRUE(source->Upload(**ctx, payload.data(), payload.size()).ok());
      ASSERT_TRUE((*ctx)->Synchronize().ok());
    }
    auto op = (*conn)->StartSend(
        info, {}, absl::MakeConstSpan(source->as<uint8_t>(), sizes[i]), MemoryKind::kCuda);
    ASSERT_TRUE(op.ok()) << op.status();
    ASSERT_TRUE((*op)->Wait(Soon()).ok()) << sizes[i];
    absl::StatusOr<ReceivedFrame> frame = (*receiver)->Receive(request, Soon());
    ASSERT_TRUE(frame.ok()) << frame.status();
    ASSERT_EQ(frame->payload.size(), sizes[i]);
    std::vector<uint8_t> landed(sizes[i]);
    if (sizes[i] > 0) {
      ASSERT_TRUE((*copier)->ToHost(landed.data(), frame->payload.data(), sizes[i], Soon()).ok());
    }
    EXPECT_EQ(FirstMismatch(info, landed), -1) << sizes[i];
  }
  EXPECT_TRUE((*receiver)->CancelReceive(request, Soon()).ok());
  conn->reset();
  sender->reset();
  receiver->reset();
}

INSTANTIATE_TEST_SUITE_P(Ucx, UcxCuda, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvwire::transport::testing
