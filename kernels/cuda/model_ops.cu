// Random weights, embedding gathers and waited default-stream copies. See model_ops.h.
#include <cuda_runtime.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/model_ops.h"
#include "kvwire/base/deadline.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// splitmix64 finaliser of (seed, i): 24 high bits as a uniform float in [0, 1).
__device__ __forceinline__ float Uniform01(uint64_t seed, int64_t i) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(i) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void FillHalfKernel(uint16_t* out, int64_t n, float lo, float span, uint64_t seed,
                               bool bf16) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = lo + span * Uniform01(seed, i);
    out[i] = bf16 ? internal::ToBf16Bits(v) : internal::ToHalfBits(v);
  }
}

__global__ void FillFloatKernel(float* out, int64_t n, float lo, float span, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = lo + span * Uniform01(seed, i);
  }
}

__global__ void GatherKernel(const uint16_t* table, bool bf16, int64_t rows, int64_t cols,
                             const int32_t* tokens, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n * cols;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / cols, c = i - t * cols;
    const int64_t row = tokens[t];
    if (row < 0 || row >= rows) {
      out[i] = 0.0f;
      continue;
    }
    const uint16_t bits = table[row * cols + c];
    out[i] = bf16 ? __uint_as_float(uint32_t{bits} << 16) : __half2float(__ushort_as_half(bits));
  }
}

// Block (target, y) copies rows y, y + gridDim.y, ... of its target.
__global__ void AppendKvKernel(const KvAppendTarget* targets, const float* k, const float* v,
                               const int32_t* positions, int n_kv_heads, int head_dim) {
  const KvAppendTarget t = targets[blockIdx.x];
  for (int64_t r = blockIdx.y; r < t.rows; r += gridDim.y) {
    const int64_t src = ((t.row0 + r) * n_kv_heads + t.head) * head_dim;
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
      t.keys[r * head_dim + c] = k[src + c];
      t.values[r * head_dim + c] = v[src + c];
    }
    if (threadIdx.x == 0) {
      t.bias[r] = 0.0f;
      t.positions[r] = positions[t.row0 + r];
    }
  }
}

absl::Status CheckCount(int64_t n, absl::string_view what) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": negative size ", n));
  return absl::OkStatus();
}

}  // namespace

absl::Status UseDevice(int device) {
  KVWIRE_RETURN_IF_ERROR(ProbeDevice());
  return FromCuda(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")"));
}

absl::Status FillUniformHalf(Context& ctx, uint16_t* out, int64_t n, float lo, float hi,
                             uint64_t seed, HalfType half) {
  KVWIRE_RETURN_IF_ERROR(CheckCount(n, "FillUniformHalf"));
  if (n == 0) return absl::OkStatus();
  FillHalfKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      out, n, lo, hi - lo, seed, half == HalfType::kBF16);
  return ctx.CheckLaunch("FillHalfKernel");
}

absl::Status FillUniform(Context& ctx, float* out, int64_t n, float lo, float hi, uint64_t seed) {
  KVWIRE_RETURN_IF_ERROR(CheckCount(n, "FillUniform"));
  if (n == 0) return absl::OkStatus();
  FillFloatKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      out, n, lo, hi - lo, seed);
  return ctx.CheckLaunch("FillFloatKernel");
}

absl::Status GatherRows(Context& ctx, const uint16_t* table, HalfType half, int64_t rows,
                        int64_t cols, const int32_t* tokens, int64_t n, float* out) {
  KVWIRE_RETURN_IF_ERROR(CheckCount(n, "GatherRows"));
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherRows: table of ", rows, " x ", cols, " elements"));
  }
  if (n == 0) return absl::OkStatus();
  GatherKernel<<<internal::GridFor(n * cols, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      table, half == HalfType::kBF16, rows, cols, tokens, n, out);
  return ctx.CheckLaunch("GatherKernel");
}

absl::Status AppendKv(Context& ctx, const KvAppendTarget* targets, int n_targets, int64_t max_rows,
                      const float* k, const float* v, const int32_t* positions, int n_kv_heads,
                      int head_dim) {
  if (n_targets < 0 || max_rows < 0 || n_kv_heads <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("AppendKv: ", n_targets, " targets of up to ",
                                                   max_rows, " rows, ", n_kv_heads, " KV heads of ",
                                                   head_dim));
  }
  if (n_targets == 0 || max_rows == 0) return absl::OkStatus();
  constexpr int64_t kMaxRowBlocks = 1024;
  const dim3 grid(static_cast<unsigned>(n_targets),
                  static_cast<unsigned>(max_rows < kMaxRowBlocks ? max_rows : kMaxRowBlocks));
  AppendKvKernel<<<grid, 128, 0, ctx.stream()>>>(targets, k, v, positions, n_kv_heads, head_dim);
  return ctx.CheckLaunch("AppendKvKernel");
}

absl::Status CopyAndWait(int device, CopyKind kind, absl::Span<const CopyOp> copies,
                         absl::Duration timeout) {
  KVWIRE_RETURN_IF_ERROR(UseDevice(device));
  const cudaMemcpyKind k =
      kind == CopyKind::kHostToDevice ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  for (const CopyOp& c : copies) {
    if (c.bytes == 0) continue;
    KVWIRE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(c.dst, c.src, c.bytes, k, cudaStreamLegacy));
  }
  const Deadline deadline = Deadline::In(timeout);
  while (true) {
    const cudaError_t e = cudaStreamQuery(cudaStreamLegacy);
    if (e != cudaErrorNotReady) return FromCuda(e, "cudaStreamQuery(default stream)");
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(
          absl::StrCat("CopyAndWait: copies not finished after ", absl::FormatDuration(timeout)));
    }
    std::this_thread::yield();
  }
}

}  // namespace kvwire::kernels::cuda
