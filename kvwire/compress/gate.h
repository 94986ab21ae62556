// kvwire/compress/gate.h — learned eviction gates (Fast KVzip-style, ALGORITHMS.md §1 `gate`).
//
// One small gate per layer scores every token from the attention-input hidden state x (fp32
// [hidden], the RMS-normed input of the attention block), with no attention over the context:
//
//   q_h = RmsNorm(Wq_h x + bq_h)   per query head h, rank r (d'), no learned scale
//   k_g = RmsNorm(Wk_g x)          per KV head g
//   z_self = q_h·k_g / sqrt(r) + b_h,   z_j = q_h·s_{g,j} / sqrt(r)   (S learned sink keys per g)
//   gate_h = softmax(z_self, z_1..z_S)[self] = sigmoid(z_self − logsumexp_j z_j)
//   score_g = mean of gate_h over the query heads of group g
//
// The 1/sqrt(r) scale keeps the self logit in [−sqrt(r), sqrt(r)] (q and k have RMS 1, so
// |q|=|k|=sqrt(r)); the sinks are free, so the gate can learn any threshold per head; b_h shifts
// each head's operating point. A token that "attends to itself" more than to the sinks is one the
// model will need: the gate is trained (gate_train.h) against recon scores.
//
// Gate file (little-endian), written atomically by Save:
//   [0,4)   magic "KVWG"            [4,8)   u32 version (1)
//   [8,32)  u32 n_layers, hidden, n_heads, n_kv_heads, rank, n_sinks
//   [32,40) u64 payload bytes       [40,48) XXH3-64 (seed 0) of the payload
//   [48,56) XXH3-64 (seed 0) of bytes [0,48)
//   [56,..) payload: per layer wq fp32 [n_heads*rank][hidden], bq [n_heads*rank],
//           wk [n_kv_heads*rank][hidden], sinks [n_kv_heads][n_sinks][rank], bias [n_heads]
// Errors: a short file, a hash mismatch, a payload of the wrong size, an implausible shape or a
// non-finite weight are DATA_LOSS; a foreign magic or another version is INVALID_ARGUMENT; a file
// whose shape is not the model's is FAILED_PRECONDITION naming both shapes (CheckModel). I/O
// failures are NOT_FOUND / INTERNAL with the path.
//
// Thread-safety: GateModel is an immutable value after loading; a GateScorer owns scratch and is
// used by one thread at a time.
#ifndef KVWIRE_COMPRESS_GATE_H_
#define KVWIRE_COMPRESS_GATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvwire/kernels/thread_pool.h"

namespace kvwire::compress {

struct GateShape {
  int n_layers = 0;
  int hidden = 0;  // D, the model's embedding width
  int n_heads = 0;
  int n_kv_heads = 0;
  int rank = 16;     // d', gate query/key width
  int n_sinks = 16;  // S, learned sink keys per KV head

  int group() const { return n_heads / n_kv_heads; }
  int64_t LayerFloats() const;
  std::string ToString() const;
  // INVALID_ARGUMENT for non-positive or inconsistent sizes.
  absl::Status Validate() const;
  bool operator==(const GateShape& o) const;
};

// One layer's parameters, fp32 row-major.
struct GateLayer {
  std::vector<float> wq;     // [n_heads*rank][hidden]
  std::vector<float> bq;     // [n_heads*rank]
  std::vector<float> wk;     // [n_kv_heads*rank][hidden]
  std::vector<float> sinks;  // [n_kv_heads][n_sinks][rank]
  std::vector<float> bias;   // [n_heads]

