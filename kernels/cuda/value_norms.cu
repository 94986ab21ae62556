// Value-output norms (+critical) on the device. See value_norms.h.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/value_norms.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTokens = 2 * kWarps;  // warp w owns values w and w + kWarps of the block
constexpr int kRows = 32;            // W_O rows per tile, one per lane

struct NormArgs {
  const float* values;
  int64_t stride, n;
  const float* wo;
  int hidden, ld, head_dim, first_head, group;
};

// Stages W_O^(g) rows [c0, c0 + kRows) into ws (row pitch d + 1 avoids bank conflicts).
__device__ void LoadRows(const NormArgs& a, int g, int c0, float* ws) {
  const int d = a.head_dim;
  for (int k = threadIdx.x; k < kRows * d; k += kThreads) {
    const int r = k / d, j = k % d;
    ws[r * (d + 1) + j] =
        c0 + r < a.hidden ? a.wo[int64_t{c0 + r} * a.ld + int64_t{g} * d + j] : 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads) ValueNormKernel(const NormArgs a, float* out) {
  extern __shared__ float smem[];
  __shared__ float nu[kTokens];
  const int d = a.head_dim;
  float* vs = smem;                // [kTokens][d]
  float* ws = smem + kTokens * d;  // [kRows][d + 1]
  const int64_t i0 = int64_t{blockIdx.x} * kTokens;
  for (int k = threadIdx.x; k < kTokens * d; k += kThreads) {
    const int t = k / d, j = k % d;
    vs[k] = i0 + t < a.n ? a.values[(i0 + t) * a.stride + j] : 0.0f;
  }
  if (threadIdx.x < kTokens) nu[threadIdx.x] = 0.0f;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float* v0 = vs + warp * d;
  const float* v1 = vs + (warp + kWarps) * d;
  for (int g = a.first_head; g < a.first_head + a.group; ++g) {
    float l1_0 = 0.0f, l1_1 = 0.0f;
    for (int c0 = 0; c0 < a.hidden; c0 += kRows) {
      __syncthreads();
      LoadRows(a, g, c0, ws);
      __syncthreads();
      const float* w = ws + lane * (d + 1);
      float p0 = 0.0f, p1 = 0.0f;
      for (int j = 0; j < d; ++j) {
        p0 = fmaf(v0[j], w[j], p0);
        p1 = fmaf(v1[j], w[j], p1);
      }
      l1_0 += fabsf(p0);
      l1_1 += fabsf(p1);
    }
    l1_0 = internal::WarpSum(l1_0);
    l1_1 = internal::WarpSum(l1_1);
    if (lane == 0) {
      nu[warp] += l1_0 / static_cast<float>(a.group);
      nu[warp + kWarps] += l1_1 / static_cast<float>(a.group);
    }
  }
  __syncthreads();
  if (threadIdx.x < kTokens && i0 + threadIdx.x < a.n) out[i0 + threadIdx.x] = nu[threadIdx.x];
}

}  // namespace

absl::Status ValueOutputNorms(Context& ctx, const StridedRows& values, const float* wo, int hidden,
                              int n_heads, int n_kv_heads, int head_dim, int kv_head, float* out) {
  if (head_dim < 1 || head_dim > 256 || hidden <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads ||
      kv_head < 0 || kv_head >= n_kv_heads || values.n < 0 || values.stride < head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ValueOutputNorms: head_dim ", head_dim, " (1..256), hidden ", hidden, ", ", n_heads,
        " heads over ", n_kv_heads, " KV heads, KV head ", kv_head, ", stride ", values.stride));
  }
  if (values.n == 0) return absl::OkStatus();
  if (values.base == nullptr || wo == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("ValueOutputNorms: null values, wo or output");
  }
  const int group = n_heads / n_kv_heads;
  const NormArgs args{values.base,        values.stride, values.n,        wo,   hidden,
                      n_heads * head_dim, head_dim,      kv_head * group, group};
  const size_t smem = sizeof(float) * (kTokens * head_dim + kRows * (head_dim + 1));
  KVWIRE_RETURN_IF_ERROR(internal::AllowSharedMemory(ValueNormKernel, smem));
  ValueNormKernel<<<static_cast<unsigned>(internal::CeilDiv(values.n, kTokens)), kThreads, smem,
                    ctx.stream()>>>(args, out);
  return ctx.CheckLaunch("ValueNormKernel");
}

}  // namespace kvwire::kernels::cuda
