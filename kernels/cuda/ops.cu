// Llama block row/elementwise operations on the device. See ops.h.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/ops.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Sum over a block of kThreads threads; every thread gets the result.
__device__ float BlockSum(float v, float* shared) {
  v = internal::WarpSum(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  return total;
}

__device__ float BlockMax(float v, float* shared) {
  v = internal::WarpMax(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, shared[w]);
  return m;
}

__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const float* x, const float* weight, int64_t n, float eps, float* y) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += xr[i] * xr[i];
  const float inv = 1.0f / sqrtf(BlockSum(s, red) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) yr[i] = xr[i] * inv * weight[i];
}

__global__ void RopeKernel(float* x, int64_t n_tokens, int n_heads, int head_dim,
                           const int32_t* positions, float theta, bool adjacent) {
  const int half = head_dim / 2;
  const int64_t total = n_tokens * half * n_heads;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int h = static_cast<int>(t % n_heads);
    const int i = static_cast<int>((t / n_heads) % half);
    const int64_t tok = t / (int64_t{n_heads} * half);
    const double angle = positions[tok] * pow(static_cast<double>(theta), -2.0 * i / head_dim);
    const float c = static_cast<float>(cos(angle)), s = static_cast<float>(sin(angle));
    float* v = x + (tok * n_heads + h) * head_dim;
    const int a = adjacent ? 2 * i : i, b = adjacent ? a + 1 : a + half;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

__global__ void __launch_bounds__(kThreads) SoftmaxKernel(float* x, int64_t n) {
  __shared__ float red[32];
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, x[i]);
  m = BlockMax(m, red);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += (x[i] = expf(x[i] - m));
  const float inv = 1.0f / BlockSum(s, red);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) x[i] *= inv;
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

__global__ void RowBiasKernel(float* y, const float* bias, int64_t n, int64_t width) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += bias[i % width];
  }
}

absl::Status CheckSizes(const char* what, int64_t a, int64_t b) {
  if (a < 0 || b < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": negative size ", a, " x ", b));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RmsNorm(Context& ctx, const float* x, const float* weight, int64_t n_rows, int64_t n,
                     float eps, float* y) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("RmsNorm", n_rows, n));
  if (n_rows == 0 || n == 0) return absl::OkStatus();
  if (n_rows > 0x7FFFFFFF) return absl::InvalidArgumentError("RmsNorm: too many rows");
  RmsNormKernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(x, weight, n, eps, y);
  return ctx.CheckLaunch("RmsNormKernel");
}

absl::Status Rope(Context& ctx, float* x, int64_t n_tokens, int n_heads, int head_dim,
                  const int32_t* positions, float theta, RopeStyle style) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("Rope", n_tokens, n_heads));
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: head_dim ", head_dim, " must be even"));
  }
  const int64_t total = n_tokens * n_heads * (head_dim / 2);
  if (total == 0) return absl::OkStatus();
  RopeKernel<<<internal::GridFor(total, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      x, n_tokens, n_heads, head_dim, positions, theta, style == RopeStyle::kAdjacent);
  return ctx.CheckLaunch("RopeKernel");
}

absl::Status Softmax(Context& ctx, float* x, int64_t n) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("Softmax", n, 1));
  if (n == 0) return absl::OkStatus();
  SoftmaxKernel<<<1, kThreads, 0, ctx.stream()>>>(x, n);
  return ctx.CheckLaunch("SoftmaxKernel");
}

absl::Status SwiGlu(Context& ctx, const float* gate, const float* up, int64_t n, float* out) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("SwiGlu", n, 1));
  if (n == 0) return absl::OkStatus();
  SwiGluKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(gate, up, n,
                                                                                   out);
  return ctx.CheckLaunch("SwiGluKernel");
}

absl::Status AddInPlace(Context& ctx, float* y, const float* x, int64_t n) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("AddInPlace", n, 1));
  if (n == 0) return absl::OkStatus();
  AddKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(y, x, n);
  return ctx.CheckLaunch("AddKernel");
}

absl::Status AddRowBias(Context& ctx, float* y, const float* bias, int64_t n_rows, int64_t width) {
  KVWIRE_RETURN_IF_ERROR(CheckSizes("AddRowBias", n_rows, width));
  const int64_t n = n_rows * width;
  if (n == 0) return absl::OkStatus();
  RowBiasKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(y, bias, n,
                                                                                    width);
  return ctx.CheckLaunch("RowBiasKernel");
}

}  // namespace kvwire::kernels::cuda
