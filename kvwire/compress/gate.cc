#include "kvwire/compress/gate.h"

#include <cblas.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::compress {
namespace {

constexpr char kMagic[4] = {'K', 'V', 'W', 'G'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 56;
constexpr size_t kHeaderHashOffset = 48;
// Sizes beyond these are not a gate for any model this runtime loads: reject before allocating.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxLayers = 1024;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// x <- x / rms(x) over `width` values; returns rms.
float RmsNormalise(const float* u, int width, float* out) {
  float ss = 0;
  for (int i = 0; i < width; ++i) ss += u[i] * u[i];
  const float r = std::sqrt(ss / static_cast<float>(width) + kGateRmsEps);
  const float inv = 1.0f / r;
  for (int i = 0; i < width; ++i) out[i] = u[i] * inv;
  return r;
}

// Per token: normalisation, sink softmax and the self probability (after the projections).
// sinks_t: fp32 [n_kv_heads][rank][n_sinks], the sinks transposed so the sink logits of a query
// accumulate over contiguous sink rows (vectorises over the S sinks).
void TokenForward(const GateShape& s, const GateLayer& w, const float* sinks_t, int64_t t,
                  GateActivations* a) {
  const int r = s.rank, H = s.n_heads, G = s.n_kv_heads, S = s.n_sinks, group = s.group();
  const float scale = 1.0f / std::sqrt(static_cast<float>(r));
  for (int g = 0; g < G; ++g) {
    const int64_t o = (t * G + g) * r;
    a->rk[t * G + g] = RmsNormalise(a->uk.data() + o, r, a->k.data() + o);
  }
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    const int64_t o = (t * H + h) * r;
    a->rq[t * H + h] = RmsNormalise(a->uq.data() + o, r, a->q.data() + o);
    const float* q = a->q.data() + o;
    const float* k = a->k.data() + (t * G + g) * r;
    float self = 0;
    for (int i = 0; i < r; ++i) self += q[i] * k[i];
    self = self * scale + w.bias[h];
    float* p = a->sink_prob.data() + (t * H + h) * S;
    std::fill(p, p + S, 0.0f);
    for (int i = 0; i < r; ++i) {
      const float qi = q[i] * scale;
      const float* row = sinks_t + (static_cast<int64_t>(g) * r + i) * S;
      for (int j = 0; j < S; ++j) p[j] += qi * row[j];
    }
    int arg = 0;
    for (int j = 1; j < S; ++j) arg = p[j] > p[arg] ? j : arg;
    const float m = p[arg];
    kernels::Softmax(p, S);  // vectorised exp
    // logsumexp of the sink logits from the largest one's probability (>= 1/S, so log is safe).
    const float lse = m - std::log(p[arg]);
    a->gate[t * H + h] = 1.0f / (1.0f + std::exp(lse - self));
  }
}

void Resize(const GateShape& s, int64_t n, GateActivations* a) {
  const int64_t qw = int64_t{s.n_heads} * s.rank, kw = int64_t{s.n_kv_heads} * s.rank;
  a->n = n;
  a->uq.resize(n * qw);
  a->q.resize(n * qw);
  a->rq.resize(n * s.n_heads);
  a->uk.resize(n * kw);
  a->k.resize(n * kw);
  a->rk.resize(n * s.n_kv_heads);
  a->sink_prob.resize(n * s.n_heads * s.n_sinks);
  a->gate.resize(n * s.n_heads);
}

// d(loss)/du for u -> u / rms(u): (dy - y * mean(dy·y)) / r, in place over dy.
void RmsBackward(const float* y, float r, int width, float* dy) {
  float dot = 0;
  for (int i = 0; i < width; ++i) dot += dy[i] * y[i];
  dot /= static_cast<float>(width);
  for (int i = 0; i < width; ++i) dy[i] = (dy[i] - y[i] * dot) / r;
}

}  // namespace

int64_t GateShape::LayerFloats() const {
  const int64_t qw = int64_t{n_heads} * rank, kw = int64_t{n_kv_heads} * rank;
  return qw * hidden + qw + kw * hidden + int64_t{n_kv_heads} * n_sinks * rank + n_heads;
}

std::string GateShape::ToString() const {
  return absl::StrCat("layers ", n_layers, ", hidden ", hidden, ", heads ", n_heads, ", kv heads ",
                      n_kv_heads, ", rank ", rank, ", sinks ", n_sinks);
}

