// Learned eviction gates: forward against a scalar reference, gradients against finite
// differences, training on recorded inputs, and the gate file's validation.
#include "kvwire/compress/gate.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvwire/compress/decode_compactor.h"
#include "kvwire/compress/gate_train.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/tiny_model.h"

namespace kvwire::compress {
namespace {

GateShape Shape(int layers, int hidden, int heads, int kv_heads, int rank, int sinks) {
  GateShape s;
  s.n_layers = layers;
  s.hidden = hidden;
  s.n_heads = heads;
  s.n_kv_heads = kv_heads;
  s.rank = rank;
  s.n_sinks = sinks;
  return s;
}

GateShape SmallShape() { return Shape(2, 12, 4, 2, 5, 3); }

std::vector<float> RandomRows(int64_t n, int width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n * width);
  for (float& v : x) v = normal(rng);
  return x;
}

// The gate of one token and query head, written out directly in double precision.
double ReferenceGate(const GateShape& s, const GateLayer& w, const float* x, int h) {
  const int r = s.rank, g = h / s.group();
  auto project = [&](const std::vector<float>& m, const float* bias, int row0) {
    std::vector<double> u(r);
    for (int i = 0; i < r; ++i) {
      double acc = bias != nullptr ? bias[row0 + i] : 0.0;
      for (int c = 0; c < s.hidden; ++c) acc += double{m[(row0 + i) * s.hidden + c]} * x[c];
      u[i] = acc;
    }
    double ss = 0;
    for (double v : u) ss += v * v;
    const double rms = std::sqrt(ss / r + kGateRmsEps);
    for (double& v : u) v /= rms;
    return u;
  };
  const std::vector<double> q = project(w.wq, w.bq.data(), h * r);
  const std::vector<double> k = project(w.wk, nullptr, g * r);
  const double scale = 1.0 / std::sqrt(static_cast<double>(r));
  double self = 0;
  for (int i = 0; i < r; ++i) self += q[i] * k[i];
  self = self * scale + w.bias[h];
  double denom = std::exp(self);
  for (int j = 0; j < s.n_sinks; ++j) {
    double z = 0;
    for (int i = 0; i < r; ++i) z += q[i] * w.sinks[(g * s.n_sinks + j) * r + i];
    denom += std::exp(z * scale);
  }
  return std::exp(self) / denom;
}

double ReferenceLoss(const GateShape& s, const GateLayer& w, const std::vector<float>& x,
                     const std::vector<float>& y, int64_t n) {
  double loss = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < s.n_heads; ++h) {
      const double p = ReferenceGate(s, w, x.data() + t * s.hidden, h);
      const double target = y[t * s.n_kv_heads + h / s.group()];
      loss -= target * std::log(p) + (1 - target) * std::log(1 - p);
    }
  }
  return loss;
}

GateModel TrainedLooking(const GateShape& s, uint32_t seed) {
  GateModel m = *GateModel::Init(s, seed);
  std::mt19937 rng(seed + 100);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (int l = 0; l < s.n_layers; ++l) {
    for (float& v : m.mutable_layer(l).bq) v = normal(rng);
    for (float& v : m.mutable_layer(l).bias) v = normal(rng);
  }
  return m;
}

TEST(GateForward, MatchesScalarReference) {
  const GateShape s = SmallShape();
  const GateModel m = TrainedLooking(s, 3);
  const int64_t n = 37;
  const std::vector<float> x = RandomRows(n, s.hidden, 4);
  GateActivations act;
  GateForward(s, m.layer(1), x.data(), n, &act);
  std::vector<float> scores(s.n_kv_heads * n);
  GroupScores(s, act, scores.data(), n);
  for (int64_t t = 0; t < n; ++t) {
    for (int g = 0; g < s.n_kv_heads; ++g) {
      double mean = 0;
      for (int h = g * s.group(); h < (g + 1) * s.group(); ++h) {
        const double ref = ReferenceGate(s, m.layer(1), x.data() + t * s.hidden, h);
        EXPECT_NEAR(act.gate[t * s.n_heads + h], ref, 1e-5) << "token " << t << " head " << h;
        mean += ref / s.group();
      }
      EXPECT_NEAR(scores[g * n + t], mean, 1e-5);
    }
  }
}

TEST(GateForward, ThreadedScorerMatchesSerial) {
  const GateShape s = SmallShape();
  const GateModel m = TrainedLooking(s, 5);
  const int64_t n = 300;
  const std::vector<float> x = RandomRows(n, s.hidden, 6);
  kernels::ThreadPool pool(2);
  GateScorer serial(&m), threaded(&m);
  std::vector<float> a, b;
  serial.Score(0, x.data(), n, &a);
  threaded.Score(0, x.data(), n, &b, &pool);
  ASSERT_EQ(a.size(), static_cast<size_t>(s.n_kv_heads * n));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6);
}

