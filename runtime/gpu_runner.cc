// The Llama block of runner.cc on the device, with the KV cache resident there.
#include "runtime/gpu_runner.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/ops.h"
#include "kvwire/base/status.h"
#include "runtime/runner.h"

namespace kvwire::runtime {
namespace {

namespace kc = ::kvwire::kernels::cuda;

enum Weight { kWq, kWk, kWv, kWo, kGate, kUp, kDown };

absl::StatusOr<kc::DeviceBuffer> UploadFloats(kc::Context& ctx, const std::vector<float>& v) {
  return kc::ToDevice(ctx, v);
}

float* F(const kc::DeviceBuffer& b) { return b.as<float>(); }

}  // namespace

absl::StatusOr<std::unique_ptr<GpuRunner>> GpuRunner::Create(const Model& model,
                                                             const GpuRunnerOptions& options) {
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<kc::Context> ctx, kc::Context::Create(options.device));
  const int64_t cap = options.max_entries_per_head > 0 ? options.max_entries_per_head
                                                       : model.config().context_length;
  std::unique_ptr<GpuRunner> r(new GpuRunner(model, std::move(ctx), cap));
  KVWIRE_RETURN_IF_ERROR(r->Upload(options));
  return r;
}

absl::Status GpuRunner::Upload(const GpuRunnerOptions& options) {
  const ModelConfig& c = model_.config();
  kc::Context& ctx = *ctx_;
  const size_t kv_floats = static_cast<size_t>(c.n_kv_heads) * capacity_ * c.head_dim;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_.layer(l);
    DeviceLayer d;
    KVWIRE_ASSIGN_OR_RETURN(d.attn_norm, UploadFloats(ctx, w.attn_norm));
    KVWIRE_ASSIGN_OR_RETURN(d.ffn_norm, UploadFloats(ctx, w.ffn_norm));
    KVWIRE_ASSIGN_OR_RETURN(d.bq, UploadFloats(ctx, w.bq));
    KVWIRE_ASSIGN_OR_RETURN(d.bk, UploadFloats(ctx, w.bk));
    KVWIRE_ASSIGN_OR_RETURN(d.bv, UploadFloats(ctx, w.bv));
    for (const kernels::WeightView* v :
         {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
      KVWIRE_ASSIGN_OR_RETURN(kc::DeviceMatrix m,
                              kc::DeviceMatrix::Upload(ctx, *v, options.weights));
      d.w.push_back(std::move(m));
    }
    KVWIRE_ASSIGN_OR_RETURN(d.keys, kc::DeviceBuffer::Allocate(sizeof(float) * kv_floats));
    KVWIRE_ASSIGN_OR_RETURN(d.values, kc::DeviceBuffer::Allocate(sizeof(float) * kv_floats));
    KVWIRE_ASSIGN_OR_RETURN(d.bias,
                            kc::DeviceBuffer::Allocate(sizeof(float) * c.n_kv_heads * capacity_));
    layers_.push_back(std::move(d));
  }
  KVWIRE_ASSIGN_OR_RETURN(output_norm_, UploadFloats(ctx, model_.output_norm()));
  KVWIRE_ASSIGN_OR_RETURN(kc::DeviceMatrix out,
                          kc::DeviceMatrix::Upload(ctx, model_.output(), options.weights));
  output_ = std::make_unique<kc::DeviceMatrix>(std::move(out));
  counts_.assign(c.n_layers, std::vector<int64_t>(c.n_kv_heads, 0));
  return absl::OkStatus();
}