  static GateLayer Zeros(const GateShape& shape);
  // Every parameter array, in file order (for updates and serialisation).
  std::vector<std::vector<float>*> Arrays();
  std::vector<const std::vector<float>*> Arrays() const;
};

// What the forward leaves for the backward pass and the scores, for n tokens.
struct GateActivations {
  int64_t n = 0;
  std::vector<float> uq, q;      // [n][n_heads*rank]: pre-norm and normalised gate queries
  std::vector<float> rq;         // [n][n_heads]: RMS of uq
  std::vector<float> uk, k;      // [n][n_kv_heads*rank]
  std::vector<float> rk;         // [n][n_kv_heads]
  std::vector<float> sink_prob;  // [n][n_heads][n_sinks]: softmax over the sink logits alone
  std::vector<float> gate;       // [n][n_heads]: probability mass on the token's own key
};

inline constexpr float kGateRmsEps = 1e-6f;

// Batched forward of one layer over x fp32 [n][hidden] (two sgemm plus O(n·H·S·r) loops), token
// blocks split over `pool` (may be null).
void GateForward(const GateShape& shape, const GateLayer& layer, const float* x, int64_t n,
                 GateActivations* act, kernels::ThreadPool* pool = nullptr);

// scores[g*stride + t] = mean over g's query heads of act.gate, t < act.n.
void GroupScores(const GateShape& shape, const GateActivations& act, float* scores, int64_t stride);

// Binary cross-entropy of every query head's gate against its group's soft target
// (targets fp32 [n][n_kv_heads] in [0, 1]); returns the summed loss over n·n_heads terms and adds
// its gradient with respect to every parameter to *grad (same shape as the layer).
double GateLossAndGrad(const GateShape& shape, const GateLayer& layer, const float* x,
                       const GateActivations& act, const float* targets, GateLayer* grad);

class GateModel {
 public:
  GateModel() = default;
  // Small random weights (seeded), sinks random, biases zero. INVALID_ARGUMENT for a bad shape.
  static absl::StatusOr<GateModel> Init(const GateShape& shape, uint32_t seed);
  static absl::StatusOr<GateModel> Parse(absl::string_view bytes);
  static absl::StatusOr<GateModel> Load(const std::string& path);
  // Load, then CheckModel against the model's shape; errors name the path.
  static absl::StatusOr<GateModel> LoadFor(const std::string& path, int n_layers, int hidden,
                                           int n_heads, int n_kv_heads);

  std::string Serialize() const;
  // Writes a temporary file next to `path`, fsyncs and renames it into place.
  absl::Status Save(const std::string& path) const;

  // FAILED_PRECONDITION naming both shapes when the gates were trained for another model.
  absl::Status CheckModel(int n_layers, int hidden, int n_heads, int n_kv_heads) const;

  const GateShape& shape() const { return shape_; }
  const GateLayer& layer(int l) const { return layers_[l]; }
  GateLayer& mutable_layer(int l) { return layers_[l]; }

 private:
  GateShape shape_;
  std::vector<GateLayer> layers_;
};

// Inline scoring for prefill and decode: reusable scratch around GateForward + GroupScores.
class GateScorer {
 public:
  explicit GateScorer(const GateModel* model) : model_(model) {}
  // x fp32 [n][hidden] of `layer`; scores fp32 [n_kv_heads][n] (resized). `pool` may be null.
  void Score(int layer, const float* x, int64_t n, std::vector<float>* scores,
             kernels::ThreadPool* pool = nullptr);
  const GateModel& model() const { return *model_; }

 private:
  const GateModel* model_;
  GateActivations act_;
};

// Decode-time batching: one token's attention input arrives per layer and step; rows wait per
// layer until `batch` of them are there and are then scored in one call (weights read once per
// batch instead of once per token).
class GateRowBuffer {
 public:
  GateRowBuffer(const GateModel* model, int batch);
  // Appends x fp32 [hidden] of `layer`; true when that layer now holds `batch` rows.
  bool Add(int layer, const float* x);
  int64_t pending(int layer) const;
  // Scores and clears the layer's rows: scores fp32 [n_kv_heads][n], oldest row first.
  void Flush(int layer, std::vector<float>* scores, kernels::ThreadPool* pool = nullptr);
  int batch() const { return batch_; }
  int layers() const { return static_cast<int>(rows_.size()); }

 private:
  GateScorer scorer_;
  int batch_;
  std::vector<std::vector<float>> rows_;  // per layer fp32 [pending][hidden]
};

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_GATE_H_
