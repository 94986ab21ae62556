// The Llama block of runner.cc on the device, over GpuKvCaches. See gpu_runner.h.
#include "runtime/gpu_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/ops.h"
#include "kvwire/base/status.h"

namespace kvwire::runtime {
namespace {

namespace kc = ::kvwire::kernels::cuda;

enum Weight { kWq, kWk, kWv, kWo, kGate, kUp, kDown };

float* F(const kc::DeviceBuffer& b) { return b.as<float>(); }

// Downloads `count` floats at device `src` into a host vector.
absl::StatusOr<std::vector<float>> Fetch(kc::Context& ctx, const kc::DeviceBuffer& buf,
                                         const float* src, int64_t count) {
  std::vector<float> host(count);
  const size_t offset = reinterpret_cast<const char*>(src) - static_cast<const char*>(buf.data());
  KVWIRE_RETURN_IF_ERROR(buf.Download(ctx, host.data(), sizeof(float) * count, offset));
  return host;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuRunner>> GpuRunner::Create(
    std::shared_ptr<const GpuModel> model) {
  if (model == nullptr) return absl::InvalidArgumentError("GpuRunner: no model");
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<kc::Context> ctx, kc::Context::Create(model->device()));
  return std::unique_ptr<GpuRunner>(new GpuRunner(std::move(model), std::move(ctx)));
}

absl::Status GpuRunner::Validate(absl::Span<const int32_t> tokens, int32_t first_position,
                                 const GpuKvCache* cache) const {
  const ModelConfig& c = model_->config();
  if (cache == nullptr) return absl::InvalidArgumentError("GpuRunner: no cache");
  if (cache->model_id_ != model_->id_) {
    return absl::InvalidArgumentError("GpuRunner: the cache was created for another GpuModel");
  }
  if (tokens.empty()) return absl::InvalidArgumentError("GpuRunner: no tokens to run");
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GpuRunner: token id ", t, " outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (first_position < 0 || int64_t{first_position} + n > c.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("GpuRunner: positions [", first_position, ", ",
                                                   first_position + n, ") outside the context of ",
                                                   c.context_length));
  }
  for (const auto& layer : cache->counts_) {
    for (int64_t count : layer) {
      if (count + n > cache->capacity_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("GpuRunner: ", count + n, " entries in a head exceed the cache capacity ",
                         cache->capacity_));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> GpuRunner::Prefill(absl::Span<const int32_t> tokens,
                                                      const GpuForwardOptions& options,
                                                      GpuKvCache* cache) {
  if (cache == nullptr) return absl::InvalidArgumentError("GpuRunner: no cache");
  // Validated against the empty cache Prefill starts from; the cache is untouched on error.
  const std::vector<std::vector<int64_t>> counts = cache->counts_;
  for (auto& layer : cache->counts_) std::fill(layer.begin(), layer.end(), 0);
  if (absl::Status s = Validate(tokens, 0, cache); !s.ok()) {
    cache->counts_ = counts;
    return s;
  }
  cache->original_length_ = static_cast<int32_t>(tokens.size());
  return Forward(tokens, 0, options, cache);
}

absl::StatusOr<std::vector<float>> GpuRunner::Decode(int32_t token, int32_t position,
                                                     GpuKvCache* cache) {
  return Forward(absl::MakeConstSpan(&token, 1), position, {}, cache);
}

absl::StatusOr<std::vector<float>> GpuRunner::Forward(absl::Span<const int32_t> tokens,
                                                      int32_t first_position,
                                                      const GpuForwardOptions& options,
                                                      GpuKvCache* cache) {
  KVWIRE_RETURN_IF_ERROR(Validate(tokens, first_position, cache));
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Sequence seq{cache, 0, n, first_position, &options};
  KVWIRE_RETURN_IF_ERROR(Reserve(n, options.all_logits ? n : 1));
  KVWIRE_RETURN_IF_ERROR(Run(tokens, {&seq, 1}));
  return Logits(n, options.all_logits ? n : 1);
}

absl::StatusOr<std::vector<std::vector<float>>> GpuRunner::DecodeBatch(
    absl::Span<const GpuDecodeStep> steps) {
  std::vector<int32_t> tokens;
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < steps.size(); ++i) {
    const GpuDecodeStep& s = steps[i];
    if (absl::Status st = Validate({&s.token, 1}, s.position, s.cache); !st.ok()) {
      return Annotate(st, absl::StrCat("decode step ", i));
    }
    for (size_t j = 0; j < i; ++j) {
      if (steps[j].cache == s.cache) {
        return absl::InvalidArgumentError(
            absl::StrCat("GpuRunner: decode steps ", j, " and ", i, " share a cache"));
      }
    }
    tokens.push_back(s.token);
    seqs.push_back({s.cache, static_cast<int64_t>(i), 1, s.position, s.options});
  }
  if (steps.empty()) return std::vector<std::vector<float>>{};
  const int64_t n = static_cast<int64_t>(steps.size());
  KVWIRE_RETURN_IF_ERROR(Reserve(n, n));
  KVWIRE_RETURN_IF_ERROR(Run(tokens, seqs));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> all, Logits(n, n));
  const int64_t vocab = model_->config().vocab_size;
  std::vector<std::vector<float>> out(steps.size());
  for (int64_t i = 0; i < n; ++i)
    out[i].assign(all.begin() + i * vocab, all.begin() + (i + 1) * vocab);
  return out;
}

absl::Status GpuRunner::Reserve(int64_t n, int64_t logit_rows) {
  const ModelConfig& c = model_->config();
  if (logit_rows > reserved_logits_) {
    KVWIRE_ASSIGN_OR_RETURN(logits_,
                            kc::DeviceBuffer::Allocate(sizeof(float) * logit_rows * c.vocab_size));
    reserved_logits_ = logit_rows;
  }
  if (n <= reserved_) return absl::OkStatus();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  const std::pair<kc::DeviceBuffer*, int64_t> sizes[] = {
      {&x_, c.hidden},        {&xn_, c.hidden},     {&xn_ffn_, c.hidden}, {&q_, q_dim},
      {&attn_, q_dim},        {&k_, kv_dim},        {&v_, kv_dim},        {&proj_, c.hidden},
      {&gate_, c.ffn_hidden}, {&up_, c.ffn_hidden}, {&tokens_, 1},        {&positions_, 1}};
  reserved_ = 0;  // stays 0 if an allocation fails half way
  for (auto [buf, width] : sizes) {
    KVWIRE_ASSIGN_OR_RETURN(*buf, kc::DeviceBuffer::Allocate(sizeof(float) * n * width));
  }
  reserved_ = n;
  return absl::OkStatus();
}

absl::Status GpuRunner::Run(absl::Span<const int32_t> tokens, absl::Span<const Sequence> seqs) {
  const ModelConfig& c = model_->config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> pos(n);
  for (const Sequence& seq : seqs) {
    for (int64_t t = 0; t < seq.rows; ++t) {
      pos[seq.row0 + t] = seq.first_position + static_cast<int32_t>(t);
    }
  }
  KVWIRE_RETURN_IF_ERROR(tokens_.Upload(*ctx_, tokens.data(), sizeof(int32_t) * n));
  KVWIRE_RETURN_IF_ERROR(positions_.Upload(*ctx_, pos.data(), sizeof(int32_t) * n));
  KVWIRE_RETURN_IF_ERROR(PlanAppends(seqs));
  const kc::DeviceMatrix& emb = model_->embedding_;
  KVWIRE_RETURN_IF_ERROR(kc::GatherRows(*ctx_, emb.data(), emb.half(), emb.rows(), emb.cols(),
                                        tokens_.as<int32_t>(), n, F(x_)));
  for (int l = 0; l < c.n_layers; ++l) KVWIRE_RETURN_IF_ERROR(Layer(l, n, seqs));
  return absl::OkStatus();
}

// Where each sequence's rows of the pass go, for every layer and KV head: the first free entry
// of each head before the pass (layers append their rows with one AppendKv launch each).
absl::Status GpuRunner::PlanAppends(absl::Span<const Sequence> seqs) {
  const ModelConfig& c = model_->config();
  const int64_t d = c.head_dim;
  host_targets_.clear();
  for (int l = 0; l < c.n_layers; ++l) {
    for (const Sequence& seq : seqs) {
      const GpuKvCache& cache = *seq.cache;
      for (int h = 0; h < c.n_kv_heads; ++h) {
        const int64_t at = cache.counts_[l][h];
        host_targets_.push_back({cache.keys(l, h) + at * d, cache.values(l, h) + at * d,
                                 cache.bias(l, h) + at, cache.positions(l, h) + at, seq.row0,
                                 static_cast<int32_t>(seq.rows), h});
      }
    }
  }
  const size_t bytes = sizeof(kc::KvAppendTarget) * host_targets_.size();
  if (targets_.size() < bytes) {
    KVWIRE_ASSIGN_OR_RETURN(targets_, kc::DeviceBuffer::Allocate(bytes));
  }
  return targets_.Upload(*ctx_, host_targets_.data(), bytes);
}

// Attention of one sequence over its cache, whose heads now end with the pass's rows. Long passes
// go in chunks of queries (one launch holds at most 65535 / ceil(group / 8) queries): a chunk
// ending at row b sees each head without the pass's rows after b, which keeps it causal.
absl::Status GpuRunner::Attend(int l, const Sequence& seq) {
  constexpr int64_t kQueriesPerCall = 4096;
  const ModelConfig& c = model_->config();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  GpuKvCache& cache = *seq.cache;
  for (int h = 0; h < c.n_kv_heads; ++h) cache.counts_[l][h] += seq.rows;
  std::vector<kernels::KvHeadView> views(c.n_kv_heads);
  for (int64_t a = 0; a < seq.rows; a += kQueriesPerCall) {
    const int64_t b = std::min(seq.rows, a + kQueriesPerCall);
    for (int h = 0; h < c.n_kv_heads; ++h) {
      views[h] = {cache.keys(l, h), cache.values(l, h), cache.bias(l, h),
                  cache.counts_[l][h] - (seq.rows - b)};
    }
    KVWIRE_RETURN_IF_ERROR(kc::Attention(*ctx_, AttentionShapeFor(c, b - a),
                                         F(q_) + (seq.row0 + a) * q_dim, views.data(),
                                         F(attn_) + (seq.row0 + a) * q_dim));
  }
  return absl::OkStatus();
}

absl::Status GpuRunner::Layer(int l, int64_t n, absl::Span<const Sequence> seqs) {
  const ModelConfig& c = model_->config();
  const GpuModel::Layer& w = model_->layers_[l];
  kc::Context& ctx = *ctx_;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  KVWIRE_RETURN_IF_ERROR(kc::RmsNorm(ctx, F(x_), F(w.attn_norm), n, c.hidden, c.rms_eps, F(xn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWq], F(xn_), n, F(q_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWk], F(xn_), n, F(k_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWv], F(xn_), n, F(v_)));
  if (w.bq.size() > 0) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(q_), F(w.bq), n, q_dim));
  if (w.bk.size() > 0) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(k_), F(w.bk), n, kv_dim));
  if (w.bv.size() > 0) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(v_), F(w.bv), n, kv_dim));
  const int32_t* pos = positions_.as<int32_t>();
  KVWIRE_RETURN_IF_ERROR(
      kc::Rope(ctx, F(q_), n, c.n_heads, c.head_dim, pos, c.rope_theta, c.rope_style));
  KVWIRE_RETURN_IF_ERROR(
      kc::Rope(ctx, F(k_), n, c.n_kv_heads, c.head_dim, pos, c.rope_theta, c.rope_style));
  const int per_layer = static_cast<int>(seqs.size()) * c.n_kv_heads;
  int64_t max_rows = 0;
  for (const Sequence& seq : seqs) max_rows = std::max(max_rows, seq.rows);
  KVWIRE_RETURN_IF_ERROR(kc::AppendKv(ctx, targets_.as<kc::KvAppendTarget>() + l * per_layer,
                                      per_layer, max_rows, F(k_), F(v_), pos, c.n_kv_heads,
                                      c.head_dim));
  for (const Sequence& seq : seqs) KVWIRE_RETURN_IF_ERROR(Attend(l, seq));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWo], F(attn_), n, F(proj_)));
  KVWIRE_RETURN_IF_ERROR(kc::AddInPlace(ctx, F(x_), F(proj_), n * c.hidden));
  KVWIRE_RETURN_IF_ERROR(
      kc::RmsNorm(ctx, F(x_), F(w.ffn_norm), n, c.hidden, c.rms_eps, F(xn_ffn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kGate], F(xn_ffn_), n, F(gate_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kUp], F(xn_ffn_), n, F(up_)));
  KVWIRE_RETURN_IF_ERROR(kc::SwiGlu(ctx, F(gate_), F(up_), n * c.ffn_hidden, F(gate_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kDown], F(gate_), n, F(proj_)));
  KVWIRE_RETURN_IF_ERROR(kc::AddInPlace(ctx, F(x_), F(proj_), n * c.hidden));
  for (const Sequence& seq : seqs) KVWIRE_RETURN_IF_ERROR(Hooks(l, seq));
  return absl::OkStatus();
}

