// runtime/gpu_runner.h — the forward pass of runtime::Runner on a CUDA device (built with CUDA).
//
//   auto model = GpuModel::Upload(host_model, {});         // weights once, as fp16, shared
//   auto runner = GpuRunner::Create(*model);               // a stream, cuBLAS, scratch
//   auto cache = GpuKvCache::Create(**model, 0);           // one sequence's KV cache
//   logits = runner->Prefill(prompt, {}, cache.get());     // or cache->Install(compressed)
//   logits = runner->Decode(token, cache->original_length() + generated++, cache.get());
//
// Three parts, mirroring Model / cache::KvCache / Runner on the CPU:
//   * GpuModel: the weights on one device in 16 bits (the token embedding too, as a 16-bit table
//     the runner gathers rows from), immutable after creation; share it between any number of
//     runners and threads. Random() draws a model of any shape on the device (benchmarks).
//   * GpuKvCache: per layer and KV head a segment of up to capacity() entries (post-RoPE keys,
//     values, log-vote bias, original position), ragged across heads like cache::KvCache. Forward
//     passes append their tokens' K/V (log-vote 0) on the device; Install/Download move a whole
//     cache between host and device (blocking copies: never while a pass on it is running).
//   * GpuRunner: the Llama block (RMSNorm, Q/K/V + bias, RoPE, vote-biased GQA attention, output
//     projection, SwiGLU FFN) on its own stream. A pass uploads only token ids, positions and a
//     table of where each layer's K/V rows go (one append launch per layer for all sequences) and
//     downloads only logits (and, when a host hook is set, the hook's tensors). Weight products
//     run in 16 bits with fp32 accumulation (cuBLAS) and the embedding rows are 16-bit, so logits
//     agree with the CPU to about 1e-2 relative, not bit for bit.
//
// Per-layer hooks (GpuForwardOptions) see the same tensors as Runner's PrefillHook: on_layer_device
// gets device pointers (valid during the call; work the hook enqueues on layer.ctx runs before the
// next layer overwrites them), on_layer gets host copies. A hook's non-OK status aborts the pass
// and is returned as is.
//
// Thread-safety: GpuModel is immutable and thread-safe; a GpuRunner and a GpuKvCache are used by
// one thread at a time (a cache by one runner at a time). With several devices, use a runner from
// the thread that created it (the CUDA device is per thread).
// Errors: UNAVAILABLE without a device; INVALID_ARGUMENT for bad tokens, positions, shapes or
// configs, a cache created for another GpuModel, or one cache twice in a batch;
// RESOURCE_EXHAUSTED when a head would exceed its capacity or the device is out of memory; other
// CUDA failures as statuses. Validation errors leave every cache unchanged; after a device error in
// the middle of a pass a cache may hold part of the step: Install it again.
#ifndef KVWIRE_RUNTIME_GPU_RUNNER_H_
#define KVWIRE_RUNTIME_GPU_RUNNER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/model_ops.h"
#include "kvwire/cache/kv_cache.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::runtime {

struct GpuModelOptions {
  int device = 0;
  kernels::cuda::HalfType weights = kernels::cuda::HalfType::kF16;
};

// The weights of a model on one device. Immutable after creation.
class GpuModel {
 public:
  // Dequantizes every weight of `model` to options.weights on the device (the host model may be
  // released afterwards).
  static absl::StatusOr<std::shared_ptr<const GpuModel>> Upload(const Model& model,
                                                                const GpuModelOptions& options);
  // A model of `config`'s shape whose weights are drawn on the device from `seed` (no host copy;
  // no projection biases): e.g. a Llama-3-8B-shaped model for benchmarks. Matrices are uniform
  // with unit output variance for unit inputs, norms 1. INVALID_ARGUMENT for an inconsistent
  // config.
  static absl::StatusOr<std::shared_ptr<const GpuModel>> Random(const ModelConfig& config,
                                                                uint64_t seed,
                                                                const GpuModelOptions& options);

  const ModelConfig& config() const { return config_; }
  int device() const { return device_; }
  // Device bytes of all weights (matrices, embedding, norms, biases).
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  friend class GpuRunner;
  friend class GpuKvCache;
  struct Layer {
    kernels::cuda::DeviceBuffer attn_norm, ffn_norm;  // fp32 [hidden]
    kernels::cuda::DeviceBuffer bq, bk, bv;           // fp32 projection biases; empty if absent
    std::vector<kernels::cuda::DeviceMatrix> w;       // wq, wk, wv, wo, w_gate, w_up, w_down
  };
  GpuModel(const ModelConfig& config, const GpuModelOptions& options);
  absl::Status UploadWeights(kernels::cuda::Context& ctx, const Model& model);
  absl::Status DrawWeights(kernels::cuda::Context& ctx, uint64_t seed);
  void CountBytes();
  const kernels::cuda::DeviceMatrix& output() const { return tied_ ? embedding_ : output_; }