absl::Status GpuRunner::Install(const cache::KvCache& cache) {
  const ModelConfig& c = model_.config();
  if (!(cache.shape == c.cache_shape())) {
    return absl::InvalidArgumentError("GpuRunner: cache shape does not match the model");
  }
  KVWIRE_RETURN_IF_ERROR(cache.Validate());
  const int d = c.head_dim;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const cache::HeadSegment& seg = cache.layers[l].heads[h];
      const int64_t n = static_cast<int64_t>(seg.size());
      if (n > capacity_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "GpuRunner: layer ", l, " head ", h, " has ", n, " entries, capacity ", capacity_));
      }
      const size_t at = sizeof(float) * (static_cast<size_t>(h) * capacity_ * d);
      KVWIRE_RETURN_IF_ERROR(
          layers_[l].keys.Upload(*ctx_, seg.keys.data(), sizeof(float) * n * d, at));
      KVWIRE_RETURN_IF_ERROR(
          layers_[l].values.Upload(*ctx_, seg.values.data(), sizeof(float) * n * d, at));
      KVWIRE_RETURN_IF_ERROR(layers_[l].bias.Upload(*ctx_, seg.log_votes.data(), sizeof(float) * n,
                                                    sizeof(float) * h * capacity_));
      counts_[l][h] = n;
    }
  }
  return ctx_->Synchronize();
}

absl::StatusOr<std::vector<float>> GpuRunner::Prefill(absl::Span<const int32_t> tokens) {
  for (auto& layer : counts_) std::fill(layer.begin(), layer.end(), 0);
  return Forward(tokens, 0);
}

absl::StatusOr<std::vector<float>> GpuRunner::Decode(int32_t token, int32_t position) {
  return Forward(absl::MakeConstSpan(&token, 1), position);
}

