// kernels/cuda/matmul.h — weight products on the device: GGUF blocks are uploaded once,
// dequantized on the device to fp16 or bf16, and multiplied with cuBLAS (cublasGemmEx, fp32
// accumulation). Same product as kvwire/kernels/matmul.h: y[t][r] = sum_c W[r][c] * x[t][c],
// x fp32 [n_tokens][cols], y fp32 [n_tokens][rows], both device pointers.
//
// The activations are rounded to the weight's 16-bit type before the product (about 2^-11
// relative for fp16, 2^-8 for bf16), so results differ from the fp32 CPU path by that much.
//
// Thread-safety: a DeviceMatrix is immutable after Upload. Errors: INVALID_ARGUMENT for a shape
// that does not fit the type (cols not a multiple of the block size, dimensions past int32);
// UNIMPLEMENTED for a type without a device dequantizer; CUDA/cuBLAS failures as statuses.
// Scratch: slot 1 (activations in 16 bits).
#ifndef KVWIRE_KERNELS_CUDA_MATMUL_H_
#define KVWIRE_KERNELS_CUDA_MATMUL_H_

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/matmul.h"

namespace kvwire::kernels::cuda {

enum class HalfType { kF16, kBF16 };

// Dequantizes `w` (w.data: rows * RowBytes(type, cols) bytes in device memory) into out,
// 16-bit [rows][cols] of `half` type (binary16 or bfloat16 bits), round to nearest even.
absl::Status DequantizeToHalf(Context& ctx, const WeightView& w, HalfType half, uint16_t* out);

// A weight matrix resident on the device in 16 bits.
class DeviceMatrix {
 public:
  // `host` points to host memory (the memory-mapped GGUF tensor).
  static absl::StatusOr<DeviceMatrix> Upload(Context& ctx, const WeightView& host, HalfType half);
  // Takes `data`, 16-bit [rows][cols] of `half` type already on the device (e.g. weights drawn
  // there); INVALID_ARGUMENT unless it holds exactly rows * cols values.
  static absl::StatusOr<DeviceMatrix> Adopt(DeviceBuffer data, int64_t rows, int64_t cols,
                                            HalfType half) {
    if (rows <= 0 || cols <= 0 || data.size() != sizeof(uint16_t) * rows * cols) {
      return absl::InvalidArgumentError("DeviceMatrix::Adopt: buffer size is not rows * cols * 2");
    }
    DeviceMatrix m;
    m.data_ = std::move(data);
    m.rows_ = rows;
    m.cols_ = cols;
    m.half_ = half;
    return m;
  }
  const uint16_t* data() const { return data_.as<uint16_t>(); }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  HalfType half() const { return half_; }

 private:
  DeviceBuffer data_;
  int64_t rows_ = 0, cols_ = 0;
  HalfType half_ = HalfType::kF16;
};

absl::Status MatMul(Context& ctx, const DeviceMatrix& w, const float* x, int64_t n_tokens,
                    float* y);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_MATMUL_H_
