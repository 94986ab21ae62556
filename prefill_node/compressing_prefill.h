// prefill_node/compressing_prefill.h — prefill that compresses each layer as soon as it exists.
//
// Runs the model's prefill over a prompt; after each layer the runtime hook hands the layer's
// post-RoPE keys, values and observation-window queries to the Compressor, and the compressed
// layer goes to the caller's sink at once (so it can be packed and put on the wire while the next
// layer computes). With the global allocator every layer is scored first and the sink is called
// for all layers at the end. Budget 1 sinks the uncompressed layers, bit for bit.
//
// Externally scored methods (compress/spec.h):
//   recon  the whole prompt is prefilled first, then the reconstruction passes of
//          compress/recon.h score it (about one more prefill), then every layer is compressed
//          and sunk (no layer streaming, like the global allocator);
//   gate   scores come from the caller's LayerScorer (set_gate_scorer), called in the prefill
//          hook for each layer as it finishes, so layers still stream (except with global).
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
#include "kvwire/compress/recon.h"
#include "prefill_node/device_prefill.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::prefill {

// Receives compressed layer `layer` (moved in) with its statistics.
using LayerSink = std::function<absl::Status(int layer, cache::LayerCache layer_cache,
                                             const compress::LayerStats& stats)>;

// Scores of one layer for the gate scorer: fp32 [n_kv_heads][L] (head-major, finite, higher =
// keep) for the layer `pl` describes, e.g. a learned gate applied to pl.attn_input. Called once
// per layer from the prefill hook; a non-OK status aborts the prefill.
using LayerScorer =
    std::function<absl::StatusOr<std::vector<float>>(const runtime::PrefillLayer& pl)>;

struct PrefillResult {
  std::vector<float> last_logits;  // fp32 [vocab], logits after the last prompt token
  int32_t original_length = 0;     // prompt length L
  double prefill_seconds = 0;      // model compute, compression and sink excluded
  double compress_seconds = 0;     // score + allocate + select + merge, all layers
  double sink_seconds = 0;         // inside the sink (e.g. blocked on the network)
  // The part of compress_seconds spent producing external scores: the recon scorer's
  // reconstruction passes, or the gate scorer's LayerScorer calls.
  double external_score_seconds = 0;
  int64_t kept_entries = 0;           // over all layers and KV heads
  bool compressed_on_device = false;  // scored, selected and merged on the CUDA device
};

// The output projection of `layer` as fp32 [hidden][n_heads*head_dim] (what +critical needs).
std::vector<float> DequantizeOutputProjection(const runtime::Model& model, int layer);

class CompressingPrefill {
 public:
  // `runner` must outlive this object; its model is the one compressed.
  explicit CompressingPrefill(runtime::Runner* runner);

  absl::StatusOr<PrefillResult> Run(absl::Span<const int32_t> prompt,
                                    const compress::Compressor& compressor, const LayerSink& sink);

  // The gate scorer's per-layer scores; required before Run with a gate spec.
  void set_gate_scorer(LayerScorer scorer) { gate_scorer_ = std::move(scorer); }
  // The recon scorer's passes (chunk size, prompt). Without a prompt, one is built once from the
  // model's tokenizer and chat template with options.turn.
  void set_recon_options(compress::ReconOptions options) { recon_options_ = std::move(options); }
  // Runs the forward pass on a CUDA device instead of the runner (which still provides the
  // thread pool and the recon passes): methods the device compressor runs are compressed there,
  // the others on the CPU from host copies of each layer (device_prefill.h). Null: the runner.
  void set_device(DevicePrefill* device) { device_ = device; }

  // Convenience: the whole compressed cache of a prompt (what a decode node installs).
  absl::StatusOr<cache::KvCache> CompressPrompt(absl::Span<const int32_t> prompt,
                                                const compress::Compressor& compressor,
                                                PrefillResult* result = nullptr);

 private:
  // fp32 [hidden][n_heads*head_dim] output projection of `layer`, dequantized once on first use.
  const float* OutputProjection(int layer);

  struct HeldLayer;  // a layer's hook data, kept until every layer is there
  HeldLayer Hold(const runtime::PrefillLayer& pl, const compress::LayerInput& in,
                 std::vector<float> scores);
  compress::LayerInput Input(const runtime::PrefillLayer& pl, bool critical);
  absl::StatusOr<std::vector<float>> GateScores(const runtime::PrefillLayer& pl);
  // After the prefill, when not streaming: scores by reconstruction (if `recon`), compresses
  // every held layer and sinks them.
  absl::Status CompressHeld(absl::Span<const int32_t> prompt,
                            const compress::Compressor& compressor, bool recon,
                            cache::KvCache* full, std::vector<HeldLayer>* held,
                            const LayerSink& sink, PrefillResult* result);
  // The prompt's full cache scored by reconstruction: fills `scores` (per layer
  // fp32 [n_kv_heads][L]).
  absl::Status ReconScore(absl::Span<const int32_t> prompt, cache::KvCache* full,
                          std::vector<std::vector<float>>* scores);

  runtime::Runner* runner_;
  std::vector<std::vector<float>> wo_;  // [n_layers], filled lazily for +critical
  LayerScorer gate_scorer_;
  compress::ReconOptions recon_options_;
  DevicePrefill* device_ = nullptr;
};

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_COMPRESSING_PREFILL_H_
