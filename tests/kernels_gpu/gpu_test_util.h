// tests/kernels_gpu/gpu_test_util.h — fixture and helpers of the CUDA parity tests.
//
// GpuTest probes for a device once per process; without one every test skips with
// "no CUDA device: <reason>". Random inputs come from fixed seeds so a failure reproduces.
#ifndef KVWIRE_TESTS_KERNELS_GPU_GPU_TEST_UTIL_H_
#define KVWIRE_TESTS_KERNELS_GPU_GPU_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cuda/device.h"

namespace kvwire::kernels::cuda::testing {

// The probe result, computed once.
const absl::Status& DeviceProbe();

template <typename Base = ::testing::Test>
class GpuTestBase : public Base {
 protected:
  void SetUp() override {
    if (!DeviceProbe().ok()) GTEST_SKIP() << DeviceProbe().message();
    absl::StatusOr<std::unique_ptr<Context>> ctx = Context::Create(0);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    ctx_ = std::move(*ctx);
  }
  Context& ctx() { return *ctx_; }

  // Uploads `host`; fails the test on error.
  template <typename T>
  DeviceBuffer Up(const std::vector<T>& host) {
    absl::StatusOr<DeviceBuffer> buf = ToDevice(*ctx_, host);
    EXPECT_TRUE(buf.ok()) << buf.status();
    return buf.ok() ? std::move(*buf) : DeviceBuffer();
  }
  template <typename T>
  DeviceBuffer Zeros(size_t n) {
    return Up(std::vector<T>(n, T{}));
  }
  template <typename T>
  std::vector<T> Down(const DeviceBuffer& buf, size_t n) {
    absl::StatusOr<std::vector<T>> host = ToHost<T>(*ctx_, buf, n);
    EXPECT_TRUE(host.ok()) << host.status();
    return host.ok() ? std::move(*host) : std::vector<T>(n);
  }

  std::unique_ptr<Context> ctx_;
};

using GpuTest = GpuTestBase<>;
template <typename P>
using GpuParamTest = GpuTestBase<::testing::TestWithParam<P>>;

std::vector<float> RandomNormal(size_t n, std::mt19937& rng, float sd = 1.0f);
std::vector<float> RandomUniform(size_t n, std::mt19937& rng, float lo, float hi);

// Largest |a[i] - b[i]| / (atol + rtol * |b[i]|); <= 1 means within tolerance. Sizes must match.
double ToleranceRatio(const std::vector<float>& a, const std::vector<float>& b, double atol,
                      double rtol);

}  // namespace kvwire::kernels::cuda::testing

#endif  // KVWIRE_TESTS_KERNELS_GPU_GPU_TEST_UTIL_H_
