// kernels/cuda/value_norms.h — the value-output norms of +critical selection on the device (the
// contract of kvwire::kernels::ValueOutputNorms, kvwire/kernels/compress.h; ALGORITHMS.md §3):
// nu_i = mean over the group's query heads g of || v_i · W_O^(g) ||_1.
//
// Kernel: one block per 16 values; the values and 32-row tiles of W_O^(g) in shared memory, each
// thread two dot products per tile, |.| summed per thread and then per warp in a fixed order, so
// results are deterministic; they differ from the CPU's sgemm only by summation order.
//
// Errors: INVALID_ARGUMENT for head_dim outside [1, 256], hidden <= 0 or a bad head layout; CUDA
// failures as statuses.
#ifndef KVWIRE_KERNELS_CUDA_VALUE_NORMS_H_
#define KVWIRE_KERNELS_CUDA_VALUE_NORMS_H_

#include "absl/status/status.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::kernels::cuda {

// values: one KV head's rows (device, strided); wo: device fp32 [hidden][n_heads * head_dim],
// row-major as the model stores attn_output; out: device fp32 [values.n].
absl::Status ValueOutputNorms(Context& ctx, const StridedRows& values, const float* wo, int hidden,
                              int n_heads, int n_kv_heads, int head_dim, int kv_head, float* out);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_VALUE_NORMS_H_
