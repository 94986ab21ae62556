// GpuModel (weights on the device) and GpuKvCache (one sequence's cache there). See gpu_runner.h.
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/model_ops.h"
#include "kvwire/base/status.h"
#include "runtime/gpu_runner.h"

namespace kvwire::runtime {
namespace {

namespace kc = ::kvwire::kernels::cuda;

uint64_t NextModelId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

absl::StatusOr<kc::DeviceBuffer> UploadFloats(kc::Context& ctx, const std::vector<float>& v) {
  return kc::ToDevice(ctx, v);
}

absl::Status CheckConfig(const ModelConfig& c) {
  if (c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.hidden <= 0 ||
      c.ffn_hidden <= 0 || c.vocab_size <= 0 || c.context_length <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuModel: config sizes must be positive (layers ", c.n_layers, ", heads ", c.n_heads, "/",
        c.n_kv_heads, ", head_dim ", c.head_dim, ", hidden ", c.hidden, ", ffn ", c.ffn_hidden,
        ", vocab ", c.vocab_size, ", context ", c.context_length, ")"));
  }
  if (c.n_heads % c.n_kv_heads != 0 || c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GpuModel: ", c.n_heads, " heads over ",
                                                   c.n_kv_heads, " KV heads, head_dim ", c.head_dim,
                                                   " (needs a multiple, even dim)"));
  }
  return absl::OkStatus();
}

// A [rows][cols] matrix drawn uniform in +-sqrt(3 / cols) (unit output variance for unit inputs).
absl::StatusOr<kc::DeviceMatrix> DrawMatrix(kc::Context& ctx, int64_t rows, int64_t cols,
                                            float bound, uint64_t seed, kc::HalfType half) {
  KVWIRE_ASSIGN_OR_RETURN(kc::DeviceBuffer data,
                          kc::DeviceBuffer::Allocate(sizeof(uint16_t) * rows * cols));
  KVWIRE_RETURN_IF_ERROR(
      kc::FillUniformHalf(ctx, data.as<uint16_t>(), rows * cols, -bound, bound, seed, half));
  return kc::DeviceMatrix::Adopt(std::move(data), rows, cols, half);
}

absl::StatusOr<kc::DeviceBuffer> Ones(kc::Context& ctx, int64_t n) {
  KVWIRE_ASSIGN_OR_RETURN(kc::DeviceBuffer b, kc::DeviceBuffer::Allocate(sizeof(float) * n));
  KVWIRE_RETURN_IF_ERROR(kc::FillUniform(ctx, b.as<float>(), n, 1.0f, 1.0f, 0));
  return b;
}

}  // namespace

GpuModel::GpuModel(const ModelConfig& config, const GpuModelOptions& options)
    : config_(config), device_(options.device), half_(options.weights), id_(NextModelId()) {}

absl::StatusOr<std::shared_ptr<const GpuModel>> GpuModel::Upload(const Model& model,
                                                                 const GpuModelOptions& options) {
  KVWIRE_RETURN_IF_ERROR(CheckConfig(model.config()));
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<kc::Context> ctx, kc::Context::Create(options.device));
  std::shared_ptr<GpuModel> m(new GpuModel(model.config(), options));
  KVWIRE_RETURN_IF_ERROR(m->UploadWeights(*ctx, model));
  KVWIRE_RETURN_IF_ERROR(ctx->Synchronize());
  m->CountBytes();
  return std::shared_ptr<const GpuModel>(std::move(m));
}

absl::StatusOr<std::shared_ptr<const GpuModel>> GpuModel::Random(const ModelConfig& config,
                                                                 uint64_t seed,
                                                                 const GpuModelOptions& options) {
  KVWIRE_RETURN_IF_ERROR(CheckConfig(config));
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<kc::Context> ctx, kc::Context::Create(options.device));
  std::shared_ptr<GpuModel> m(new GpuModel(config, options));
  KVWIRE_RETURN_IF_ERROR(m->DrawWeights(*ctx, seed));
  KVWIRE_RETURN_IF_ERROR(ctx->Synchronize(absl::Minutes(5)));
  m->CountBytes();
  return std::shared_ptr<const GpuModel>(std::move(m));
}