absl::Status GpuRunner::Reserve(int64_t n) {
  if (n <= reserved_) return absl::OkStatus();
  const ModelConfig& c = model_.config();
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  const std::pair<kc::DeviceBuffer*, int64_t> sizes[] = {
      {&x_, c.hidden},    {&xn_, c.hidden},        {&q_, q_dim},
      {&k_, kv_dim},      {&v_, kv_dim},           {&attn_, q_dim},
      {&proj_, c.hidden}, {&gate_, c.ffn_hidden},  {&up_, c.ffn_hidden},
      {&positions_, 1},   {&logits_, c.vocab_size}};
  for (auto [buf, width] : sizes) {
    KVWIRE_ASSIGN_OR_RETURN(*buf, kc::DeviceBuffer::Allocate(sizeof(float) * n * width));
  }
  reserved_ = n;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> GpuRunner::Forward(absl::Span<const int32_t> tokens,
                                                      int32_t first_position) {
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError("GpuRunner: no tokens to run");
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("GpuRunner: token id ", t, " outside the vocabulary"));
    }
  }
  if (first_position < 0 || int64_t{first_position} + n > c.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("GpuRunner: positions from ", first_position,
                                                   " outside the context of ", c.context_length));
  }
  for (const auto& layer : counts_) {
    for (int64_t count : layer) {
      if (count + n > capacity_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "GpuRunner: ", count + n, " entries in a head exceed the capacity ", capacity_));
      }
    }
  }
  KVWIRE_RETURN_IF_ERROR(Reserve(n));
  std::vector<float> x(n * c.hidden);
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) {
    model_.Embed(tokens[t], x.data() + t * c.hidden);
    pos[t] = first_position + static_cast<int32_t>(t);
  }
  KVWIRE_RETURN_IF_ERROR(x_.Upload(*ctx_, x.data(), sizeof(float) * x.size()));
  KVWIRE_RETURN_IF_ERROR(positions_.Upload(*ctx_, pos.data(), sizeof(int32_t) * n));
  for (int l = 0; l < c.n_layers; ++l) KVWIRE_RETURN_IF_ERROR(Layer(l, n));
  const float* last = F(x_) + (n - 1) * c.hidden;
  KVWIRE_RETURN_IF_ERROR(kc::RmsNorm(*ctx_, last, F(output_norm_), 1, c.hidden, c.rms_eps, F(xn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(*ctx_, *output_, F(xn_), 1, F(logits_)));
  std::vector<float> logits(c.vocab_size);
  KVWIRE_RETURN_IF_ERROR(logits_.Download(*ctx_, logits.data(), sizeof(float) * c.vocab_size));
  return logits;
}

// Appends the step's K/V rows (interleaved [n][n_kv][d]) to every head's segment, bias 0.
absl::Status GpuRunner::AppendKv(int l, int64_t n) {
  const ModelConfig& c = model_.config();
  const int d = c.head_dim;
  const size_t row = sizeof(float) * d, src_pitch = row * c.n_kv_heads;
  DeviceLayer& dl = layers_[l];
  for (int h = 0; h < c.n_kv_heads; ++h) {
    const int64_t at = int64_t{h} * capacity_ + counts_[l][h];
    KVWIRE_RETURN_IF_ERROR(
        kc::CopyRows(*ctx_, F(dl.keys) + at * d, row, F(k_) + h * d, src_pitch, row, n));
    KVWIRE_RETURN_IF_ERROR(
        kc::CopyRows(*ctx_, F(dl.values) + at * d, row, F(v_) + h * d, src_pitch, row, n));
    // The new entries' log-votes are 0.
    KVWIRE_RETURN_IF_ERROR(kc::ZeroDevice(*ctx_, F(dl.bias) + at, sizeof(float) * n));
    counts_[l][h] += n;
  }
  return absl::OkStatus();
}

absl::Status GpuRunner::Layer(int l, int64_t n) {
  const ModelConfig& c = model_.config();
  const LayerWeights& hw = model_.layer(l);
  DeviceLayer& w = layers_[l];
  kc::Context& ctx = *ctx_;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  KVWIRE_RETURN_IF_ERROR(kc::RmsNorm(ctx, F(x_), F(w.attn_norm), n, c.hidden, c.rms_eps, F(xn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWq], F(xn_), n, F(q_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWk], F(xn_), n, F(k_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWv], F(xn_), n, F(v_)));
  if (!hw.bq.empty()) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(q_), F(w.bq), n, q_dim));
  if (!hw.bk.empty()) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(k_), F(w.bk), n, kv_dim));
  if (!hw.bv.empty()) KVWIRE_RETURN_IF_ERROR(kc::AddRowBias(ctx, F(v_), F(w.bv), n, kv_dim));
  const int32_t* pos = positions_.as<int32_t>();
  KVWIRE_RETURN_IF_ERROR(
      kc::Rope(ctx, F(q_), n, c.n_heads, c.head_dim, pos, c.rope_theta, c.rope_style));
  KVWIRE_RETURN_IF_ERROR(
      kc::Rope(ctx, F(k_), n, c.n_kv_heads, c.head_dim, pos, c.rope_theta, c.rope_style));
  KVWIRE_RETURN_IF_ERROR(AppendKv(l, n));
  std::vector<kernels::KvHeadView> views(c.n_kv_heads);
  for (int h = 0; h < c.n_kv_heads; ++h) {
    const int64_t at = int64_t{h} * capacity_;
    views[h] = {F(w.keys) + at * c.head_dim, F(w.values) + at * c.head_dim, F(w.bias) + at,
                counts_[l][h]};
  }
  KVWIRE_RETURN_IF_ERROR(
      kc::Attention(ctx, AttentionShapeFor(c, n), F(q_), views.data(), F(attn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kWo], F(attn_), n, F(proj_)));
  KVWIRE_RETURN_IF_ERROR(kc::AddInPlace(ctx, F(x_), F(proj_), n * c.hidden));
  KVWIRE_RETURN_IF_ERROR(kc::RmsNorm(ctx, F(x_), F(w.ffn_norm), n, c.hidden, c.rms_eps, F(xn_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kGate], F(xn_), n, F(gate_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kUp], F(xn_), n, F(up_)));
  KVWIRE_RETURN_IF_ERROR(kc::SwiGlu(ctx, F(gate_), F(up_), n * c.ffn_hidden, F(gate_)));
  KVWIRE_RETURN_IF_ERROR(kc::MatMul(ctx, w.w[kDown], F(gate_), n, F(proj_)));
  return kc::AddInPlace(ctx, F(x_), F(proj_), n * c.hidden);
}

}  // namespace kvwire::runtime
