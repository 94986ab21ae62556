// GGUF dequantization to 16 bits on the device and cuBLAS products. See matmul.h.
//
// One thread per output element decodes its value from its block (the block's scales are read by
// the 32/256 threads that share them and cached). Products and sums use __fmul_rn / __fadd_rn
// so the compiler cannot contract them into FMAs: every dequantized value equals the CPU's
// DequantizeRow value before the final 16-bit rounding.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/blocks.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/matmul.h"

namespace kvwire::kernels::cuda {
namespace {

namespace blk = ::kvwire::kernels::internal;

constexpr int kThreads = 256;

__device__ __forceinline__ float Half(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float Affine(float q, float d, float m) {
  return __fadd_rn(__fmul_rn(q, d), m);
}

__device__ void ScaleMinK4(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

__device__ uint32_t LoadU32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

__device__ float LegacyQ4(const uint8_t* qs, int j) {
  return static_cast<float>(j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4);
}

__device__ float LegacyQ5(const uint8_t* qs, const uint8_t* qh, int j) {
  return static_cast<float>(static_cast<int>(LegacyQ4(qs, j)) | (((LoadU32(qh) >> j) & 1) << 4));
}

// Element e (0..255) of a Q4_K (qh null) or Q5_K super-block.
__device__ float K4Or5(uint16_t d_h, uint16_t dmin_h, const uint8_t* scales, const uint8_t* qs,
                       const uint8_t* qh, int e) {
  const int pair = e / 64, within = e % 64, l = within % 32;
  const int sub = 2 * pair + (within >= 32 ? 1 : 0);
  int sc, mn;
  ScaleMinK4(sub, scales, &sc, &mn);
  const uint8_t byte = qs[32 * pair + l];
  const int hi = qh != nullptr ? ((qh[l] >> sub) & 1) << 4 : 0;
  const int q = (within < 32 ? byte & 0xF : byte >> 4) | hi;
  const float d = __fmul_rn(Half(d_h), static_cast<float>(sc));
  const float m = __fmul_rn(Half(dmin_h), static_cast<float>(mn));
  return __fsub_rn(__fmul_rn(d, static_cast<float>(q)), m);
}

__device__ float Q6K(const blk::BlockQ6_K& b, int e) {
  const int hf = e / 128, w = e % 128, quarter = w / 32, l = w % 32, is = l / 16;
  const uint8_t* ql = b.ql + 64 * hf;
  const uint8_t qh = b.qh[32 * hf + l];
  const int low = quarter % 2 == 0 ? ql[l] : ql[l + 32];
  const int nib = quarter < 2 ? low & 0xF : low >> 4;
  const int q = (nib | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
  const float s = __fmul_rn(Half(b.d), static_cast<float>(b.scales[8 * hf + is + 2 * quarter]));
  return __fmul_rn(s, static_cast<float>(q));
}

// Element j of the block at `block` of `type`.
__device__ float Decode(QuantType type, const uint8_t* block, int j) {
  switch (type) {
    case QuantType::kF32:
      return reinterpret_cast<const float*>(block)[j];
    case QuantType::kF16:
      return Half(reinterpret_cast<const uint16_t*>(block)[j]);
    case QuantType::kBF16:
      return __uint_as_float(uint32_t{reinterpret_cast<const uint16_t*>(block)[j]} << 16);
    case QuantType::kQ4_0: {
      const auto& b = *reinterpret_cast<const blk::BlockQ4_0*>(block);
      return __fmul_rn(LegacyQ4(b.qs, j) - 8.0f, Half(b.d));
    }
    case QuantType::kQ4_1: {
      const auto& b = *reinterpret_cast<const blk::BlockQ4_1*>(block);
      return Affine(LegacyQ4(b.qs, j), Half(b.d), Half(b.m));
    }
    case QuantType::kQ5_0: {
      const auto& b = *reinterpret_cast<const blk::BlockQ5_0*>(block);
      return __fmul_rn(LegacyQ5(b.qs, b.qh, j) - 16.0f, Half(b.d));
    }
    case QuantType::kQ5_1: {
      const auto& b = *reinterpret_cast<const blk::BlockQ5_1*>(block);
      return Affine(LegacyQ5(b.qs, b.qh, j), Half(b.d), Half(b.m));
    }
    case QuantType::kQ8_0: {
      const auto& b = *reinterpret_cast<const blk::BlockQ8_0*>(block);
      return __fmul_rn(static_cast<float>(b.qs[j]), Half(b.d));
    }
    case QuantType::kQ4_K: {
      const auto& b = *reinterpret_cast<const blk::BlockQ4_K*>(block);
      return K4Or5(b.d, b.dmin, b.scales, b.qs, nullptr, j);
    }
    case QuantType::kQ5_K: {
      const auto& b = *reinterpret_cast<const blk::BlockQ5_K*>(block);
      return K4Or5(b.d, b.dmin, b.scales, b.qs, b.qh, j);
    }
    case QuantType::kQ6_K:
      return Q6K(*reinterpret_cast<const blk::BlockQ6_K*>(block), j);
  }
  return 0.0f;
}

__global__ void DequantizeKernel(QuantType type, const uint8_t* data, int64_t rows, int64_t cols,
                                 int64_t row_bytes, int block_elems, int block_bytes, bool bf16,
                                 uint16_t* out) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < rows * cols;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / cols, c = t - r * cols;
    const uint8_t* block = data + r * row_bytes + (c / block_elems) * block_bytes;
    const float v = Decode(type, block, static_cast<int>(c % block_elems));
    out[t] = bf16 ? internal::ToBf16Bits(v) : internal::ToHalfBits(v);
  }
}

__global__ void ToHalfKernel(const float* x, int64_t n, bool bf16, uint16_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = bf16 ? internal::ToBf16Bits(x[i]) : internal::ToHalfBits(x[i]);
  }
}

bool HasDeviceDecoder(QuantType t) {
  switch (t) {
    case QuantType::kF32:
    case QuantType::kF16:
    case QuantType::kBF16:
    case QuantType::kQ4_0:
    case QuantType::kQ4_1:
    case QuantType::kQ5_0:
    case QuantType::kQ5_1:
    case QuantType::kQ8_0:
    case QuantType::kQ4_K:
    case QuantType::kQ5_K:
    case QuantType::kQ6_K:
      return true;
  }
  return false;
}

absl::Status CheckShape(const WeightView& w) {
  if (FindQuantType(static_cast<uint32_t>(w.type)) == nullptr || !HasDeviceDecoder(w.type)) {
    return absl::UnimplementedError(
        absl::StrCat("no device dequantizer for GGML type ", static_cast<uint32_t>(w.type)));
  }
  if (w.rows <= 0 || w.cols <= 0 || w.rows > 0x7FFFFFFF || w.cols > 0x7FFFFFFF ||
      RowBytes(w.type, w.cols) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("weight ", w.rows, " x ", w.cols, " of type ",
                                                   Info(w.type).name, " does not fit"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DequantizeToHalf(Context& ctx, const WeightView& w, HalfType half, uint16_t* out) {
  KVWIRE_RETURN_IF_ERROR(CheckShape(w));
  const QuantTypeInfo& info = Info(w.type);
  DequantizeKernel<<<internal::GridFor(w.rows * w.cols, kThreads, ctx), kThreads, 0,
                     ctx.stream()>>>(w.type, static_cast<const uint8_t*>(w.data), w.rows, w.cols,
                                     RowBytes(w.type, w.cols), info.block_elems, info.block_bytes,
                                     half == HalfType::kBF16, out);
  return ctx.CheckLaunch("DequantizeKernel");
}

absl::StatusOr<DeviceMatrix> DeviceMatrix::Upload(Context& ctx, const WeightView& host,
                                                  HalfType half) {
  KVWIRE_RETURN_IF_ERROR(CheckShape(host));
  const size_t bytes = static_cast<size_t>(host.rows * RowBytes(host.type, host.cols));
  KVWIRE_ASSIGN_OR_RETURN(DeviceBuffer blocks, DeviceBuffer::Allocate(bytes));
  KVWIRE_RETURN_IF_ERROR(blocks.Upload(ctx, host.data, bytes));
  DeviceMatrix m;
  KVWIRE_ASSIGN_OR_RETURN(m.data_,
                          DeviceBuffer::Allocate(sizeof(uint16_t) * host.rows * host.cols));
  m.rows_ = host.rows;
  m.cols_ = host.cols;
  m.half_ = half;
  WeightView on_device = host;
  on_device.data = blocks.data();
  KVWIRE_RETURN_IF_ERROR(DequantizeToHalf(ctx, on_device, half, m.data_.as<uint16_t>()));
  // The staging blocks are freed on return; wait so the kernel never reads freed memory.
  KVWIRE_RETURN_IF_ERROR(ctx.Synchronize());
  return m;
}

absl::Status MatMul(Context& ctx, const DeviceMatrix& w, const float* x, int64_t n_tokens,
                    float* y) {
  if (n_tokens < 0 || n_tokens > 0x7FFFFFFF) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul: ", n_tokens, " tokens"));
  }
  if (n_tokens == 0) return absl::OkStatus();
  const bool bf16 = w.half() == HalfType::kBF16;
  const int64_t n = n_tokens * w.cols();
  KVWIRE_ASSIGN_OR_RETURN(void* x16, ctx.Scratch(sizeof(uint16_t) * n, internal::kSlotMatMul));
  ToHalfKernel<<<internal::GridFor(n, kThreads, ctx), kThreads, 0, ctx.stream()>>>(
      x, n, bf16, static_cast<uint16_t*>(x16));
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("ToHalfKernel"));
  const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f, beta = 0.0f;
  const int rows = static_cast<int>(w.rows()), cols = static_cast<int>(w.cols());
  // Column-major view: y^T (rows x n) = W (stored as cols x rows, transposed) * x^T (cols x n).
  return FromCublas(
      cublasGemmEx(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, static_cast<int>(n_tokens), cols,
                   &alpha, w.data(), type, cols, x16, type, cols, &beta, y, CUDA_R_32F, rows,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

}  // namespace kvwire::kernels::cuda
