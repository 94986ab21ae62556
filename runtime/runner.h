// runtime/runner.h — forward passes of a Model over a kvwire::cache::KvCache.
//
//   Runner runner(model, /*n_threads=*/2);
//   cache::KvCache cache;
//   auto logits = runner.Prefill(prompt, {.window = 32, .on_layer = hook}, &cache);
//   int32_t generated = 0;
//   logits = runner.Decode(token, DecodePosition(cache, generated++), &cache);
//
// Prefill replaces *cache with the full cache of the prompt (every position, log_vote 0,
// original_length = L). Decode feeds one token at an explicit RoPE position and appends its K/V
// (log_vote 0) to every head segment; the cache may be compressed (ragged heads, log-vote bias,
// arbitrary original positions). Decode positions continue from the ORIGINAL prompt length:
// DecodePosition(cache, g) = cache.original_length + g for the g-th decoded token.
// Forward is the general step both use: N tokens at positions first_position.. appended to the
// cache and attending to everything already in it (chunked prefill).
//
// Thread-safety: a Runner is single-threaded (it owns scratch buffers and a thread pool); use one
// per concurrent sequence. The Model may be shared.
// Errors: INVALID_ARGUMENT for an empty token list, a token outside [0, vocab), a negative
// position or one past the model's context length, or a cache whose shape is not the model's.
// A hook's non-OK status aborts the pass and is returned as is. After any error the cache may
// hold part of the failed pass's entries: discard it.
#ifndef KVWIRE_RUNTIME_RUNNER_H_
#define KVWIRE_RUNTIME_RUNNER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/kernels/attention.h"
#include "kvwire/kernels/thread_pool.h"
#include "runtime/model.h"

namespace kvwire::runtime {

// What a forward pass exposes after each layer (prefill, chunk or decode step). Pointers are
// valid only during the callback; copy what must outlive it.
struct PrefillLayer {
  int layer = 0;
  int64_t n_tokens = 0;                   // L: tokens of this pass
  int32_t first_position = 0;             // position of keys[0]
  const float* keys = nullptr;            // fp32 [L][n_kv_heads][head_dim], post-RoPE
  const float* values = nullptr;          // fp32 [L][n_kv_heads][head_dim]
  int64_t window = 0;                     // w = min(requested window, L)
  const float* window_queries = nullptr;  // fp32 [w][n_heads][head_dim], post-RoPE, last w tokens
  const float* attn_input = nullptr;  // fp32 [L][hidden]: RMS-normed input of the attention block
};
using PrefillHook = std::function<absl::Status(const PrefillLayer&)>;

struct ForwardOptions {
  int window = 0;           // observation-window queries to expose to the hook
  PrefillHook on_layer;     // called once per layer after the layer's output is computed
  bool all_logits = false;  // logits for every token instead of only the last
};

// Kernel views of one layer's cache (keys, values, log-votes as bias), e.g. to run
// kernels::Attention with other queries over a compressed cache (attention-output error).
// Valid while the layer is not modified.
std::vector<kernels::KvHeadView> HeadViews(const cache::LayerCache& layer);
// The model's attention shape for n_queries queries (scale 1/sqrt(head_dim)).
kernels::AttentionShape AttentionShapeFor(const ModelConfig& config, int64_t n_queries);

// One sequence's step in a batched decode: `token` at RoPE `position`, appended to `cache`;
// `options` (may be null) carries that sequence's per-layer hook.
struct DecodeStep {
  int32_t token = 0;
  int32_t position = 0;
  cache::KvCache* cache = nullptr;
  const ForwardOptions* options = nullptr;
};

inline int32_t DecodePosition(const cache::KvCache& cache, int32_t generated) {
  return cache.original_length + generated;
}

class Runner {
 public:
  Runner(const Model& model, int n_threads);

  // Logits fp32 [vocab] for the last prompt token ([L][vocab] with all_logits).
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens,
                                             const ForwardOptions& options, cache::KvCache* cache);
  // Logits fp32 [vocab] after feeding `token` at RoPE position `position`. options.on_layer, if
  // set, sees the step's K/V and (with window >= 1) its query, e.g. for decode-time scoring.
  absl::StatusOr<std::vector<float>> Decode(int32_t token, int32_t position, cache::KvCache* cache,
                                            const ForwardOptions& options = {});
  // One decode step for several independent sequences at once: the weight products run over all
  // of them together (each weight row read once per step), attention per sequence over its own
  // cache. Returns fp32 [vocab] logits per step, in order. Every step is validated first; an
  // error leaves every cache unchanged.
  absl::StatusOr<std::vector<std::vector<float>>> DecodeBatch(absl::Span<const DecodeStep> steps);
  // N tokens at positions first_position + t, appended to *cache (which keeps its
  // original_length; callers doing chunked prefill advance it themselves).
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens,
                                             int32_t first_position, const ForwardOptions& options,
                                             cache::KvCache* cache);

  // The checks Decode/DecodeBatch run before touching anything (bad token or position, a cache of
  // another shape): OK when the step would be accepted.
  absl::Status ValidateDecode(int32_t token, int32_t position, const cache::KvCache& cache) const {
    return Validate(absl::MakeConstSpan(&token, 1), position, cache);
  }

  const Model& model() const { return model_; }
  kernels::ThreadPool* pool() { return &pool_; }

 private:
  absl::Status Validate(absl::Span<const int32_t> tokens, int32_t first_position,
                        const cache::KvCache& cache) const;
  void Resize(int64_t n);
  // Rows [row0, row0 + rows) of the pass belong to one sequence.
  struct Sequence {
    cache::KvCache* cache = nullptr;
    int64_t row0 = 0;
    int64_t rows = 0;
    int32_t first_position = 0;
    const ForwardOptions* options = nullptr;
  };
  absl::Status Run(absl::Span<const int32_t> tokens, absl::Span<const Sequence> seqs);
  void Attend(int layer, const Sequence& seq);
  absl::Status Layer(int layer, int64_t n, absl::Span<const Sequence> seqs);
  std::vector<float> Logits(int64_t n, bool all);

  const Model& model_;
  kernels::ThreadPool pool_;
  // Scratch, fp32 row-major, sized for the current pass's n tokens.
  std::vector<float> x_;          // [n][hidden] residual stream
  std::vector<float> xn_;         // [n][hidden] normed attention input
  std::vector<float> xn_ffn_;     // [n][hidden] normed FFN input
  std::vector<float> q_;          // [n][n_heads*head_dim]
  std::vector<float> k_, v_;      // [n][n_kv_heads*head_dim]
  std::vector<float> attn_;       // [n][n_heads*head_dim]
  std::vector<float> proj_;       // [n][hidden]
  std::vector<float> gate_, up_;  // [n][ffn_hidden]
  std::vector<int32_t> positions_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_RUNNER_H_
