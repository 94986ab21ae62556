#include "kvwire/compress/gate_train.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kvwire::compress {
namespace {

// Ranks 0..n-1 of v (ties broken by index, which keeps the order deterministic).
std::vector<double> Ranks(const std::vector<float>& v) {
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (size_t i = 0; i < order.size(); ++i) rank[order[i]] = static_cast<double>(i);
  return rank;
}

double Spearman(const std::vector<float>& a, const std::vector<float>& b) {
  const std::vector<double> ra = Ranks(a), rb = Ranks(b);
  const double n = static_cast<double>(a.size()), mean = (n - 1) / 2;
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    cov += (ra[i] - mean) * (rb[i] - mean);
    va += (ra[i] - mean) * (ra[i] - mean);
    vb += (rb[i] - mean) * (rb[i] - mean);
  }
  return va > 0 && vb > 0 ? cov / std::sqrt(va * vb) : 0.0;
}

double TopOverlap(const std::vector<float>& a, const std::vector<float>& b, double fraction) {
  const int64_t n = static_cast<int64_t>(a.size());
  const int64_t k = std::min<int64_t>(n, static_cast<int64_t>(std::ceil(fraction * n)));
  auto top = [&](const std::vector<float>& v) {
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) { return v[i] > v[j]; });
    std::vector<char> in(n, 0);
    for (int64_t i = 0; i < k; ++i) in[idx[i]] = 1;
    return in;
  };
  const std::vector<char> ta = top(a), tb = top(b);
  int64_t both = 0;
  for (int64_t i = 0; i < n; ++i) both += ta[i] && tb[i];
  return k > 0 ? static_cast<double>(both) / static_cast<double>(k) : 0.0;
}

int64_t ChunkEnd(const GateSamples& s, size_t c) {
  return c + 1 < s.chunk_starts.size() ? s.chunk_starts[c + 1] : s.n;
}

}  // namespace

void RankTargets(const float* scores, int n_kv_heads, int64_t L, float* y) {
  const double denom = L > 1 ? static_cast<double>(L - 1) : 1.0;
  for (int g = 0; g < n_kv_heads; ++g) {
    const std::vector<float> head(scores + g * L, scores + (g + 1) * L);
    const std::vector<double> rank = Ranks(head);
    for (int64_t t = 0; t < L; ++t) y[t * n_kv_heads + g] = static_cast<float>(rank[t] / denom);
  }
}

absl::Status RecordChunk(const GateShape& shape, const float* x, const float* scores, int64_t L,
                         GateSamples* s) {
  if (L < 2) return absl::InvalidArgumentError(absl::StrCat("chunk of ", L, " tokens; need >= 2"));
  const int G = shape.n_kv_heads;
  for (int64_t i = 0; i < L * G; ++i) {
    if (!std::isfinite(scores[i])) {
      return absl::InvalidArgumentError(absl::StrCat("score ", i, " of the chunk is not finite"));
    }
  }
  s->chunk_starts.push_back(s->n);
  s->x.insert(s->x.end(), x, x + L * shape.hidden);
  const size_t at = s->targets.size();
  s->targets.resize(at + L * G);
  RankTargets(scores, G, L, s->targets.data() + at);
  s->scores.resize(at + L * G);
  for (int g = 0; g < G; ++g) {
    for (int64_t t = 0; t < L; ++t) s->scores[at + t * G + g] = scores[g * L + t];
  }
  s->n += L;
  return absl::OkStatus();
}

double MeanGateLoss(const GateShape& shape, const GateLayer& layer, const GateSamples& s) {
  if (s.n == 0) return 0;
  GateActivations act;
  GateLayer scratch = GateLayer::Zeros(shape);
  double loss = 0;
  constexpr int64_t kBlock = 1024;
  for (int64_t t0 = 0; t0 < s.n; t0 += kBlock) {
    const int64_t n = std::min(kBlock, s.n - t0);
    GateForward(shape, layer, s.x.data() + t0 * shape.hidden, n, &act);
    const int G = shape.n_kv_heads, group = shape.group();
    for (int64_t t = 0; t < n; ++t) {
      for (int h = 0; h < shape.n_heads; ++h) {
        const double p = std::clamp<double>(act.gate[t * shape.n_heads + h], 1e-7, 1 - 1e-7);
        const double y = s.targets[(t0 + t) * G + h / group];
        loss -= y * std::log(p) + (1 - y) * std::log(1 - p);
      }
    }
  }
  return loss / (static_cast<double>(s.n) * shape.n_heads);
}

