// ModelConfig from GGUF metadata.
#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "runtime/model.h"

namespace kvwire::runtime {
namespace {

absl::StatusOr<int> ReadCount(const GgufFile& gguf, const std::string& key, int max) {
  KVWIRE_ASSIGN_OR_RETURN(int64_t v, gguf.GetInt(key));
  if (v <= 0 || v > max) {
    return absl::DataLossError(absl::StrCat(key, " = ", v, " outside [1, ", max, "]"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<float> ReadOptionalFloat(const GgufFile& gguf, const std::string& key,
                                        float fallback) {
  if (gguf.Find(key) == nullptr) return fallback;
  KVWIRE_ASSIGN_OR_RETURN(float v, gguf.GetF32(key));
  if (!(v > 0.0f)) return absl::DataLossError(absl::StrCat(key, " = ", v, " must be positive"));
  return v;
}

absl::Status CheckConsistent(const ModelConfig& c, const GgufFile& gguf, const std::string& p) {
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::DataLossError(absl::StrCat("head_count ", c.n_heads,
                                            " is not a multiple of head_count_kv ", c.n_kv_heads));
  }
  if (c.head_dim % 2 != 0 || c.head_dim > 1024) {
    return absl::DataLossError(
        absl::StrCat("head dimension ", c.head_dim, " must be even, <= 1024"));
  }
  if (gguf.Find(p + "rope.dimension_count") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(int64_t rope_dims, gguf.GetInt(p + "rope.dimension_count"));
    if (rope_dims != c.head_dim) {
      return absl::FailedPreconditionError(
          absl::StrCat("partial RoPE (", rope_dims, " of ", c.head_dim, " dims) is not supported"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& gguf) {
  ModelConfig c;
  KVWIRE_ASSIGN_OR_RETURN(absl::string_view arch, gguf.GetString("general.architecture"));
  c.arch = std::string(arch);
  if (c.arch != "llama" && c.arch != "qwen2") {
    return absl::FailedPreconditionError(absl::StrCat("unsupported architecture '", c.arch, "'"));
  }
  const std::string p = c.arch + ".";
  KVWIRE_ASSIGN_OR_RETURN(c.n_layers, ReadCount(gguf, p + "block_count", 1024));
  KVWIRE_ASSIGN_OR_RETURN(c.hidden, ReadCount(gguf, p + "embedding_length", 1 << 16));
  KVWIRE_ASSIGN_OR_RETURN(c.ffn_hidden, ReadCount(gguf, p + "feed_forward_length", 1 << 18));
  KVWIRE_ASSIGN_OR_RETURN(c.n_heads, ReadCount(gguf, p + "attention.head_count", 1024));
  c.n_kv_heads = c.n_heads;
  if (gguf.Find(p + "attention.head_count_kv") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(c.n_kv_heads, ReadCount(gguf, p + "attention.head_count_kv", 1024));
  }
  KVWIRE_ASSIGN_OR_RETURN(c.context_length, ReadCount(gguf, p + "context_length", 1 << 24));
  c.head_dim = c.hidden / c.n_heads;
  if (gguf.Find(p + "attention.key_length") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(c.head_dim, ReadCount(gguf, p + "attention.key_length", 1024));
  }
  KVWIRE_ASSIGN_OR_RETURN(c.rope_theta, ReadOptionalFloat(gguf, p + "rope.freq_base", 10000.0f));
  KVWIRE_ASSIGN_OR_RETURN(c.rms_eps,
                          ReadOptionalFloat(gguf, p + "attention.layer_norm_rms_epsilon", 1e-5f));
  // GGUF converters permute llama's Q/K rows for adjacent-pair RoPE; qwen2 keeps the HF layout.
  c.rope_style = c.arch == "qwen2" ? kernels::RopeStyle::kHalves : kernels::RopeStyle::kAdjacent;
  KVWIRE_RETURN_IF_ERROR(CheckConsistent(c, gguf, p));
  return c;
}

}  // namespace kvwire::runtime