absl::Status GateShape::Validate() const {
  const bool positive =
      n_layers > 0 && hidden > 0 && n_heads > 0 && n_kv_heads > 0 && rank > 0 && n_sinks > 0;
  if (!positive || n_layers > kMaxLayers || hidden > kMaxDim || n_heads > kMaxDim ||
      rank > kMaxDim || n_sinks > kMaxDim || n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad gate shape (", ToString(), ")"));
  }
  return absl::OkStatus();
}

bool GateShape::operator==(const GateShape& o) const {
  return n_layers == o.n_layers && hidden == o.hidden && n_heads == o.n_heads &&
         n_kv_heads == o.n_kv_heads && rank == o.rank && n_sinks == o.n_sinks;
}

GateLayer GateLayer::Zeros(const GateShape& s) {
  const size_t qw = static_cast<size_t>(s.n_heads) * s.rank;
  const size_t kw = static_cast<size_t>(s.n_kv_heads) * s.rank;
  GateLayer l;
  l.wq.assign(qw * s.hidden, 0.0f);
  l.bq.assign(qw, 0.0f);
  l.wk.assign(kw * s.hidden, 0.0f);
  l.sinks.assign(kw * s.n_sinks, 0.0f);
  l.bias.assign(s.n_heads, 0.0f);
  return l;
}

std::vector<std::vector<float>*> GateLayer::Arrays() { return {&wq, &bq, &wk, &sinks, &bias}; }
std::vector<const std::vector<float>*> GateLayer::Arrays() const {
  return {&wq, &bq, &wk, &sinks, &bias};
}

void GateForward(const GateShape& s, const GateLayer& w, const float* x, int64_t n,
                 GateActivations* act, kernels::ThreadPool* pool) {
  Resize(s, n, act);
  const int qw = s.n_heads * s.rank, kw = s.n_kv_heads * s.rank;
  std::vector<float> sinks_t(w.sinks.size());
  for (int g = 0; g < s.n_kv_heads; ++g) {
    for (int j = 0; j < s.n_sinks; ++j) {
      for (int i = 0; i < s.rank; ++i) {
        sinks_t[(static_cast<int64_t>(g) * s.rank + i) * s.n_sinks + j] =
            w.sinks[(static_cast<int64_t>(g) * s.n_sinks + j) * s.rank + i];
      }
    }
  }
  // Token blocks are independent: each runs its own two sgemm and per-token loops.
  kernels::ParallelFor(pool, n, 32, [&](int64_t begin, int64_t end) {
    const int rows = static_cast<int>(end - begin);
    float* uq = act->uq.data() + begin * qw;
    for (int64_t t = 0; t < rows; ++t) std::copy(w.bq.begin(), w.bq.end(), uq + t * qw);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, qw, s.hidden, 1.0f,
                x + begin * s.hidden, s.hidden, w.wq.data(), s.hidden, 1.0f, uq, qw);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kw, s.hidden, 1.0f,
                x + begin * s.hidden, s.hidden, w.wk.data(), s.hidden, 0.0f,
                act->uk.data() + begin * kw, kw);
    for (int64_t t = begin; t < end; ++t) TokenForward(s, w, sinks_t.data(), t, act);
  });
}

void GroupScores(const GateShape& s, const GateActivations& act, float* scores, int64_t stride) {
  const int group = s.group();
  const float inv = 1.0f / static_cast<float>(group);
  for (int g = 0; g < s.n_kv_heads; ++g) {
    for (int64_t t = 0; t < act.n; ++t) {
      float sum = 0;
      for (int h = g * group; h < (g + 1) * group; ++h) sum += act.gate[t * s.n_heads + h];
      scores[g * stride + t] = sum * inv;
    }
  }
}