// The layer's tensors of one sequence to its hooks: device pointers, then host copies.
absl::Status GpuRunner::Hooks(int l, const Sequence& seq) {
  if (seq.options == nullptr) return absl::OkStatus();
  const GpuForwardOptions& o = *seq.options;
  if (!o.on_layer_device && !o.on_layer) return absl::OkStatus();
  const ModelConfig& c = model_->config();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  const int64_t window = std::clamp<int64_t>(o.window, 0, seq.rows);
  const int64_t end = seq.row0 + seq.rows;
  const GpuPrefillLayer dev{l,
                            seq.rows,
                            seq.first_position,
                            F(k_) + seq.row0 * kv_dim,
                            F(v_) + seq.row0 * kv_dim,
                            window,
                            F(q_) + (end - window) * q_dim,
                            F(xn_) + seq.row0 * c.hidden,
                            ctx_.get()};
  if (o.on_layer_device) KVWIRE_RETURN_IF_ERROR(o.on_layer_device(dev));
  if (!o.on_layer) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> keys,
                          Fetch(*ctx_, k_, dev.keys, seq.rows * kv_dim));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> values,
                          Fetch(*ctx_, v_, dev.values, seq.rows * kv_dim));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> queries,
                          Fetch(*ctx_, q_, dev.window_queries, window * q_dim));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> input,
                          Fetch(*ctx_, xn_, dev.attn_input, seq.rows * c.hidden));
  const PrefillLayer host{l,      seq.rows,       seq.first_position, keys.data(), values.data(),
                          window, queries.data(), input.data()};
  return o.on_layer(host);
}

// Logits fp32 [rows][vocab] of the pass's last `rows` tokens.
absl::StatusOr<std::vector<float>> GpuRunner::Logits(int64_t n, int64_t rows) {
  const ModelConfig& c = model_->config();
  const float* x = F(x_) + (n - rows) * c.hidden;
  KVWIRE_RETURN_IF_ERROR(
      kc::RmsNorm(*ctx_, x, F(model_->output_norm_), rows, c.hidden, c.rms_eps, F(xn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(*ctx_, model_->output(), F(xn_), rows, F(logits_)));
  std::vector<float> logits(rows * c.vocab_size);
  KVWIRE_RETURN_IF_ERROR(logits_.Download(*ctx_, logits.data(), sizeof(float) * logits.size()));
  return logits;
}

}  // namespace kvwire::runtime
