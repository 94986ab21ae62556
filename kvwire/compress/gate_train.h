// kvwire/compress/gate_train.h — fitting a layer's gate (gate.h) to recorded scores, no backprop
// through the model: the frozen model's attention inputs and its recon scores (recon.h) are
// recorded once, then each layer's gate is fitted on its own.
//
// Targets: per chunk of text and per KV head the recon scores are rank-normalised,
// y_t = rank(s_t) / (L − 1) ∈ [0, 1] (0 the least, 1 the most important token of the chunk). Ranks
// because recon scores are heavy-tailed (a few sink and hub tokens take most of the mass) and
// eviction only needs the order; every query head of the group learns its group's target.
// Loss: binary cross-entropy with those soft targets, averaged over tokens and query heads.
// Optimiser: minibatch SGD with momentum on hand-written gradients (GateLossAndGrad), token
// order shuffled per epoch with a seeded generator, so a run is deterministic for a seed.
// Agreement: Spearman rank correlation between gate and recon scores and the overlap of their
// top-B sets (B = 10 % and 20 % of the chunk), per chunk and KV head, averaged.
//
// Thread-safety: functions are reentrant on distinct layers/samples. Errors: none (shapes are the
// caller's contract; RecordChunk checks its own inputs and returns INVALID_ARGUMENT).
#ifndef KVWIRE_COMPRESS_GATE_TRAIN_H_
#define KVWIRE_COMPRESS_GATE_TRAIN_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "kvwire/compress/gate.h"

namespace kvwire::compress {

// Recorded tokens of one layer, in chunks.
struct GateSamples {
  int64_t n = 0;
  std::vector<float> x;               // fp32 [n][hidden]: attention inputs
  std::vector<float> targets;         // fp32 [n][n_kv_heads]: rank-normalised, in [0, 1]
  std::vector<float> scores;          // fp32 [n][n_kv_heads]: the raw scores, for agreement
  std::vector<int64_t> chunk_starts;  // first token of each chunk
};

// Appends one chunk of L tokens: x fp32 [L][hidden], scores fp32 [n_kv_heads][L] (as recon.h
// returns them). INVALID_ARGUMENT when L < 2 or a score is not finite.
absl::Status RecordChunk(const GateShape& shape, const float* x, const float* scores, int64_t L,
                         GateSamples* samples);

// y[t*n_kv + g] = rank of scores[g*L + t] among its head's L scores / (L − 1).
void RankTargets(const float* scores, int n_kv_heads, int64_t L, float* y);

struct GateTrainOptions {
  int epochs = 30;
  int batch = 256;  // tokens per SGD step
  float lr = 0.1f;  // on the mean loss per (token, query head); 0.1 beat 0.05-5 on SmolLM2
  float momentum = 0.9f;
  float max_grad_norm = 5.0f;  // per step, before the learning rate
  uint32_t seed = 1;
};

// Mean BCE per (token, query head) of `layer` on `samples`.
double MeanGateLoss(const GateShape& shape, const GateLayer& layer, const GateSamples& samples);

// One layer's optimiser state across epochs.
class GateLayerTrainer {
 public:
  GateLayerTrainer(const GateShape& shape, GateLayer* layer, const GateTrainOptions& options,
                   int layer_index);
  // One pass over `samples` in a shuffled order; returns the mean training loss of the pass.
  double Epoch(const GateSamples& samples);

 private:
  GateShape shape_;
  GateLayer* layer_;
  GateTrainOptions options_;
  GateLayer velocity_;
  std::mt19937 rng_;
};

struct GateAgreement {
  double spearman = 0;  // mean over chunks and KV heads
  double top10 = 0;     // |top-B(gate) ∩ top-B(recon)| / B at B = ceil(0.1 L)
  double top20 = 0;     // ... at 20 %
};
GateAgreement MeasureAgreement(const GateShape& shape, const GateLayer& layer,
                               const GateSamples& samples);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_GATE_TRAIN_H_