GateLayerTrainer::GateLayerTrainer(const GateShape& shape, GateLayer* layer,
                                   const GateTrainOptions& options, int layer_index)
    : shape_(shape),
      layer_(layer),
      options_(options),
      velocity_(GateLayer::Zeros(shape)),
      rng_(options.seed * 7919u + static_cast<uint32_t>(layer_index)) {}

double GateLayerTrainer::Epoch(const GateSamples& s) {
  std::vector<int64_t> order(s.n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng_);
  const int D = shape_.hidden, G = shape_.n_kv_heads;
  std::vector<float> xb, yb;
  GateActivations act;
  double total = 0;
  for (int64_t b0 = 0; b0 < s.n; b0 += options_.batch) {
    const int64_t n = std::min<int64_t>(options_.batch, s.n - b0);
    xb.resize(n * D);
    yb.resize(n * G);
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(s.x.data() + order[b0 + i] * D, D, xb.data() + i * D);
      std::copy_n(s.targets.data() + order[b0 + i] * G, G, yb.data() + i * G);
    }
    GateForward(shape_, *layer_, xb.data(), n, &act);
    GateLayer grad = GateLayer::Zeros(shape_);
    total += GateLossAndGrad(shape_, *layer_, xb.data(), act, yb.data(), &grad);
    // Mean over (token, head) terms, then clip the step's norm.
    const double terms = static_cast<double>(n) * shape_.n_heads;
    double norm2 = 0;
    for (const std::vector<float>* a : grad.Arrays()) {
      for (float v : *a) norm2 += (v / terms) * (v / terms);
    }
    const double clip = std::min(1.0, options_.max_grad_norm / (std::sqrt(norm2) + 1e-12));
    const float step = static_cast<float>(options_.lr * clip / terms);
    auto params = layer_->Arrays();
    auto vel = velocity_.Arrays();
    auto grads = grad.Arrays();
    for (size_t a = 0; a < params.size(); ++a) {
      std::vector<float>& w = *params[a];
      std::vector<float>& v = *vel[a];
      const std::vector<float>& g = *grads[a];
      for (size_t i = 0; i < w.size(); ++i) {
        v[i] = options_.momentum * v[i] - step * g[i];
        w[i] += v[i];
      }
    }
  }
  return s.n > 0 ? total / (static_cast<double>(s.n) * shape_.n_heads) : 0.0;
}

GateAgreement MeasureAgreement(const GateShape& shape, const GateLayer& layer,
                               const GateSamples& s) {
  GateAgreement out;
  const int G = shape.n_kv_heads;
  GateActivations act;
  int64_t count = 0;
  for (size_t c = 0; c < s.chunk_starts.size(); ++c) {
    const int64_t t0 = s.chunk_starts[c], L = ChunkEnd(s, c) - t0;
    GateForward(shape, layer, s.x.data() + t0 * shape.hidden, L, &act);
    std::vector<float> gate(static_cast<size_t>(G) * L);
    GroupScores(shape, act, gate.data(), L);
    for (int g = 0; g < G; ++g) {
      const std::vector<float> mine(gate.begin() + g * L, gate.begin() + (g + 1) * L);
      std::vector<float> ref(L);
      for (int64_t t = 0; t < L; ++t) ref[t] = s.scores[(t0 + t) * G + g];
      out.spearman += Spearman(mine, ref);
      out.top10 += TopOverlap(mine, ref, 0.1);
      out.top20 += TopOverlap(mine, ref, 0.2);
      ++count;
    }
  }
  if (count > 0) {
    out.spearman /= count;
    out.top10 /= count;
    out.top20 /= count;
  }
  return out;
}

}  // namespace kvwire::compress