absl::Status GpuModel::UploadWeights(kc::Context& ctx, const Model& model) {
  for (int l = 0; l < config_.n_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    Layer d;
    KVWIRE_ASSIGN_OR_RETURN(d.attn_norm, UploadFloats(ctx, w.attn_norm));
    KVWIRE_ASSIGN_OR_RETURN(d.ffn_norm, UploadFloats(ctx, w.ffn_norm));
    KVWIRE_ASSIGN_OR_RETURN(d.bq, UploadFloats(ctx, w.bq));
    KVWIRE_ASSIGN_OR_RETURN(d.bk, UploadFloats(ctx, w.bk));
    KVWIRE_ASSIGN_OR_RETURN(d.bv, UploadFloats(ctx, w.bv));
    for (const kernels::WeightView* v :
         {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
      KVWIRE_ASSIGN_OR_RETURN(kc::DeviceMatrix m, kc::DeviceMatrix::Upload(ctx, *v, half_));
      d.w.push_back(std::move(m));
    }
    layers_.push_back(std::move(d));
  }
  KVWIRE_ASSIGN_OR_RETURN(output_norm_, UploadFloats(ctx, model.output_norm()));
  KVWIRE_ASSIGN_OR_RETURN(embedding_,
                          kc::DeviceMatrix::Upload(ctx, model.token_embedding(), half_));
  // Tied models read the output head from the embedding table (Model::output() is that view).
  tied_ = model.output().data == model.token_embedding().data;
  if (!tied_) {
    KVWIRE_ASSIGN_OR_RETURN(output_, kc::DeviceMatrix::Upload(ctx, model.output(), half_));
  }
  return absl::OkStatus();
}

absl::Status GpuModel::DrawWeights(kc::Context& ctx, uint64_t seed) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  uint64_t stream = seed * 0x100000001B3ull;  // a distinct seed per matrix
  auto draw = [&](int64_t rows, int64_t cols) {
    return DrawMatrix(ctx, rows, cols, std::sqrt(3.0f / static_cast<float>(cols)), ++stream, half_);
  };
  for (int l = 0; l < c.n_layers; ++l) {
    Layer d;
    KVWIRE_ASSIGN_OR_RETURN(d.attn_norm, Ones(ctx, c.hidden));
    KVWIRE_ASSIGN_OR_RETURN(d.ffn_norm, Ones(ctx, c.hidden));
    const std::pair<int64_t, int64_t> shapes[] = {
        {q_dim, c.hidden},       {kv_dim, c.hidden},       {kv_dim, c.hidden},
        {c.hidden, q_dim},       {c.ffn_hidden, c.hidden}, {c.ffn_hidden, c.hidden},
        {c.hidden, c.ffn_hidden}};
    for (auto [rows, cols] : shapes) {
      KVWIRE_ASSIGN_OR_RETURN(kc::DeviceMatrix m, draw(rows, cols));
      d.w.push_back(std::move(m));
    }
    layers_.push_back(std::move(d));
  }
  KVWIRE_ASSIGN_OR_RETURN(output_norm_, Ones(ctx, c.hidden));
  KVWIRE_ASSIGN_OR_RETURN(embedding_, draw(c.vocab_size, c.hidden));
  tied_ = c.tied_output;
  if (!tied_) {
    KVWIRE_ASSIGN_OR_RETURN(output_, draw(c.vocab_size, c.hidden));
  }
  return absl::OkStatus();
}

