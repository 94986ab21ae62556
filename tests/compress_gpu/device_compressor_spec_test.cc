// Which specs the device compressor accepts (pure host logic: runs without a device).
#include <gtest/gtest.h>

#include <string>

#include "kvwire/compress/compressor.h"
#include "kvwire/compress/gpu/device_compressor.h"
#include "kvwire/compress/spec.h"

namespace kvwire::compress::gpu {
namespace {

CompressionSpec Spec(const std::string& text) {
  absl::StatusOr<CompressionSpec> spec = CompressionSpec::Parse(text);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : CompressionSpec{};
}

class SupportedSpec : public ::testing::TestWithParam<const char*> {};

TEST_P(SupportedSpec, IsAcceptedWithTheCpuQueryRows) {
  const CompressionSpec spec = Spec(GetParam());
  EXPECT_TRUE(DeviceCompressor::Supports(spec).ok()) << DeviceCompressor::Supports(spec);
  absl::StatusOr<DeviceCompressor> device = DeviceCompressor::Create(spec, 0.2f);
  ASSERT_TRUE(device.ok()) << device.status();
  absl::StatusOr<Compressor> cpu = Compressor::Create(spec, 0.2f);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  for (int64_t L : {1, 5, 31, 32, 33, 4096}) {
    EXPECT_EQ(device->QueryRows(L), cpu->QueryRows(L)) << "L=" << L;
  }
  EXPECT_EQ(device->spec().ToString(), spec.ToString());
  EXPECT_EQ(device->kept_fraction(), 0.2f);
}

INSTANTIATE_TEST_SUITE_P(
    DeviceCompressor, SupportedSpec,
    ::testing::Values("window/uniform", "snapkv/uniform", "defensive/uniform", "snapkv/adaptive",
                      "defensive+recent/adaptive/merge", "snapkv+recent=0.3/uniform/merge:zip",
                      "window/adaptive/merge:guarded", "snapkv+critical/uniform",
                      "defensive+critical+recent/adaptive/merge", kDefaultMethod));

struct Rejected {
  const char* spec;
  const char* part;  // what the UNIMPLEMENTED message must name
};

void PrintTo(const Rejected& r, std::ostream* os) { *os << r.spec; }

class UnsupportedSpec : public ::testing::TestWithParam<Rejected> {};

TEST_P(UnsupportedSpec, IsUnimplementedNamingThePart) {
  const CompressionSpec spec = Spec(GetParam().spec);
  for (const absl::Status& status :
       {DeviceCompressor::Supports(spec), DeviceCompressor::Create(spec, 0.5f).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
    EXPECT_NE(std::string(status.message()).find(GetParam().part), std::string::npos) << status;
  }
}

INSTANTIATE_TEST_SUITE_P(
    DeviceCompressor, UnsupportedSpec,
    ::testing::Values(Rejected{"h2o/uniform", "scorer h2o"},
                      Rejected{"recon/uniform/merge", "scorer recon"},
                      Rejected{"gate/adaptive", "scorer gate"},
                      Rejected{"h2o+critical/adaptive/merge", "scorer h2o"},
                      Rejected{"defensive+critical/global/merge", "allocator global"},
                      Rejected{"snapkv/global", "allocator global"},
                      Rejected{"window/global/merge:zip", "allocator global"}));

TEST(DeviceCompressor, CreateRejectsBadKeptFractions) {
  const CompressionSpec spec = Spec("snapkv/uniform");
  for (float b : {0.0f, -0.1f, 1.5f}) {
    EXPECT_EQ(DeviceCompressor::Create(spec, b).status().code(), absl::StatusCode::kInvalidArgument)
        << "b=" << b;
  }
  EXPECT_TRUE(DeviceCompressor::Create(spec, 1.0f).ok());
}

TEST(DeviceCompressor, CreateRejectsInvalidParameters) {
  CompressionSpec spec = Spec("snapkv/uniform");
  spec.pool_kernel = 4;  // must be odd
  const absl::Status status = DeviceCompressor::Create(spec, 0.5f).status();
  EXPECT_EQ(status.code(), Compressor::Create(spec, 0.5f).status().code()) << status;
  EXPECT_FALSE(status.ok());
}

}  // namespace
}  // namespace kvwire::compress::gpu