TEST(GateGradient, MatchesFiniteDifferences) {
  const GateShape s = SmallShape();
  GateModel m = TrainedLooking(s, 7);
  const int64_t n = 6;
  const std::vector<float> x = RandomRows(n, s.hidden, 8);
  std::vector<float> y(n * s.n_kv_heads);
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (float& v : y) v = unit(rng);
  GateLayer& w = m.mutable_layer(0);
  GateActivations act;
  GateForward(s, w, x.data(), n, &act);
  GateLayer grad = GateLayer::Zeros(s);
  const double loss = GateLossAndGrad(s, w, x.data(), act, y.data(), &grad);
  EXPECT_NEAR(loss, ReferenceLoss(s, w, x, y, n), 1e-4);
  auto params = w.Arrays();
  auto grads = grad.Arrays();
  const char* names[] = {"wq", "bq", "wk", "sinks", "bias"};
  for (size_t a = 0; a < params.size(); ++a) {
    std::vector<float>& p = *params[a];
    for (size_t i = 0; i < p.size(); i += 1 + p.size() / 23) {
      const float keep = p[i];
      const float eps = 1e-3f;
      p[i] = keep + eps;
      const double up = ReferenceLoss(s, w, x, y, n);
      p[i] = keep - eps;
      const double down = ReferenceLoss(s, w, x, y, n);
      p[i] = keep;
      const double numeric = (up - down) / (2.0 * eps);
      EXPECT_NEAR((*grads[a])[i], numeric, 2e-3 + 2e-3 * std::fabs(numeric))
          << names[a] << "[" << i << "]";
    }
  }
}

TEST(GateTargets, RankNormalisedPerHead) {
  const float scores[] = {0.5f, 0.1f, 0.9f, 0.3f,   // head 0
                          2.0f, 8.0f, 4.0f, 6.0f};  // head 1
  float y[8];
  RankTargets(scores, 2, 4, y);
  const float want0[] = {2.0f / 3, 0.0f, 1.0f, 1.0f / 3};
  const float want1[] = {0.0f, 1.0f, 1.0f / 3, 2.0f / 3};
  for (int t = 0; t < 4; ++t) {
    EXPECT_FLOAT_EQ(y[t * 2], want0[t]);
    EXPECT_FLOAT_EQ(y[t * 2 + 1], want1[t]);
  }
}

TEST(GateTargets, RejectsNonFiniteScores) {
  const GateShape s = SmallShape();
  const std::vector<float> x = RandomRows(3, s.hidden, 1);
  std::vector<float> scores(s.n_kv_heads * 3, 0.5f);
  scores[4] = NAN;
  GateSamples samples;
  EXPECT_EQ(RecordChunk(s, x.data(), scores.data(), 3, &samples).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RecordChunk(s, x.data(), scores.data(), 1, &samples).code(),
            absl::StatusCode::kInvalidArgument);
}

// Attention inputs of a tiny random model over random tokens, one layer's worth per chunk.
struct TinyModelInputs {
  std::unique_ptr<runtime::Model> model;
  std::vector<std::vector<float>> chunks;  // [chunk] fp32 [L][hidden] of layer 0
};

TinyModelInputs RecordTinyModel(int n_chunks, int64_t L) {
  runtime::TinyModelOptions opt;
  opt.hidden = 64;
  opt.n_heads = 4;
  opt.n_kv_heads = 2;
  opt.ffn_hidden = 128;
  opt.weight_type = kernels::QuantType::kF32;
  opt.embedding_type = kernels::QuantType::kF32;
  TinyModelInputs out;
  absl::StatusOr<std::string> bytes = runtime::MakeTinyModel(opt);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto gguf = runtime::GgufFile::FromBytes(*std::move(bytes));
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  auto model = runtime::Model::FromGguf(*std::move(gguf));
  EXPECT_TRUE(model.ok()) << model.status();
  out.model = *std::move(model);
  runtime::Runner runner(*out.model, 1);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> token(3, runtime::TinyVocabSize() - 1);
  for (int c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> tokens(L);
    for (int32_t& t : tokens) t = token(rng);
    std::vector<float>& rows = out.chunks.emplace_back();
    runtime::ForwardOptions options;
    options.on_layer = [&](const runtime::PrefillLayer& pl) {
      if (pl.layer == 0) rows.assign(pl.attn_input, pl.attn_input + pl.n_tokens * opt.hidden);
      return absl::OkStatus();
    };
    cache::KvCache cache;
    EXPECT_TRUE(runner.Prefill(tokens, options, &cache).ok());
  }
  return out;
}