  ModelConfig config_;
  int device_ = 0;
  kernels::cuda::HalfType half_;
  uint64_t id_ = 0;  // distinguishes models for cache ownership checks
  std::vector<Layer> layers_;
  kernels::cuda::DeviceMatrix embedding_;  // 16-bit [vocab][hidden]
  kernels::cuda::DeviceMatrix output_;     // 16-bit [vocab][hidden]; unused when tied_
  bool tied_ = false;
  kernels::cuda::DeviceBuffer output_norm_;  // fp32 [hidden]
  size_t weight_bytes_ = 0;
};

// One sequence's KV cache on the device.
class GpuKvCache {
 public:
  // Room for `max_entries_per_head` entries in every head (0: the model's context length).
  // INVALID_ARGUMENT for a negative size; RESOURCE_EXHAUSTED when the device has no room.
  static absl::StatusOr<std::unique_ptr<GpuKvCache>> Create(const GpuModel& model,
                                                            int64_t max_entries_per_head);

  // Replaces the contents with `host` (original_length included). INVALID_ARGUMENT for another
  // shape or an invalid cache, RESOURCE_EXHAUSTED when a head exceeds capacity(); either leaves
  // the contents unchanged.
  absl::Status Install(const cache::KvCache& host);
  // The contents as a host cache (positions, log-votes, keys, values per head).
  absl::StatusOr<cache::KvCache> Download() const;
  // Replaces head `head` of layer `layer` with `segment` (e.g. after decode-time merging of a host
  // copy). A blocking copy like Install: call it while no pass on this cache has work in flight,
  // e.g. from a host hook (on_layer), whose downloads waited for the pass so far.
  // INVALID_ARGUMENT for a bad layer/head or a malformed segment, RESOURCE_EXHAUSTED past
  // capacity(); either leaves the head unchanged.
  absl::Status ReplaceHead(int layer, int head, const cache::HeadSegment& segment);

  // Entries of KV head `head` in layer `layer`.
  int64_t entries(int layer, int head) const { return counts_[layer][head]; }
  int64_t capacity() const { return capacity_; }
  int32_t original_length() const { return original_length_; }
  void set_original_length(int32_t n) { original_length_ = n; }
  size_t device_bytes() const;

 private:
  friend class GpuRunner;
  struct Layer {
    kernels::cuda::DeviceBuffer keys, values;  // fp32 [n_kv_heads][capacity][head_dim]
    kernels::cuda::DeviceBuffer bias;          // fp32 [n_kv_heads][capacity] log-votes
    kernels::cuda::DeviceBuffer positions;     // int32 [n_kv_heads][capacity]
  };
  GpuKvCache(const GpuModel& model, int64_t capacity);
  float* keys(int layer, int head) const;
  float* values(int layer, int head) const;
  float* bias(int layer, int head) const;
  int32_t* positions(int layer, int head) const;

  uint64_t model_id_;
  int device_;
  cache::CacheShape shape_;
  int64_t capacity_;
  int32_t original_length_ = 0;
  std::vector<Layer> layers_;
  std::vector<std::vector<int64_t>> counts_;  // [layer][kv head] entries in use
};

// One layer of a pass as the device hook sees it (same tensors as PrefillLayer, device memory).
struct GpuPrefillLayer {
  int layer = 0;
  int64_t n_tokens = 0;                   // L: tokens of this pass
  int32_t first_position = 0;             // position of keys[0]
  const float* keys = nullptr;            // fp32 [L][n_kv_heads][head_dim], post-RoPE
  const float* values = nullptr;          // fp32 [L][n_kv_heads][head_dim]
  int64_t window = 0;                     // w = min(requested window, L)
  const float* window_queries = nullptr;  // fp32 [w][n_heads][head_dim], post-RoPE, last w tokens
  const float* attn_input = nullptr;      // fp32 [L][hidden]: RMS-normed attention input
  kernels::cuda::Context* ctx = nullptr;  // the runner's stream: enqueue work on it
};
using GpuPrefillHook = std::function<absl::Status(const GpuPrefillLayer&)>;

struct GpuForwardOptions {
  int window = 0;                  // observation-window queries to expose to the hooks
  GpuPrefillHook on_layer_device;  // device pointers, no copies; called first
  PrefillHook on_layer;            // host copies (downloaded only when set); called second
  bool all_logits = false;         // logits for every token ([L][vocab]) instead of the last
};