void GpuModel::CountBytes() {
  auto matrix = [](const kc::DeviceMatrix& m) {
    return sizeof(uint16_t) * static_cast<size_t>(m.rows() * m.cols());
  };
  size_t bytes = output_norm_.size() + matrix(embedding_) + (tied_ ? 0 : matrix(output_));
  for (const Layer& l : layers_) {
    bytes += l.attn_norm.size() + l.ffn_norm.size() + l.bq.size() + l.bk.size() + l.bv.size();
    for (const kc::DeviceMatrix& m : l.w) bytes += matrix(m);
  }
  weight_bytes_ = bytes;
}

// ---- GpuKvCache ----

GpuKvCache::GpuKvCache(const GpuModel& model, int64_t capacity)
    : model_id_(model.id_),
      device_(model.device()),
      shape_(model.config().cache_shape()),
      capacity_(capacity),
      counts_(shape_.n_layers, std::vector<int64_t>(shape_.n_kv_heads, 0)) {}

absl::StatusOr<std::unique_ptr<GpuKvCache>> GpuKvCache::Create(const GpuModel& model,
                                                               int64_t max_entries_per_head) {
  if (max_entries_per_head < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuKvCache: capacity ", max_entries_per_head, " is negative"));
  }
  const int64_t cap =
      max_entries_per_head > 0 ? max_entries_per_head : model.config().context_length;
  KVWIRE_RETURN_IF_ERROR(kc::UseDevice(model.device()));
  std::unique_ptr<GpuKvCache> c(new GpuKvCache(model, cap));
  const size_t entries = static_cast<size_t>(c->shape_.n_kv_heads) * cap;
  const size_t kv_bytes = sizeof(float) * entries * c->shape_.head_dim;
  for (int l = 0; l < c->shape_.n_layers; ++l) {
    Layer d;
    KVWIRE_ASSIGN_OR_RETURN(d.keys, kc::DeviceBuffer::Allocate(kv_bytes));
    KVWIRE_ASSIGN_OR_RETURN(d.values, kc::DeviceBuffer::Allocate(kv_bytes));
    KVWIRE_ASSIGN_OR_RETURN(d.bias, kc::DeviceBuffer::Allocate(sizeof(float) * entries));
    KVWIRE_ASSIGN_OR_RETURN(d.positions, kc::DeviceBuffer::Allocate(sizeof(int32_t) * entries));
    c->layers_.push_back(std::move(d));
  }
  return c;
}

float* GpuKvCache::keys(int layer, int head) const {
  return layers_[layer].keys.as<float>() + int64_t{head} * capacity_ * shape_.head_dim;
}
float* GpuKvCache::values(int layer, int head) const {
  return layers_[layer].values.as<float>() + int64_t{head} * capacity_ * shape_.head_dim;
}
float* GpuKvCache::bias(int layer, int head) const {
  return layers_[layer].bias.as<float>() + int64_t{head} * capacity_;
}
int32_t* GpuKvCache::positions(int layer, int head) const {
  return layers_[layer].positions.as<int32_t>() + int64_t{head} * capacity_;
}

size_t GpuKvCache::device_bytes() const {
  size_t bytes = 0;
  for (const Layer& l : layers_) {
    bytes += l.keys.size() + l.values.size() + l.bias.size() + l.positions.size();
  }
  return bytes;
}