// A student gate fitted to the scores of a fixed teacher gate on a tiny model's attention
// inputs: the loss falls and the student ranks held-out tokens like the teacher.
TEST(GateTraining, LossFallsAndRanksFollowTheTargetsOnTinyModelInputs) {
  const int64_t L = 96;
  TinyModelInputs inputs = RecordTinyModel(5, L);
  ASSERT_EQ(inputs.chunks.size(), 5u);
  const GateShape s = Shape(1, 64, 4, 2, 8, 4);
  const GateModel teacher = TrainedLooking(s, 21);
  GateScorer scorer(&teacher);
  GateSamples train, val;
  for (size_t c = 0; c < inputs.chunks.size(); ++c) {
    std::vector<float> scores;
    scorer.Score(0, inputs.chunks[c].data(), L, &scores);
    ASSERT_TRUE(
        RecordChunk(s, inputs.chunks[c].data(), scores.data(), L, c < 4 ? &train : &val).ok());
  }
  GateModel student = *GateModel::Init(s, 22);
  GateTrainOptions opt;
  opt.batch = 64;
  opt.seed = 3;
  const double before_val = MeanGateLoss(s, student.layer(0), val);
  const double before_rho = MeasureAgreement(s, student.layer(0), val).spearman;
  GateLayerTrainer trainer(s, &student.mutable_layer(0), opt, 0);
  double first = 0, last = 0;
  for (int e = 0; e < 30; ++e) {
    last = trainer.Epoch(train);
    if (e == 0) first = last;
  }
  EXPECT_LT(last, first);
  EXPECT_LT(MeanGateLoss(s, student.layer(0), val), before_val);
  const GateAgreement after = MeasureAgreement(s, student.layer(0), val);
  EXPECT_GT(after.spearman, before_rho);
  EXPECT_GT(after.spearman, 0.6);
  EXPECT_GT(after.top20, 0.4);
}

TEST(GateTraining, SameSeedSameWeights) {
  const GateShape s = SmallShape();
  const std::vector<float> x = RandomRows(64, s.hidden, 30);
  std::vector<float> scores = RandomRows(64, s.n_kv_heads, 31);
  GateSamples samples;
  ASSERT_TRUE(RecordChunk(s, x.data(), scores.data(), 64, &samples).ok());
  std::string runs[2];
  for (std::string& bytes : runs) {
    GateModel m = *GateModel::Init(s, 5);
    GateTrainOptions opt;
    opt.batch = 16;
    GateLayerTrainer trainer(s, &m.mutable_layer(0), opt, 0);
    for (int e = 0; e < 3; ++e) trainer.Epoch(samples);
    bytes = m.Serialize();
  }
  EXPECT_EQ(runs[0], runs[1]);
}

// --- Decode-time gates ---------------------------------------------------------------------------

// Generated entries are thinned to the kept fraction by gate score; prompt entries are untouched.
// The expected survivors come from replaying the rule on the scores alone (a merge keeps the
// target's position, so which positions survive depends only on the victims).
TEST(DecodeCompactorGates, KeepsTheHighestGatedGeneratedEntriesAtTheRatio) {
  const GateShape s = Shape(1, 16, 2, 1, 4, 3);
  const GateModel gates = TrainedLooking(s, 50);
  CompressionSpec spec;
  spec.sinks = 2;
  spec.window = 4;  // gate batches of 4 rows
  const float kept = 0.5f;
  DecodeCompactor compactor(spec, s.n_heads, /*max_entries=*/1000);
  compactor.UseGates(&gates, kept);
  constexpr int d = 8, kPrompt = 10, kSteps = 41;
  std::mt19937 rng(51);
  std::normal_distribution<float> normal;
  cache::LayerCache layer;
  layer.heads.resize(1);
  std::vector<float> k(d), v(d), q(s.n_heads * d);
  auto append = [&](int pos) {
    for (int c = 0; c < d; ++c) k[c] = normal(rng), v[c] = normal(rng);
    layer.heads[0].Append(pos, 0.0f, k.data(), v.data(), d);
  };
  for (int p = 0; p < kPrompt; ++p) append(p);
  const std::vector<float> rows = RandomRows(kSteps, s.hidden, 52);
  GateScorer scorer(&gates);
  std::vector<float> score;
  scorer.Score(0, rows.data(), kSteps, &score);
  std::vector<int> alive;  // generated step indices still in the cache (replayed rule)
  for (int t = 0; t < kSteps; ++t) {
    append(kPrompt + t);
    for (float& x : q) x = normal(rng);
    ASSERT_TRUE(compactor.OnStep(0, q.data(), &layer, rows.data() + t * s.hidden).ok());
    alive.push_back(t);
    if ((t + 1) % spec.window != 0) continue;
    const int64_t left = t + 1 - spec.window;
    const auto allowed = static_cast<size_t>(std::ceil(kept * std::max<int64_t>(left, 0)));
    while (left > 0 && alive.size() - spec.window > allowed) {
      auto lowest = alive.begin();
      for (auto it = alive.begin(); it != alive.end() - spec.window; ++it) {
        if (score[*it] < score[*lowest]) lowest = it;
      }
      alive.erase(lowest);
    }
  }
  std::vector<int32_t> want;
  for (int p = 0; p < kPrompt; ++p) want.push_back(p);
  for (int t : alive) want.push_back(kPrompt + t);
  EXPECT_EQ(layer.heads[0].positions, want);
  EXPECT_GT(compactor.gate_merges(), 10);
  EXPECT_EQ(compactor.gate_merges(), compactor.merges());
  for (float lv : layer.heads[0].log_votes) EXPECT_TRUE(std::isfinite(lv));
  // Gates need the step's attention input.
  append(kPrompt + kSteps);
  EXPECT_EQ(compactor.OnStep(0, q.data(), &layer).code(), absl::StatusCode::kInvalidArgument);
}