// One sequence's step of DecodeBatch: `token` at RoPE `position`, appended to `cache`.
struct GpuDecodeStep {
  int32_t token = 0;
  int32_t position = 0;
  GpuKvCache* cache = nullptr;
  const GpuForwardOptions* options = nullptr;  // this step's per-layer hooks (may be null)
};

class GpuRunner {
 public:
  // A stream and cuBLAS handle on the model's device.
  static absl::StatusOr<std::unique_ptr<GpuRunner>> Create(std::shared_ptr<const GpuModel> model);

  // Empties *cache, sets its original_length to L, then runs the prompt; logits fp32 [vocab] of
  // the last token ([L][vocab] with all_logits).
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens,
                                             const GpuForwardOptions& options, GpuKvCache* cache);
  // One token at RoPE `position`; logits fp32 [vocab].
  absl::StatusOr<std::vector<float>> Decode(int32_t token, int32_t position, GpuKvCache* cache);
  // One decode step for several sequences: the weight products run over all steps at once (each
  // weight read once per step), attention per cache. Logits fp32 [vocab] per step, in order.
  // Every step is validated first; a validation error leaves every cache unchanged.
  absl::StatusOr<std::vector<std::vector<float>>> DecodeBatch(
      absl::Span<const GpuDecodeStep> steps);
  // Tokens at first_position + t, appended to *cache (its original_length is kept).
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens,
                                             int32_t first_position,
                                             const GpuForwardOptions& options, GpuKvCache* cache);

  // The checks Decode/DecodeBatch run before touching anything (bad token or position, a foreign
  // cache, no room left): OK when the step would be accepted.
  absl::Status ValidateDecode(int32_t token, int32_t position, const GpuKvCache* cache) const {
    return Validate(absl::MakeConstSpan(&token, 1), position, cache);
  }

  kernels::cuda::Context& context() { return *ctx_; }
  const GpuModel& model() const { return *model_; }

 private:
  // Rows [row0, row0 + rows) of a pass belong to one sequence.
  struct Sequence {
    GpuKvCache* cache = nullptr;
    int64_t row0 = 0;
    int64_t rows = 0;
    int32_t first_position = 0;
    const GpuForwardOptions* options = nullptr;
  };
  GpuRunner(std::shared_ptr<const GpuModel> model, std::unique_ptr<kernels::cuda::Context> ctx)
      : model_(std::move(model)), ctx_(std::move(ctx)) {}
  absl::Status Validate(absl::Span<const int32_t> tokens, int32_t first_position,
                        const GpuKvCache* cache) const;
  absl::Status Reserve(int64_t n, int64_t logit_rows);
  absl::Status Run(absl::Span<const int32_t> tokens, absl::Span<const Sequence> seqs);
  absl::Status PlanAppends(absl::Span<const Sequence> seqs);
  absl::Status Layer(int l, int64_t n, absl::Span<const Sequence> seqs);
  absl::Status Attend(int l, const Sequence& seq);
  absl::Status Hooks(int l, const Sequence& seq);
  absl::StatusOr<std::vector<float>> Logits(int64_t n, int64_t rows);

  std::shared_ptr<const GpuModel> model_;
  std::unique_ptr<kernels::cuda::Context> ctx_;  // released before the model's weights
  // Activations, fp32 row-major, for up to reserved_ tokens.
  int64_t reserved_ = 0, reserved_logits_ = 0;
  kernels::cuda::DeviceBuffer x_;                   // [n][hidden] residual stream
  kernels::cuda::DeviceBuffer xn_;                  // [n][hidden] normed attention input
  kernels::cuda::DeviceBuffer xn_ffn_;              // [n][hidden] normed FFN input
  kernels::cuda::DeviceBuffer q_, attn_;            // [n][n_heads*head_dim]
  kernels::cuda::DeviceBuffer k_, v_;               // [n][n_kv_heads*head_dim]
  kernels::cuda::DeviceBuffer proj_;                // [n][hidden]
  kernels::cuda::DeviceBuffer gate_, up_;           // [n][ffn_hidden]
  kernels::cuda::DeviceBuffer tokens_, positions_;  // int32 [n]
  kernels::cuda::DeviceBuffer logits_;              // [logit rows][vocab]
  // Per layer, sequence and KV head where the pass's K/V rows go ([layers][seqs][n_kv_heads]).
  std::vector<kernels::cuda::KvAppendTarget> host_targets_;
  kernels::cuda::DeviceBuffer targets_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_GPU_RUNNER_H_
