// The Llama block: RMSNorm -> Q/K/V (+bias) -> RoPE -> append to cache -> vote-biased GQA
// attention -> output projection -> residual -> RMSNorm -> SwiGLU FFN -> residual.
#include "runtime/runner.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/kernels/attention.h"
#include "kvwire/kernels/matmul.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::runtime {
namespace {

void AddBias(float* y, const std::vector<float>& bias, int64_t n) {
  if (bias.empty()) return;
  const int64_t width = static_cast<int64_t>(bias.size());
  for (int64_t t = 0; t < n; ++t) kernels::AddInPlace(y + t * width, bias.data(), width);
}

}  // namespace

std::vector<kernels::KvHeadView> HeadViews(const cache::LayerCache& layer) {
  std::vector<kernels::KvHeadView> views;
  views.reserve(layer.heads.size());
  for (const cache::HeadSegment& seg : layer.heads) {
    views.push_back({seg.keys.data(), seg.values.data(), seg.log_votes.data(),
                     static_cast<int64_t>(seg.size())});
  }
  return views;
}

kernels::AttentionShape AttentionShapeFor(const ModelConfig& c, int64_t n_queries) {
  return {n_queries, c.n_heads, c.n_kv_heads, c.head_dim,
          1.0f / std::sqrt(static_cast<float>(c.head_dim))};
}

Runner::Runner(const Model& model, int n_threads) : model_(model), pool_(n_threads) {}

absl::Status Runner::Validate(absl::Span<const int32_t> tokens, int32_t first_position,
                              const cache::KvCache& cache) const {
  const ModelConfig& c = model_.config();
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to run");
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (first_position < 0 ||
      int64_t{first_position} + static_cast<int64_t>(tokens.size()) > c.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("positions [", first_position, ", ",
                                                   first_position + tokens.size(),
                                                   ") outside the context of ", c.context_length));
  }
  if (!(cache.shape == c.cache_shape())) {
    return absl::InvalidArgumentError("cache shape does not match the model");
  }
  return cache.Validate();
}

void Runner::Resize(int64_t n) {
  const ModelConfig& c = model_.config();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  x_.resize(n * c.hidden);
  xn_.resize(n * c.hidden);
  xn_ffn_.resize(n * c.hidden);
  q_.resize(n * q_dim);
  k_.resize(n * kv_dim);
  v_.resize(n * kv_dim);
  attn_.resize(n * q_dim);
  proj_.resize(n * c.hidden);
  gate_.resize(n * c.ffn_hidden);
  up_.resize(n * c.ffn_hidden);
}

absl::StatusOr<std::vector<float>> Runner::Prefill(absl::Span<const int32_t> tokens,
                                                   const ForwardOptions& options,
                                                   cache::KvCache* cache) {
  *cache =
      cache::KvCache::Empty(model_.config().cache_shape(), static_cast<int32_t>(tokens.size()));
  for (auto& layer : cache->layers) {
    for (auto& head : layer.heads) head.Reserve(tokens.size(), model_.config().head_dim);
  }
  return Forward(tokens, 0, options, cache);
}

absl::StatusOr<std::vector<float>> Runner::Decode(int32_t token, int32_t position,
                                                  cache::KvCache* cache,
                                                  const ForwardOptions& options) {
  return Forward(absl::MakeConstSpan(&token, 1), position, options, cache);
}

absl::StatusOr<std::vector<float>> Runner::Forward(absl::Span<const int32_t> tokens,
                                                   int32_t first_position,
                                                   const ForwardOptions& options,
                                                   cache::KvCache* cache) {
  KVWIRE_RETURN_IF_ERROR(Validate(tokens, first_position, *cache));
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Sequence seq{cache, 0, n, first_position, &options};
  KVWIRE_RETURN_IF_ERROR(Run(tokens, {&seq, 1}));
  return Logits(n, options.all_logits);
}

absl::StatusOr<std::vector<std::vector<float>>> Runner::DecodeBatch(
    absl::Span<const DecodeStep> steps) {
  std::vector<int32_t> tokens;
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < steps.size(); ++i) {
    const DecodeStep& s = steps[i];
    if (s.cache == nullptr) return absl::InvalidArgumentError("decode step without a cache");
    KVWIRE_RETURN_IF_ERROR(Validate({&s.token, 1}, s.position, *s.cache));
    tokens.push_back(s.token);
    seqs.push_back({s.cache, static_cast<int64_t>(i), 1, s.position, s.options});
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (seqs[i].cache == seqs[j].cache) {
        return absl::InvalidArgumentError("two steps of one decode batch share a cache");
      }
    }
  }
  if (steps.empty()) return std::vector<std::vector<float>>{};
  KVWIRE_RETURN_IF_ERROR(Run(tokens, seqs));
  const int64_t vocab = model_.config().vocab_size;
  const std::vector<float> all = Logits(static_cast<int64_t>(steps.size()), /*all=*/true);
  std::vector<std::vector<float>> out(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    out[i].assign(all.begin() + i * vocab, all.begin() + (i + 1) * vocab);
  }
  return out;
}

