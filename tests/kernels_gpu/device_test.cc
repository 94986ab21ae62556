// The device layer: error translation (runs everywhere) and the probe (skips cleanly without a
// device: that path must neither crash nor hang).
#include "kernels/cuda/device.h"

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::GpuTest;

TEST(FromCuda, MapsErrorsToStatusCodesAndNamesTheCall) {
  struct Case {
    cudaError_t error;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {cudaSuccess, absl::StatusCode::kOk},
      {cudaErrorMemoryAllocation, absl::StatusCode::kResourceExhausted},
      {cudaErrorNoDevice, absl::StatusCode::kUnavailable},
      {cudaErrorInsufficientDriver, absl::StatusCode::kUnavailable},
      {cudaErrorInvalidValue, absl::StatusCode::kInvalidArgument},
      {cudaErrorLaunchTimeout, absl::StatusCode::kDeadlineExceeded},
      {cudaErrorNoKernelImageForDevice, absl::StatusCode::kFailedPrecondition},
      {cudaErrorIllegalAddress, absl::StatusCode::kInternal},
  };
  for (const Case& c : cases) {
    const absl::Status s = FromCuda(c.error, "cudaMalloc(64 bytes)");
    EXPECT_EQ(s.code(), c.code) << cudaGetErrorName(c.error);
    if (!s.ok()) {
      EXPECT_NE(s.message().find("cudaMalloc(64 bytes)"), absl::string_view::npos) << s;
      EXPECT_NE(s.message().find(cudaGetErrorName(c.error)), absl::string_view::npos) << s;
    }
  }
}

TEST(FromCublas, MapsStatusesToStatusCodes) {
  EXPECT_TRUE(FromCublas(CUBLAS_STATUS_SUCCESS, "cublasGemmEx").ok());
  EXPECT_EQ(FromCublas(CUBLAS_STATUS_ALLOC_FAILED, "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromCublas(CUBLAS_STATUS_INVALID_VALUE, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromCublas(CUBLAS_STATUS_ARCH_MISMATCH, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  const absl::Status s = FromCublas(CUBLAS_STATUS_EXECUTION_FAILED, "cublasGemmEx");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("cublasGemmEx"), absl::string_view::npos) << s;
}

TEST(ProbeDevice, AnswersWithoutHangingAndExplainsAMissingDevice) {
  const absl::Status probe = ProbeDevice();
  if (probe.ok()) {
    absl::StatusOr<std::unique_ptr<Context>> ctx = Context::Create(0);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    EXPECT_GT((*ctx)->properties().sm_count, 0);
  } else {
    EXPECT_EQ(probe.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(probe.message().rfind("no CUDA device: ", 0), 0u) << probe;
    absl::StatusOr<std::unique_ptr<Context>> ctx = Context::Create(0);
    EXPECT_EQ(ctx.status().code(), absl::StatusCode::kUnavailable);
  }
}

TEST_F(GpuTest, BufferRoundTripsAndRejectsOutOfRangeCopies) {
  std::vector<int32_t> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<int32_t>(i * 7 - 3);
  DeviceBuffer buf = Up(host);
  absl::StatusOr<DeviceBuffer> copy = DeviceBuffer::Allocate(host.size() * 4);
  ASSERT_TRUE(copy.ok()) << copy.status();
  ASSERT_TRUE(CopyDeviceToDevice(ctx(), copy->data(), buf.data(), host.size() * 4).ok());
  EXPECT_EQ(Down<int32_t>(*copy, host.size()), host);
  EXPECT_EQ(buf.Upload(ctx(), host.data(), 8, buf.size() - 4).code(),
            absl::StatusCode::kInvalidArgument);
  int32_t one = 0;
  EXPECT_EQ(buf.Download(ctx(), &one, 4, buf.size()).code(), absl::StatusCode::kInvalidArgument);
}

// A failed cudaMalloc also sets the thread's last CUDA error; the status already reports it, so it
// must not linger for the next launch check (cudaGetLastError) to blame on an unrelated kernel.
// The CheckLaunch below also clears it, so a lingering error fails here and not in a later test.
TEST_F(GpuTest, HugeAllocationIsResourceExhausted) {
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(size_t{1} << 50);
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kResourceExhausted) << buf.status();
  const absl::Status after = ctx().CheckLaunch("no kernel, after the failed allocation");
  EXPECT_TRUE(after.ok()) << after;
}

TEST_F(GpuTest, StreamTimerMeasuresACopy) {
  absl::StatusOr<DeviceBuffer> a = DeviceBuffer::Allocate(64 << 20),
                               b = DeviceBuffer::Allocate(64 << 20);
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<StreamTimer> timer = StreamTimer::Create(ctx());
  ASSERT_TRUE(timer.ok()) << timer.status();
  ASSERT_TRUE(timer->Start().ok());
  ASSERT_TRUE(CopyDeviceToDevice(ctx(), b->data(), a->data(), a->size()).ok());
  absl::StatusOr<double> ms = timer->StopMillis();
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GT(*ms, 0.0);
}

}  // namespace
}  // namespace kvwire::kernels::cuda
