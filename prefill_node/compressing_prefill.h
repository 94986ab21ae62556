// prefill_node/compressing_prefill.h — prefill that compresses each layer as soon as it exists.
//
// Runs the model's prefill over a prompt; after each layer the runtime hook hands the layer's
// post-RoPE keys, values and observation-window queries to the Compressor, and the compressed
// layer goes to the caller's sink at once (so it can be packed and put on the wire while the next
// layer computes). With the global allocator every layer is scored first and the sink is called
// for all layers at the end. Budget 1 sinks the uncompressed layers, bit for bit.
//
// Thread-safety: one CompressingPrefill per Runner; Run is not reentrant. The Model may be shared.
// Errors: the runner's and compressor's (INVALID_ARGUMENT for bad prompts or specs); a sink's
// non-OK status aborts the prefill and is returned as is.
#ifndef KVWIRE_PREFILL_NODE_COMPRESSING_PREFILL_H_
#define KVWIRE_PREFILL_NODE_COMPRESSING_PREFILL_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/compressor.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::prefill {

// Receives compressed layer `layer` (moved in) with its statistics.
using LayerSink = std::function<absl::Status(int layer, cache::LayerCache layer_cache,
                                             const compress::LayerStats& stats)>;

struct PrefillResult {
  std::vector<float> last_logits;  // fp32 [vocab], logits after the last prompt token
  int32_t original_length = 0;     // prompt length L
  double prefill_seconds = 0;      // model compute, compression and sink excluded
  double compress_seconds = 0;     // score + allocate + select + merge, all layers
  double sink_seconds = 0;         // inside the sink (e.g. blocked on the network)
  int64_t kept_entries = 0;        // over all layers and KV heads
};

// The output projection of `layer` as fp32 [hidden][n_heads*head_dim] (what +critical needs).
std::vector<float> DequantizeOutputProjection(const runtime::Model& model, int layer);

class CompressingPrefill {
 public:
  // `runner` must outlive this object; its model is the one compressed.
  explicit CompressingPrefill(runtime::Runner* runner);

  absl::StatusOr<PrefillResult> Run(absl::Span<const int32_t> prompt,
                                    const compress::Compressor& compressor, const LayerSink& sink);

  // Convenience: the whole compressed cache of a prompt (what a decode node installs).
  absl::StatusOr<cache::KvCache> CompressPrompt(absl::Span<const int32_t> prompt,
                                                const compress::Compressor& compressor,
                                                PrefillResult* result = nullptr);

 private:
  // fp32 [hidden][n_heads*head_dim] output projection of `layer`, dequantized once on first use.
  const float* OutputProjection(int layer);

  runtime::Runner* runner_;
  std::vector<std::vector<float>> wo_;  // [n_layers], filled lazily for +critical
};

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_COMPRESSING_PREFILL_H_
