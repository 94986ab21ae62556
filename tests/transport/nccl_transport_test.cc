// The NCCL transport: FromNccl's table runs everywhere; transfers need two CUDA devices (NCCL
// refuses two ranks on one device) and skip visibly otherwise.
#include "kvwire/transport/nccl/nccl_transport.h"

#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvwire/transport/nccl/nccl_status.h"

namespace kvwire::transport {
namespace {

TEST(FromNccl, MapsEveryResultOntoKvwireCodes) {
  using C = absl::StatusCode;
  const std::pair<ncclResult_t, C> table[] = {
      {ncclSuccess, C::kOk},
      {ncclUnhandledCudaError, C::kInternal},
      {ncclSystemError, C::kUnavailable},
      {ncclInternalError, C::kInternal},
      {ncclInvalidArgument, C::kInvalidArgument},
      {ncclInvalidUsage, C::kFailedPrecondition},
      {ncclRemoteError, C::kUnavailable},
      {ncclInProgress, C::kUnknown},
      {static_cast<ncclResult_t>(99), C::kUnknown},
  };
  for (const auto& [result, code] : table) {
    EXPECT_EQ(nccl::FromNccl(result, "op").code(), code) << static_cast<int>(result);
  }
  EXPECT_NE(nccl::FromNccl(ncclRemoteError, "sending layer 2").message().find("sending layer 2"),
            absl::string_view::npos);
}

int CudaDevices() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

TEST(NcclTransport, RefusesToStartWithoutADevice) {
  if (CudaDevices() > 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_TRUE(absl::IsFailedPrecondition(MakeNcclTransport().status()));
}

TEST(NcclTransport, DeliversHostPayloadsAndRejectsBeforeWriting) {
  if (CudaDevices() < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << CudaDevices();
  auto receiver = MakeNcclTransport(NcclOptions{.cuda_device = 1});
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  std::vector<uint8_t> dest(1 << 20, 0);
  (*receiver)->SetAcceptor(
      [&](const FrameInfo& info, absl::Span<const uint8_t>) -> absl::StatusOr<Destination> {
        if (info.request_id == 2) return absl::PermissionDeniedError("no grant");
        return Destination{absl::MakeSpan(dest).first(info.payload_bytes)};
      });
  auto sender = MakeNcclTransport(NcclOptions{.cuda_device = 0});
  ASSERT_TRUE(sender.ok()) << sender.status();
  auto conn = (*sender)->Connect((*receiver)->LocalAddress(), Deadline::In(absl::Seconds(60)));
  ASSERT_TRUE(conn.ok()) << conn.status();
  std::vector<uint8_t> payload(1 << 20);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE((*conn)
                  ->Send(FrameInfo{1, 0, 0, payload.size(), {}}, {}, payload,
                         Deadline::In(absl::Seconds(60)))
                  .ok());
  auto frame = (*receiver)->Receive(1, Deadline::In(absl::Seconds(60)));
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(dest, payload);
  std::vector<uint8_t> untouched = dest;
  absl::Status rejected = (*conn)->Send(FrameInfo{2, 0, 0, payload.size(), {}}, {}, payload,
                                        Deadline::In(absl::Seconds(60)));
  EXPECT_TRUE(absl::IsPermissionDenied(rejected)) << rejected;
  EXPECT_EQ(dest, untouched);
}

}  // namespace
}  // namespace kvwire::transport
