// kernels/cuda/model_ops.h — device helpers of a whole model on the device
// (runtime/gpu_runner.h): weights drawn on the device from a seed (benchmark models without a
// host copy), token embedding rows gathered from a 16-bit table, and waited copies between host
// and device memory that belongs to no Context's stream at the time (a KV cache between passes).
//
// Thread-safety: the Context rules of device.h; CopyAndWait may run on any thread. Errors:
// INVALID_ARGUMENT for negative sizes or an empty range; launch and copy failures as FromCuda
// statuses; DEADLINE_EXCEEDED when copies do not finish within the timeout.
#ifndef KVWIRE_KERNELS_CUDA_MODEL_OPS_H_
#define KVWIRE_KERNELS_CUDA_MODEL_OPS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/matmul.h"

namespace kvwire::kernels::cuda {

// Makes `device` current for the calling thread (allocations land there).
absl::Status UseDevice(int device);

// out[i] (16-bit `half` bits) = lo + (hi - lo) * u(seed, i), u uniform in [0, 1) from a
// counter-based hash of (seed, i): the same values on every device and launch shape.
absl::Status FillUniformHalf(Context& ctx, uint16_t* out, int64_t n, float lo, float hi,
                             uint64_t seed, HalfType half);
// The same distribution as fp32 values (norm weights, biases).
absl::Status FillUniform(Context& ctx, float* out, int64_t n, float lo, float hi, uint64_t seed);

// out fp32 [n][cols] <- rows tokens[t] of table, 16-bit `half` [rows][cols]; tokens int32 [n]
// (device) must lie in [0, rows): callers validate them (a token outside gives a zero row).
absl::Status GatherRows(Context& ctx, const uint16_t* table, HalfType half, int64_t rows,
                        int64_t cols, const int32_t* tokens, int64_t n, float* out);

// Where one sequence's new rows go in one KV head (all pointers device memory): the head's first
// free entry of keys/values (fp32 [rows][head_dim]), log-vote bias (fp32 [rows], set to 0) and
// positions (int32 [rows]); its rows are [row0, row0 + rows) of the pass.
struct KvAppendTarget {
  float* keys = nullptr;
  float* values = nullptr;
  float* bias = nullptr;
  int32_t* positions = nullptr;
  int64_t row0 = 0;
  int32_t rows = 0;
  int32_t head = 0;
};
// For every target (device array of n_targets): keys/values rows from k, v fp32
// [n][n_kv_heads][head_dim] (the pass's interleaved projections), positions from int32 [n].
// One launch for all sequences and heads of a layer; max_rows bounds every target's rows.
absl::Status AppendKv(Context& ctx, const KvAppendTarget* targets, int n_targets, int64_t max_rows,
                      const float* k, const float* v, const int32_t* positions, int n_kv_heads,
                      int head_dim);

enum class CopyKind { kHostToDevice, kDeviceToHost };
struct CopyOp {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};
// Runs `copies` in order on `device`'s default stream and waits for them at most `timeout`.
// Only for memory no stream is working on meanwhile: the copies are not ordered with any
// Context's (non-blocking) stream.
absl::Status CopyAndWait(int device, CopyKind kind, absl::Span<const CopyOp> copies,
                         absl::Duration timeout = absl::Seconds(60));

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_MODEL_OPS_H_
