// runtime/gpu_runner.h — the forward pass of runtime::Runner on a CUDA device (built with CUDA).
//
//   auto gpu = GpuRunner::Create(model, {});   // weights uploaded once, as fp16
//   gpu->Install(cache);                        // e.g. the compressed prompt cache from prefill
//   logits = gpu->Decode(token, DecodePosition(cache, generated++));
//
// The KV cache lives on the device: per layer and KV head a segment of up to
// max_entries_per_head entries (keys, values, log-vote bias), ragged across heads like
// cache::KvCache; Install uploads a host cache once, every forward step appends its tokens' K/V
// (log-vote 0) on the device. Each step uploads only the token embeddings and positions and
// downloads only the logits. Same layer as the CPU runner (RMSNorm, Q/K/V + bias, RoPE, vote-
// biased GQA attention, output projection, SwiGLU FFN); weight products in 16 bits with fp32
// accumulation (cuBLAS), so logits agree with the CPU to about 1e-2 relative, not bit for bit.
// No per-layer hooks: compression (and decode-time merging) runs on the CPU path.
//
// Thread-safety: single-threaded, like Runner. Errors: UNAVAILABLE without a device;
// INVALID_ARGUMENT for bad tokens/positions or a cache of another shape; RESOURCE_EXHAUSTED
// when a head would exceed max_entries_per_head or the device is out of memory; CUDA failures as
// statuses. After an error the device cache may hold part of the failed step: Install again.
#ifndef KVWIRE_RUNTIME_GPU_RUNNER_H_
#define KVWIRE_RUNTIME_GPU_RUNNER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/matmul.h"
#include "kvwire/cache/kv_cache.h"
#include "runtime/model.h"

namespace kvwire::runtime {

struct GpuRunnerOptions {
  int device = 0;
  int64_t max_entries_per_head = 0;  // 0: the model's context length
  kernels::cuda::HalfType weights = kernels::cuda::HalfType::kF16;
};

class GpuRunner {
 public:
  static absl::StatusOr<std::unique_ptr<GpuRunner>> Create(const Model& model,
                                                           const GpuRunnerOptions& options);

  // Replaces the device cache with `cache` (shape must be the model's).
  absl::Status Install(const cache::KvCache& cache);
  // An empty cache, then the prompt; logits fp32 [vocab] of the last token.
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> tokens);
  // One token at RoPE `position`; logits fp32 [vocab].
  absl::StatusOr<std::vector<float>> Decode(int32_t token, int32_t position);
  // Tokens at first_position + t, appended to the device cache; logits of the last token.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens,
                                             int32_t first_position);

  // Entries of KV head h in layer l.
  int64_t entries(int layer, int head) const { return counts_[layer][head]; }

 private:
  struct DeviceLayer {
    kernels::cuda::DeviceBuffer attn_norm, ffn_norm, bq, bk, bv;  // fp32
    std::vector<kernels::cuda::DeviceMatrix> w;      // wq, wk, wv, wo, w_gate, w_up, w_down
    kernels::cuda::DeviceBuffer keys, values, bias;  // [n_kv][cap][d], [n_kv][cap][d], [n_kv][cap]
  };
  GpuRunner(const Model& model, std::unique_ptr<kernels::cuda::Context> ctx, int64_t capacity)
      : model_(model), ctx_(std::move(ctx)), capacity_(capacity) {}
  absl::Status Upload(const GpuRunnerOptions& options);
  absl::Status Reserve(int64_t n);
  absl::Status Layer(int l, int64_t n);
  absl::Status AppendKv(int l, int64_t n);

  const Model& model_;
  std::unique_ptr<kernels::cuda::Context> ctx_;  // first: released last
  int64_t capacity_;
  std::vector<DeviceLayer> layers_;
  kernels::cuda::DeviceBuffer output_norm_;
  std::unique_ptr<kernels::cuda::DeviceMatrix> output_;
  std::vector<std::vector<int64_t>> counts_;  // [layer][kv head] entries on the device
  // Activations, fp32 row-major, for up to reserved_ tokens.
  int64_t reserved_ = 0;
  kernels::cuda::DeviceBuffer x_, xn_, q_, k_, v_, attn_, proj_, gate_, up_, positions_, logits_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_GPU_RUNNER_H_