absl::Status Runner::Run(absl::Span<const int32_t> tokens, absl::Span<const Sequence> seqs) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const ModelConfig& c = model_.config();
  Resize(n);
  positions_.resize(n);
  for (const Sequence& seq : seqs) {
    for (int64_t t = 0; t < seq.rows; ++t) {
      positions_[seq.row0 + t] = seq.first_position + static_cast<int32_t>(t);
    }
  }
  for (int64_t t = 0; t < n; ++t) model_.Embed(tokens[t], x_.data() + t * c.hidden);
  for (int l = 0; l < c.n_layers; ++l) KVWIRE_RETURN_IF_ERROR(Layer(l, n, seqs));
  return absl::OkStatus();
}

void Runner::Attend(int layer, const Sequence& seq) {
  const ModelConfig& c = model_.config();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  for (int h = 0; h < c.n_kv_heads; ++h) {
    cache::HeadSegment& seg = seq.cache->layers[layer].heads[h];
    for (int64_t t = seq.row0; t < seq.row0 + seq.rows; ++t) {
      const int64_t at = (t * c.n_kv_heads + h) * c.head_dim;
      seg.Append(seq.first_position + static_cast<int32_t>(t - seq.row0), 0.0f, k_.data() + at,
                 v_.data() + at, c.head_dim);
    }
  }
  const auto views = HeadViews(seq.cache->layers[layer]);
  kernels::Attention(AttentionShapeFor(c, seq.rows), q_.data() + seq.row0 * q_dim, views.data(),
                     attn_.data() + seq.row0 * q_dim, &pool_);
}

absl::Status Runner::Layer(int l, int64_t n, absl::Span<const Sequence> seqs) {
  const ModelConfig& c = model_.config();
  const LayerWeights& w = model_.layer(l);
  kernels::RmsNorm(x_.data(), w.attn_norm.data(), n, c.hidden, c.rms_eps, xn_.data());
  kernels::MatMul(w.wq, xn_.data(), n, q_.data(), &pool_);
  kernels::MatMul(w.wk, xn_.data(), n, k_.data(), &pool_);
  kernels::MatMul(w.wv, xn_.data(), n, v_.data(), &pool_);
  AddBias(q_.data(), w.bq, n);
  AddBias(k_.data(), w.bk, n);
  AddBias(v_.data(), w.bv, n);
  kernels::Rope(q_.data(), n, c.n_heads, c.head_dim, positions_.data(), c.rope_theta, c.rope_style);
  kernels::Rope(k_.data(), n, c.n_kv_heads, c.head_dim, positions_.data(), c.rope_theta,
                c.rope_style);
  for (const Sequence& seq : seqs) Attend(l, seq);
  kernels::MatMul(w.wo, attn_.data(), n, proj_.data(), &pool_);
  kernels::AddInPlace(x_.data(), proj_.data(), n * c.hidden);
  kernels::RmsNorm(x_.data(), w.ffn_norm.data(), n, c.hidden, c.rms_eps, xn_ffn_.data());
  kernels::MatMul(w.w_gate, xn_ffn_.data(), n, gate_.data(), &pool_);
  kernels::MatMul(w.w_up, xn_ffn_.data(), n, up_.data(), &pool_);
  kernels::SwiGlu(gate_.data(), up_.data(), n * c.ffn_hidden, gate_.data());
  kernels::MatMul(w.w_down, gate_.data(), n, proj_.data(), &pool_);
  kernels::AddInPlace(x_.data(), proj_.data(), n * c.hidden);
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  for (const Sequence& seq : seqs) {
    if (seq.options == nullptr || !seq.options->on_layer) continue;
    const int64_t window = std::min<int64_t>(seq.options->window, seq.rows);
    const int64_t end = seq.row0 + seq.rows;
    const PrefillLayer view{l,
                            seq.rows,
                            seq.first_position,
                            k_.data() + seq.row0 * kv_dim,
                            v_.data() + seq.row0 * kv_dim,
                            window,
                            q_.data() + (end - window) * q_dim,
                            xn_.data() + seq.row0 * c.hidden};
    KVWIRE_RETURN_IF_ERROR(seq.options->on_layer(view));
  }
  return absl::OkStatus();
}

std::vector<float> Runner::Logits(int64_t n, bool all) {
  const ModelConfig& c = model_.config();
  const int64_t first = all ? 0 : n - 1, rows = n - first;
  const float* x = x_.data() + first * c.hidden;
  kernels::RmsNorm(x, model_.output_norm().data(), rows, c.hidden, c.rms_eps, xn_.data());
  std::vector<float> logits(rows * c.vocab_size);
  kernels::MatMul(model_.output(), xn_.data(), rows, logits.data(), &pool_);
  return logits;
}

}  // namespace kvwire::runtime