// --- Gate file ---------------------------------------------------------------------------------

TEST(GateFile, RoundTripsBitForBit) {
  const GateModel m = TrainedLooking(SmallShape(), 40);
  const std::string bytes = m.Serialize();
  absl::StatusOr<GateModel> back = GateModel::Parse(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->shape() == m.shape());
  EXPECT_EQ(back->Serialize(), bytes);
}

TEST(GateFile, RejectsTruncationAtEveryLength) {
  const std::string bytes = TrainedLooking(SmallShape(), 41).Serialize();
  for (size_t len = 0; len < bytes.size(); ++len) {
    absl::Status st = GateModel::Parse(absl::string_view(bytes.data(), len)).status();
    ASSERT_EQ(st.code(), absl::StatusCode::kDataLoss) << "length " << len << ": " << st;
  }
  EXPECT_EQ(GateModel::Parse(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
}

TEST(GateFile, RejectsEverySingleBitFlip) {
  const std::string bytes = TrainedLooking(SmallShape(), 42).Serialize();
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ (1 << (i % 8)));
    absl::Status st = GateModel::Parse(bad).status();
    ASSERT_FALSE(st.ok()) << "flip at byte " << i;
    const bool header_id = i < 8;  // magic and version
    EXPECT_EQ(st.code(),
              header_id ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kDataLoss)
        << "byte " << i << ": " << st;
  }
}

TEST(GateFile, RejectsAnotherVersionByName) {
  std::string bytes = TrainedLooking(SmallShape(), 43).Serialize();
  bytes[4] = 2;
  absl::Status st = GateModel::Parse(bytes).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("version 2"), std::string::npos) << st;
  bytes[0] = 'X';
  EXPECT_NE(std::string(GateModel::Parse(bytes).status().message()).find("magic"),
            std::string::npos);
}

TEST(GateFile, ShapeMismatchNamesBothShapes) {
  const GateModel m = TrainedLooking(SmallShape(), 44);
  EXPECT_TRUE(m.CheckModel(2, 12, 4, 2).ok());
  absl::Status st = m.CheckModel(30, 576, 9, 3);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(st.message());
  EXPECT_NE(msg.find("layers 2, hidden 12, heads 4, kv heads 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layers 30, hidden 576, heads 9, kv heads 3"), std::string::npos) << msg;
}

TEST(GateFile, SavesAtomicallyAndLoads) {
  const GateModel m = TrainedLooking(SmallShape(), 45);
  const std::string path = ::testing::TempDir() + "/gates_" + std::to_string(::getpid()) + ".bin";
  ASSERT_TRUE(m.Save(path).ok());
  absl::StatusOr<GateModel> back = GateModel::Load(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Serialize(), m.Serialize());
  EXPECT_TRUE(GateModel::LoadFor(path, 2, 12, 4, 2).ok());
  absl::Status other = GateModel::LoadFor(path, 2, 12, 6, 2).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(other.message()).find(path), std::string::npos) << other;
  ::unlink(path.c_str());
  EXPECT_EQ(GateModel::Load(path).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.Save("/nonexistent-dir/gates.bin").code(), absl::StatusCode::kInternal);
}

TEST(GateFile, RejectsBadShapeAtInit) {
  GateShape s = SmallShape();
  s.n_kv_heads = 3;  // 4 heads do not split into 3 groups
  EXPECT_EQ(GateModel::Init(s, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::compress
