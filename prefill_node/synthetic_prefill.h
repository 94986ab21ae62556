// prefill_node/synthetic_prefill.h — a stand-in for the model's prefill in synthetic-KV mode
// (benchmarks: a large model's KV shape through the real compressor and data plane on a machine
// that cannot run that model).
//
// For each layer in order it fills post-RoPE keys and values fp32 [L][n_kv_heads][head_dim] and
// observation-window queries fp32 [w][n_query_heads][head_dim] with pseudo-random numbers in
// [-1, 1) that depend only on (layer, L, tensor, index) — the same prompt length always gives
// the same cache — then compresses the layer with `compressor` and hands it to `sink` exactly as
// CompressingPrefill does. prefill_seconds is the generation time.
//
// Thread-safety: reentrant; `pool` is used by one call at a time. Errors: INVALID_ARGUMENT for an
// empty prompt or the global allocator (it needs every layer before the first can be sent), the
// compressor's errors, and the sink's status as is.
#ifndef KVWIRE_PREFILL_NODE_SYNTHETIC_PREFILL_H_
#define KVWIRE_PREFILL_NODE_SYNTHETIC_PREFILL_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/control/synthetic_kv.h"
#include "kvwire/kernels/thread_pool.h"
#include "prefill_node/compressing_prefill.h"

namespace kvwire::prefill {

absl::StatusOr<PrefillResult> RunSyntheticPrefill(const control::SyntheticKv& kv,
                                                  absl::Span<const int32_t> prompt,
                                                  const compress::Compressor& compressor,
                                                  kernels::ThreadPool* pool, const LayerSink& sink);

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_SYNTHETIC_PREFILL_H_
