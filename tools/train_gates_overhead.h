// tools/train_gates_overhead.h — the cost of inline gate scoring, measured side by side with the
// plain forward (prefill and decode), for kvwire-train-gates.
#ifndef KVWIRE_TOOLS_TRAIN_GATES_OVERHEAD_H_
#define KVWIRE_TOOLS_TRAIN_GATES_OVERHEAD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/compress/gate.h"
#include "runtime/runner.h"

namespace kvwire::compress {

struct Overhead {
  double prefill_plain = 0, prefill_gated = 0;  // median seconds per prefill of the prompt
  double decode_plain = 0, decode_gated = 0;    // median seconds per decode run
  // Median seconds spent inside the gate scoring calls of one gated run: a direct reading of the
  // gate's cost that the noise of the rest of the forward does not blur.
  double prefill_scoring = 0, decode_scoring = 0;
  int64_t prompt_tokens = 0, decode_tokens = 0;
};

// Prefills of `prompt` with and without gate scoring in the layer hook, and decode runs of up to
// 64 tokens from the same cache with and without decode-time scoring (rows batched by 16 as
// GateRowBuffer does), alternated `runs` times; medians. Errors: the runner's.
absl::StatusOr<Overhead> MeasureOverhead(runtime::Runner& runner, const GateModel& gates,
                                         absl::Span<const int32_t> prompt, int runs);

}  // namespace kvwire::compress

#endif  // KVWIRE_TOOLS_TRAIN_GATES_OVERHEAD_H_
