// bench/gpu_compress.h — the prefill compressor on the device against the CPU's, for
// `kvwire-bench gpu`: one layer of SmolLM2 shape (9 heads / 3 KV heads, head_dim 64) and of
// Llama-3-8B shape (32 / 8, head_dim 128) at prompt lengths 2048 and 8192, kept fractions 0.1 and
// 0.2, methods compress::kDefaultMethod, snapkv/uniform/merge and window/uniform/none.
//
// Inputs are standard-normal keys, values and window queries drawn on the host from a fixed seed
// and uploaded once per shape and length; both compressors read the same values. Per row:
//   * DeviceCompressor::CompressLayer and CompressAndEncode (f16 K/V, f32 votes): host wall time
//     per call, median of `repeats` after kWarmups untimed calls. CompressLayer's time includes the
//     download of the kept entries; CompressAndEncode's ends when the payload is complete on the
//     device. No stream-event (device-only) time: the pipeline waits on the host inside each call
//     (adaptive budgets are computed on the host, device buffers are freed), so events would
//     bracket the same wall time.
//   * compress::Compressor::CompressLayer with a ThreadPool of every host core: wall time, median
//     of `cpu_repeats` after one untimed call. Skipped, with a note, when the prediction from the
//     same row at the previous length (time x (L / L_prev)^2, the merge step's growth) puts
//     warm-up plus repeats over cpu_limit_s.
// Effective bandwidth counts the raw K/V once, L * n_kv_heads * head_dim * 4 * 2 bytes, over the
// CompressLayer time; the caller divides by its device-to-device copy bandwidth.
//
// Thread-safety: single-threaded. Errors: the compressors' (INVALID_ARGUMENT, RESOURCE_EXHAUSTED
// when the device has no room, UNAVAILABLE without a device).
#ifndef KVWIRE_BENCH_GPU_COMPRESS_H_
#define KVWIRE_BENCH_GPU_COMPRESS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/device.h"

namespace kvwire::bench {

struct GpuCompressOptions {
  int repeats = 7;            // device calls timed per figure (median; at least 7)
  int cpu_repeats = 3;        // CPU calls timed per figure (median; at least 3)
  double cpu_limit_s = 20.0;  // predicted CPU seconds per row above which the CPU side is skipped
};

struct GpuCompressRow {
  std::string model;  // "smollm2" or "llama3_8b"
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t length = 0;  // prompt length L
  float budget = 0;    // kept fraction
  std::string method;
  double kv_bytes = 0;      // L * n_kv_heads * head_dim * 4 * 2
  double device_ms = 0;     // DeviceCompressor::CompressLayer, with the download
  double encode_ms = 0;     // DeviceCompressor::CompressAndEncode
  double cpu_ms = 0;        // compress::Compressor::CompressLayer; NaN when skipped
  int64_t device_kept = 0;  // entries kept, all heads
  int64_t cpu_kept = -1;    // -1 when the CPU side was skipped
  std::string cpu_note;     // why the CPU side was skipped
};

struct GpuCompressResult {
  std::vector<GpuCompressRow> rows;
  std::string note = "not run (--skip-compress)";  // what the figures mean, or why none
  int cpu_threads = 0;
  int repeats = 0, cpu_repeats = 0;
};

absl::StatusOr<GpuCompressResult> MeasureGpuCompress(kernels::cuda::Context& ctx,
                                                     const GpuCompressOptions& options);
// A fixed-width table on stdout; fractions are of copy_gbps (bytes read + written per second).
void PrintGpuCompress(const GpuCompressResult& result, double copy_gbps);
// A JSON array, one object per row.
std::string GpuCompressJson(const GpuCompressResult& result, double copy_gbps);

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_GPU_COMPRESS_H_