absl::Status GpuKvCache::Install(const cache::KvCache& host) {
  if (!(host.shape == shape_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuKvCache::Install: cache of ", host.shape.n_layers, " layers x ", host.shape.n_kv_heads,
        " KV heads x ", host.shape.head_dim, " dims, the model has ", shape_.n_layers, " x ",
        shape_.n_kv_heads, " x ", shape_.head_dim));
  }
  KVWIRE_RETURN_IF_ERROR(host.Validate());
  for (int l = 0; l < shape_.n_layers; ++l) {
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      const size_t n = host.layers[l].heads[h].size();
      if (static_cast<int64_t>(n) > capacity_) {
        return absl::ResourceExhaustedError(absl::StrCat("GpuKvCache::Install: layer ", l, " head ",
                                                         h, " has ", n, " entries, capacity ",
                                                         capacity_));
      }
    }
  }
  const size_t d = shape_.head_dim;
  std::vector<kc::CopyOp> copies;
  for (int l = 0; l < shape_.n_layers; ++l) {
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      const cache::HeadSegment& seg = host.layers[l].heads[h];
      const size_t n = seg.size();
      copies.push_back({keys(l, h), seg.keys.data(), sizeof(float) * n * d});
      copies.push_back({values(l, h), seg.values.data(), sizeof(float) * n * d});
      copies.push_back({bias(l, h), seg.log_votes.data(), sizeof(float) * n});
      copies.push_back({positions(l, h), seg.positions.data(), sizeof(int32_t) * n});
    }
  }
  // Counts are set only after the copies: a failed copy leaves the old counts over partly
  // overwritten entries, which the header tells callers to Install again.
  KVWIRE_RETURN_IF_ERROR(kc::CopyAndWait(device_, kc::CopyKind::kHostToDevice, copies));
  for (int l = 0; l < shape_.n_layers; ++l) {
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      counts_[l][h] = static_cast<int64_t>(host.layers[l].heads[h].size());
    }
  }
  original_length_ = host.original_length;
  return absl::OkStatus();
}

absl::Status GpuKvCache::ReplaceHead(int layer, int head, const cache::HeadSegment& segment) {
  if (layer < 0 || layer >= shape_.n_layers || head < 0 || head >= shape_.n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("GpuKvCache::ReplaceHead: no head ", head,
                                                   " in layer ", layer, " of ", shape_.n_layers,
                                                   " x ", shape_.n_kv_heads));
  }
  const size_t n = segment.size(), d = shape_.head_dim;
  if (segment.log_votes.size() != n || segment.keys.size() != n * d ||
      segment.values.size() != n * d) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuKvCache::ReplaceHead: segment of ", n, " positions has ",
                     segment.log_votes.size(), " log-votes, ", segment.keys.size(), " key and ",
                     segment.values.size(), " value floats (head_dim ", d, ")"));
  }
  if (static_cast<int64_t>(n) > capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("GpuKvCache::ReplaceHead: ", n, " entries, capacity ", capacity_));
  }
  const kc::CopyOp copies[] = {
      {keys(layer, head), segment.keys.data(), sizeof(float) * n * d},
      {values(layer, head), segment.values.data(), sizeof(float) * n * d},
      {bias(layer, head), segment.log_votes.data(), sizeof(float) * n},
      {positions(layer, head), segment.positions.data(), sizeof(int32_t) * n},
  };
  KVWIRE_RETURN_IF_ERROR(kc::CopyAndWait(device_, kc::CopyKind::kHostToDevice, copies));
  counts_[layer][head] = static_cast<int64_t>(n);
  return absl::OkStatus();
}

absl::StatusOr<cache::KvCache> GpuKvCache::Download() const {
  cache::KvCache host = cache::KvCache::Empty(shape_, original_length_);
  const size_t d = shape_.head_dim;
  std::vector<kc::CopyOp> copies;
  for (int l = 0; l < shape_.n_layers; ++l) {
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      cache::HeadSegment& seg = host.layers[l].heads[h];
      const size_t n = static_cast<size_t>(counts_[l][h]);
      seg.keys.resize(n * d);
      seg.values.resize(n * d);
      seg.log_votes.resize(n);
      seg.positions.resize(n);
      copies.push_back({seg.keys.data(), keys(l, h), sizeof(float) * n * d});
      copies.push_back({seg.values.data(), values(l, h), sizeof(float) * n * d});
      copies.push_back({seg.log_votes.data(), bias(l, h), sizeof(float) * n});
      copies.push_back({seg.positions.data(), positions(l, h), sizeof(int32_t) * n});
    }
  }
  KVWIRE_RETURN_IF_ERROR(kc::CopyAndWait(device_, kc::CopyKind::kDeviceToHost, copies));
  return host;
}

}  // namespace kvwire::runtime
