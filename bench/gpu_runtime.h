// bench/gpu_runtime.h — the model runtime on the device for `kvwire-bench gpu`: prefill tokens/s
// (prompts of 512 and 2048 tokens) and decode tokens/s (contexts of 1024 and 4096 entries per
// head, batch 1 through GpuRunner::Decode and batch 16 through DecodeBatch), for SmolLM2 from its
// GGUF file and for a Llama-3-8B-shaped model with random weights drawn on the device.
//
// Each figure is the median of `repeats` timed repetitions after warm-up: a prefill repetition is
// one Prefill of the whole prompt; a decode repetition is kDecodeStepsPerRepeat steps of every
// sequence. Times are host wall clock around the runner calls, which return after the logits are
// on the host. Caches are sized to what each run needs (context + steps), never the context length.
//
// Thread-safety: single-threaded. Errors: the runtime's (UNAVAILABLE without a device,
// RESOURCE_EXHAUSTED when the device has no room); a missing model file is not an error for the
// default path (the SmolLM2 rows are then skipped with a note).
#ifndef KVWIRE_BENCH_GPU_RUNTIME_H_
#define KVWIRE_BENCH_GPU_RUNTIME_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::bench {

inline constexpr int kDecodeStepsPerRepeat = 8;

struct GpuRuntimeOptions {
  std::string model;  // SmolLM2 GGUF; empty: $KVWIRE_MODEL or the default cache path if present
  bool llama = true;  // the random-weight Llama-3-8B-shaped model
  int repeats = 7;    // timed repetitions per figure (at least 5)
};

struct GpuRuntimeRow {
  std::string model;        // "smollm2" or "llama3_8b_random"
  std::string phase;        // "prefill" or "decode"
  int64_t tokens = 0;       // prompt length (prefill) or context entries per head (decode)
  int batch = 1;            // sequences per step
  double median_ms = 0;     // one repetition
  double tokens_per_s = 0;  // tokens processed per second over all sequences
};

struct GpuRuntimeResult {
  std::vector<GpuRuntimeRow> rows;
  std::string note;  // which models ran and why one did not
};

absl::StatusOr<GpuRuntimeResult> MeasureGpuRuntime(const GpuRuntimeOptions& options);
// A fixed-width table on stdout.
void PrintGpuRuntime(const GpuRuntimeResult& result);
// A JSON object {"note": ..., "rows": [...]}.
std::string GpuRuntimeJson(const GpuRuntimeResult& result);

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_GPU_RUNTIME_H_
