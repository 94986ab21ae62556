// runtime/model.h — a Llama-family decoder (llama, qwen2 arch) loaded from GGUF.
//
// ModelConfig comes from the `<arch>.*` metadata keys. Weight matrices stay in the file mapping
// in their stored type (no fp32 copies); only the small norm/bias vectors are dequantized to fp32
// at load. The output head is `output.weight`, or the token embedding when the file has none
// (tied embeddings, as in SmolLM2).
//
// Errors (Load/FromGguf): the GGUF reader's codes (see gguf.h), plus NOT_FOUND for a missing
// required key or tensor, DATA_LOSS for metadata values out of range or inconsistent with each
// other and for tensors whose shape disagrees with the config, FAILED_PRECONDITION for an
// unsupported architecture or partial RoPE.
// Thread-safety: immutable after loading; share one Model between any number of Runners.
#ifndef KVWIRE_RUNTIME_MODEL_H_
#define KVWIRE_RUNTIME_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/kernels/matmul.h"
#include "kvwire/kernels/ops.h"
#include "runtime/gguf.h"

namespace kvwire::runtime {

struct ModelConfig {
  std::string arch;  // "llama" or "qwen2"
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (GQA: n_heads % n_kv_heads == 0)
  int head_dim = 0;
  int hidden = 0;  // embedding width
  int ffn_hidden = 0;
  int vocab_size = 0;
  int context_length = 0;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  kernels::RopeStyle rope_style = kernels::RopeStyle::kAdjacent;
  bool tied_output = false;  // output head is the token embedding

  cache::CacheShape cache_shape() const { return {n_layers, n_kv_heads, head_dim}; }
};

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& gguf);

struct LayerWeights {
  std::vector<float> attn_norm;   // fp32 [hidden]
  std::vector<float> ffn_norm;    // fp32 [hidden]
  kernels::WeightView wq;         // [n_heads*head_dim] x [hidden]
  kernels::WeightView wk;         // [n_kv_heads*head_dim] x [hidden]
  kernels::WeightView wv;         // [n_kv_heads*head_dim] x [hidden]
  kernels::WeightView wo;         // [hidden] x [n_heads*head_dim]
  kernels::WeightView w_gate;     // [ffn_hidden] x [hidden]
  kernels::WeightView w_up;       // [ffn_hidden] x [hidden]
  kernels::WeightView w_down;     // [hidden] x [ffn_hidden]
  std::vector<float> bq, bk, bv;  // fp32 projection biases (qwen2); empty when absent
};

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Model>> FromGguf(std::unique_ptr<GgufFile> gguf);

  const ModelConfig& config() const { return config_; }
  const GgufFile& gguf() const { return *gguf_; }
  const LayerWeights& layer(int i) const { return layers_[i]; }
  const kernels::WeightView& token_embedding() const { return token_embd_; }  // [vocab] x [hidden]
  const std::vector<float>& output_norm() const { return output_norm_; }      // fp32 [hidden]
  const kernels::WeightView& output() const { return output_; }               // [vocab] x [hidden]

  // out fp32 [hidden] <- embedding row of `token` (0 <= token < vocab_size).
  void Embed(int32_t token, float* out) const;

 private:
  Model() = default;
  absl::Status LoadWeights();
  absl::Status LoadLayer(int i);

  std::unique_ptr<GgufFile> gguf_;
  ModelConfig config_;
  std::vector<LayerWeights> layers_;
  kernels::WeightView token_embd_;
  std::vector<float> output_norm_;
  kernels::WeightView output_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_MODEL_H_