double GateLossAndGrad(const GateShape& s, const GateLayer& w, const float* x,
                       const GateActivations& a, const float* targets, GateLayer* grad) {
  const int r = s.rank, H = s.n_heads, G = s.n_kv_heads, S = s.n_sinks, group = s.group();
  const int qw = H * r, kw = G * r;
  const float scale = 1.0f / std::sqrt(static_cast<float>(r));
  const int64_t n = a.n;
  std::vector<float> duq(n * qw, 0.0f), duk(n * kw, 0.0f);
  double loss = 0;
  constexpr float kTiny = 1e-7f;
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const float p = a.gate[t * H + h], y = targets[t * G + g];
      loss -= y * std::log(std::max(p, kTiny)) + (1 - y) * std::log(std::max(1 - p, kTiny));
      // BCE through p = sigmoid(z_self - LSE(z_sinks)): d/dz_self = p - y, d/dz_j = -(p - y) pi_j.
      const float e = p - y;
      grad->bias[h] += e;
      const float* q = a.q.data() + (t * H + h) * r;
      const float* k = a.k.data() + (t * G + g) * r;
      const float* pi = a.sink_prob.data() + (t * H + h) * S;
      float* dq = duq.data() + (t * H + h) * r;
      float* dk = duk.data() + (t * G + g) * r;
      for (int i = 0; i < r; ++i) {
        dq[i] += e * scale * k[i];
        dk[i] += e * scale * q[i];
      }
      for (int j = 0; j < S; ++j) {
        const float c = -e * pi[j] * scale;
        float* ds = grad->sinks.data() + (static_cast<int64_t>(g) * S + j) * r;
        const float* sk = w.sinks.data() + (static_cast<int64_t>(g) * S + j) * r;
        for (int i = 0; i < r; ++i) {
          dq[i] += c * sk[i];
          ds[i] += c * q[i];
        }
      }
    }
    for (int h = 0; h < H; ++h) {
      RmsBackward(a.q.data() + (t * H + h) * r, a.rq[t * H + h], r, duq.data() + (t * H + h) * r);
    }
    for (int g = 0; g < G; ++g) {
      RmsBackward(a.k.data() + (t * G + g) * r, a.rk[t * G + g], r, duk.data() + (t * G + g) * r);
    }
    for (int i = 0; i < qw; ++i) grad->bq[i] += duq[t * qw + i];
  }
  if (n == 0) return loss;
  // dW += dU^T X.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qw, s.hidden, static_cast<int>(n), 1.0f,
              duq.data(), qw, x, s.hidden, 1.0f, grad->wq.data(), s.hidden);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kw, s.hidden, static_cast<int>(n), 1.0f,
              duk.data(), kw, x, s.hidden, 1.0f, grad->wk.data(), s.hidden);
  return loss;
}

// --- GateModel --------------------------------------------------------------------------------

absl::StatusOr<GateModel> GateModel::Init(const GateShape& shape, uint32_t seed) {
  KVWIRE_RETURN_IF_ERROR(shape.Validate());
  GateModel m;
  m.shape_ = shape;
  std::mt19937 rng(seed);
  // Projections ~ N(0, 1/hidden): pre-norm gate queries and keys of order 1 for unit-RMS inputs.
  std::normal_distribution<float> proj(0.0f, 1.0f / std::sqrt(static_cast<float>(shape.hidden)));
  std::normal_distribution<float> unit(0.0f, 1.0f);
  for (int l = 0; l < shape.n_layers; ++l) {
    GateLayer layer = GateLayer::Zeros(shape);
    for (float& v : layer.wq) v = proj(rng);
    for (float& v : layer.wk) v = proj(rng);
    for (float& v : layer.sinks) v = unit(rng);
    m.layers_.push_back(std::move(layer));
  }
  return m;
}

std::string GateModel::Serialize() const {
  std::string payload;
  payload.reserve(static_cast<size_t>(shape_.LayerFloats()) * shape_.n_layers * 4);
  for (const GateLayer& layer : layers_) {
    for (const std::vector<float>* a : layer.Arrays()) {
      for (float v : *a) {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        PutU32(&payload, bits);
      }
    }
  }
  std::string out(kMagic, 4);
  PutU32(&out, kVersion);
  for (int v : {shape_.n_layers, shape_.hidden, shape_.n_heads, shape_.n_kv_heads, shape_.rank,
                shape_.n_sinks}) {
    PutU32(&out, static_cast<uint32_t>(v));
  }
  PutU64(&out, payload.size());
  PutU64(&out, XXH3_64bits(payload.data(), payload.size()));
  PutU64(&out, XXH3_64bits(out.data(), out.size()));
  return out + payload;
}

