// Model loading: tensor lookup with shape checks against the config.
#include "runtime/model.h"

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"

namespace kvwire::runtime {
namespace {

absl::StatusOr<const GgufTensor*> Tensor(const GgufFile& gguf, const std::string& name) {
  const GgufTensor* t = gguf.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("model has no tensor '", name, "'"));
  return t;
}

std::string DimsString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) absl::StrAppend(&s, i ? ", " : "", dims[i]);
  return s + "]";
}

// A [cols, rows] matrix (GGUF dim order) as a rows x cols weight.
absl::StatusOr<kernels::WeightView> Matrix(const GgufFile& gguf, const std::string& name,
                                           int64_t cols, int64_t rows) {
  KVWIRE_ASSIGN_OR_RETURN(const GgufTensor* t, Tensor(gguf, name));
  if (t->dims != std::vector<int64_t>{cols, rows}) {
    return absl::DataLossError(absl::StrCat("tensor '", name, "' has shape ", DimsString(t->dims),
                                            ", config implies [", cols, ", ", rows, "]"));
  }
  return t->AsWeight();
}

absl::StatusOr<std::vector<float>> Vector(const GgufFile& gguf, const std::string& name,
                                          int64_t n) {
  KVWIRE_ASSIGN_OR_RETURN(const GgufTensor* t, Tensor(gguf, name));
  if (t->dims != std::vector<int64_t>{n}) {
    return absl::DataLossError(absl::StrCat("tensor '", name, "' has shape ", DimsString(t->dims),
                                            ", expected [", n, "]"));
  }
  std::vector<float> v(n);
  kernels::DequantizeRow(t->type, t->data, v.data(), n);
  return v;
}

absl::StatusOr<std::vector<float>> OptionalVector(const GgufFile& gguf, const std::string& name,
                                                  int64_t n) {
  if (gguf.FindTensor(name) == nullptr) return std::vector<float>();
  return Vector(gguf, name, n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  KVWIRE_ASSIGN_OR_RETURN(auto gguf, GgufFile::Open(path));
  auto model = FromGguf(std::move(gguf));
  if (!model.ok()) return Annotate(model.status(), path);
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromGguf(std::unique_ptr<GgufFile> gguf) {
  std::unique_ptr<Model> model(new Model());
  model->gguf_ = std::move(gguf);
  KVWIRE_ASSIGN_OR_RETURN(model->config_, ReadModelConfig(*model->gguf_));
  KVWIRE_RETURN_IF_ERROR(model->LoadWeights());
  return model;
}

absl::Status Model::LoadWeights() {
  ModelConfig& c = config_;
  KVWIRE_ASSIGN_OR_RETURN(const GgufTensor* embd, Tensor(*gguf_, "token_embd.weight"));
  if (embd->dims.size() != 2 || embd->dims[1] > (1 << 24)) {
    return absl::DataLossError(
        absl::StrCat("token_embd.weight has shape ", DimsString(embd->dims)));
  }
  c.vocab_size = static_cast<int>(embd->dims[1]);
  KVWIRE_ASSIGN_OR_RETURN(token_embd_, Matrix(*gguf_, "token_embd.weight", c.hidden, c.vocab_size));
  KVWIRE_ASSIGN_OR_RETURN(output_norm_, Vector(*gguf_, "output_norm.weight", c.hidden));
  c.tied_output = gguf_->FindTensor("output.weight") == nullptr;
  if (c.tied_output) {
    output_ = token_embd_;
  } else {
    KVWIRE_ASSIGN_OR_RETURN(output_, Matrix(*gguf_, "output.weight", c.hidden, c.vocab_size));
  }
  layers_.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    KVWIRE_RETURN_IF_ERROR(LoadLayer(i));
  }
  return absl::OkStatus();
}

absl::Status Model::LoadLayer(int i) {
  const ModelConfig& c = config_;
  const GgufFile& g = *gguf_;
  const std::string p = absl::StrCat("blk.", i, ".");
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  LayerWeights& w = layers_[i];
  KVWIRE_ASSIGN_OR_RETURN(w.attn_norm, Vector(g, p + "attn_norm.weight", c.hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.ffn_norm, Vector(g, p + "ffn_norm.weight", c.hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.wq, Matrix(g, p + "attn_q.weight", c.hidden, q_dim));
  KVWIRE_ASSIGN_OR_RETURN(w.wk, Matrix(g, p + "attn_k.weight", c.hidden, kv_dim));
  KVWIRE_ASSIGN_OR_RETURN(w.wv, Matrix(g, p + "attn_v.weight", c.hidden, kv_dim));
  KVWIRE_ASSIGN_OR_RETURN(w.wo, Matrix(g, p + "attn_output.weight", q_dim, c.hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.w_gate, Matrix(g, p + "ffn_gate.weight", c.hidden, c.ffn_hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.w_up, Matrix(g, p + "ffn_up.weight", c.hidden, c.ffn_hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.w_down, Matrix(g, p + "ffn_down.weight", c.ffn_hidden, c.hidden));
  KVWIRE_ASSIGN_OR_RETURN(w.bq, OptionalVector(g, p + "attn_q.bias", q_dim));
  KVWIRE_ASSIGN_OR_RETURN(w.bk, OptionalVector(g, p + "attn_k.bias", kv_dim));
  KVWIRE_ASSIGN_OR_RETURN(w.bv, OptionalVector(g, p + "attn_v.bias", kv_dim));
  return absl::OkStatus();
}

void Model::Embed(int32_t token, float* out) const {
  const int64_t row_bytes = kernels::RowBytes(token_embd_.type, token_embd_.cols);
  const auto* base = static_cast<const uint8_t*>(token_embd_.data);
  kernels::DequantizeRow(token_embd_.type, base + token * row_bytes, out, token_embd_.cols);
}

}  // namespace kvwire::runtime
