// kernels/cuda/ops.h — the row and elementwise operations of a Llama block on the device (contract
// of kvwire/kernels/ops.h; every pointer, positions included, in device memory).
//
// Rope computes each pair's angle in double like the CPU; RmsNorm, Softmax and SwiGlu use fp32
// with the device's expf/sqrtf. Errors: INVALID_ARGUMENT for negative sizes or an odd head_dim;
// launch failures as statuses.
#ifndef KVWIRE_KERNELS_CUDA_OPS_H_
#define KVWIRE_KERNELS_CUDA_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::kernels::cuda {

absl::Status RmsNorm(Context& ctx, const float* x, const float* weight, int64_t n_rows, int64_t n,
                     float eps, float* y);
absl::Status Rope(Context& ctx, float* x, int64_t n_tokens, int n_heads, int head_dim,
                  const int32_t* positions, float theta, RopeStyle style);
absl::Status Softmax(Context& ctx, float* x, int64_t n);
absl::Status SwiGlu(Context& ctx, const float* gate, const float* up, int64_t n, float* out);
absl::Status AddInPlace(Context& ctx, float* y, const float* x, int64_t n);
// y[r][i] += bias[i] for rows r of y fp32 [n_rows][width] (projection biases).
absl::Status AddRowBias(Context& ctx, float* y, const float* bias, int64_t n_rows, int64_t width);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_OPS_H_