absl::StatusOr<GateModel> GateModel::Parse(absl::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat("gate file truncated: ", bytes.size(),
                                            " bytes, the header alone is ", kHeaderBytes));
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) {
    return absl::InvalidArgumentError("not a kvwire gate file (magic is not \"KVWG\")");
  }
  const uint32_t version = GetU32(p + 4);
  if (version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gate file version ", version, " is not supported (this build reads ", kVersion, ")"));
  }
  if (XXH3_64bits(p, kHeaderHashOffset) != GetU64(p + kHeaderHashOffset)) {
    return absl::DataLossError("gate file header is corrupt (header hash mismatch)");
  }
  GateModel m;
  GateShape& s = m.shape_;
  int* dims[] = {&s.n_layers, &s.hidden, &s.n_heads, &s.n_kv_heads, &s.rank, &s.n_sinks};
  for (int i = 0; i < 6; ++i)
    *dims[i] = static_cast<int>(std::min<uint32_t>(GetU32(p + 8 + 4 * i), 1u << 30));
  if (absl::Status st = s.Validate(); !st.ok()) {
    return absl::DataLossError(absl::StrCat("gate file header: ", st.message()));
  }
  const uint64_t want = static_cast<uint64_t>(s.LayerFloats()) * s.n_layers * 4;
  const uint64_t declared = GetU64(p + 32);
  const uint64_t have = bytes.size() - kHeaderBytes;
  if (declared != want || have != want) {
    return absl::DataLossError(absl::StrCat("gate file payload is ", have, " bytes (header says ",
                                            declared, "), shape (", s.ToString(), ") needs ",
                                            want));
  }
  const char* payload = p + kHeaderBytes;
  if (XXH3_64bits(payload, want) != GetU64(p + 40)) {
    return absl::DataLossError("gate file payload is corrupt (checksum mismatch)");
  }
  for (int l = 0; l < s.n_layers; ++l) {
    GateLayer layer = GateLayer::Zeros(s);
    for (std::vector<float>* a : layer.Arrays()) {
      for (float& v : *a) {
        const uint32_t bits = GetU32(payload);
        payload += 4;
        std::memcpy(&v, &bits, 4);
        if (!std::isfinite(v)) {
          return absl::DataLossError(
              absl::StrCat("gate file layer ", l, " has a non-finite weight"));
        }
      }
    }
    m.layers_.push_back(std::move(layer));
  }
  return m;
}

absl::StatusOr<GateModel> GateModel::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open gate file ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read gate file ", path));
  absl::StatusOr<GateModel> m = Parse(bytes.str());
  if (!m.ok()) return Annotate(m.status(), path);
  return m;
}

absl::StatusOr<GateModel> GateModel::LoadFor(const std::string& path, int n_layers, int hidden,
                                             int n_heads, int n_kv_heads) {
  KVWIRE_ASSIGN_OR_RETURN(GateModel m, Load(path));
  KVWIRE_RETURN_IF_ERROR(Annotate(m.CheckModel(n_layers, hidden, n_heads, n_kv_heads), path));
  return m;
}

absl::Status GateModel::Save(const std::string& path) const {
  // Readers see the old file or the new one, never a part: write a sibling, then rename over.
  const std::string contents = Serialize();
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", temp, ": ", std::strerror(errno)));
  }
  bool ok = std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (ok && std::rename(temp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  const std::string reason = std::strerror(errno);
  std::remove(temp.c_str());
  return absl::InternalError(absl::StrCat("cannot write gate file ", path, ": ", reason));
}

absl::Status GateModel::CheckModel(int n_layers, int hidden, int n_heads, int n_kv_heads) const {
  if (shape_.n_layers == n_layers && shape_.hidden == hidden && shape_.n_heads == n_heads &&
      shape_.n_kv_heads == n_kv_heads) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("gates were trained for another model: gate file has layers ", shape_.n_layers,
                   ", hidden ", shape_.hidden, ", heads ", shape_.n_heads, ", kv heads ",
                   shape_.n_kv_heads, "; the model has layers ", n_layers, ", hidden ", hidden,
                   ", heads ", n_heads, ", kv heads ", n_kv_heads));
}

void GateScorer::Score(int layer, const float* x, int64_t n, std::vector<float>* scores,
                       kernels::ThreadPool* pool) {
  const GateShape& s = model_->shape();
  GateForward(s, model_->layer(layer), x, n, &act_, pool);
  scores->resize(static_cast<size_t>(s.n_kv_heads) * n);
  GroupScores(s, act_, scores->data(), n);
}

GateRowBuffer::GateRowBuffer(const GateModel* model, int batch)
    : scorer_(model), batch_(std::max(1, batch)), rows_(model->shape().n_layers) {}

bool GateRowBuffer::Add(int layer, const float* x) {
  const int D = scorer_.model().shape().hidden;
  std::vector<float>& rows = rows_[layer];
  rows.insert(rows.end(), x, x + D);
  return pending(layer) >= batch_;
}

int64_t GateRowBuffer::pending(int layer) const {
  return static_cast<int64_t>(rows_[layer].size()) / scorer_.model().shape().hidden;
}

void GateRowBuffer::Flush(int layer, std::vector<float>* scores, kernels::ThreadPool* pool) {
  scorer_.Score(layer, rows_[layer].data(), pending(layer), scores, pool);
  rows_[layer].clear();
}

}  // namespace kvwire::compress
