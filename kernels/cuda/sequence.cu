// Position and recency fills on the device. See sequence.h.
#include <cuda_runtime.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/sequence.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void FillPositionsKernel(int32_t* out, int64_t n, int32_t first) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = first + static_cast<int32_t>(i);
  }
}

__global__ void OffsetPositionsKernel(int32_t* data, int64_t n, int32_t delta) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    data[i] += delta;
  }
}

__global__ void RecencyKernel(float* out, int64_t total, int64_t length) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k % length;
    out[k] = __fdiv_rn(static_cast<float>(i + 1), static_cast<float>(length));
  }
}

absl::Status CheckRange(const char* what, int64_t n, int64_t first) {
  if (n < 0 || first < 0 || first + n > int64_t{std::numeric_limits<int32_t>::max()}) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", n, " positions from ", first, " do not fit int32"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FillPositions(Context& ctx, int32_t* out, int64_t n, int32_t first) {
  KVWIRE_RETURN_IF_ERROR(CheckRange("FillPositions", n, first));
  if (n == 0) return absl::OkStatus();
  FillPositionsKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(out, n,
                                                                                          first);
  return ctx.CheckLaunch("FillPositionsKernel");
}

absl::Status OffsetPositions(Context& ctx, int32_t* data, int64_t n, int32_t delta) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("OffsetPositions: n = ", n));
  if (n == 0 || delta == 0) return absl::OkStatus();
  OffsetPositionsKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(data, n,
                                                                                            delta);
  return ctx.CheckLaunch("OffsetPositionsKernel");
}

absl::Status FillRecencyScores(Context& ctx, float* out, int heads, int64_t length) {
  if (heads < 0 || length < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FillRecencyScores: ", heads, " heads of length ", length));
  }
  const int64_t total = int64_t{heads} * length;
  if (total == 0) return absl::OkStatus();
  RecencyKernel<<<internal::GridFor(total, kThreads, ctx), kThreads, 0, ctx.stream()>>>(out, total,
                                                                                        length);
  return ctx.CheckLaunch("RecencyKernel");
}

}  // namespace kvwire::kernels::cuda
