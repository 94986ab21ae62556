// kvwire/compress/spec.h — a compression recipe and its readable spelling.
//
// Grammar: SCORER[+critical][+recent[=SHARE]]/ALLOCATOR[/merge[:zip|:guarded]]
//   SCORER    window | h2o | snapkv | defensive | recon | gate
//   ALLOCATOR uniform | adaptive | global
// e.g. "snapkv/uniform", "defensive+critical/adaptive/merge", "h2o/global/merge:zip".
// `recon` and `gate` take their scores from outside the compressor (LayerInput::external_scores:
// context-reconstruction attention, compress/recon.h, or a learned gate); merge weights still
// come from the observation window's queries.
// Parameters (sinks, observation window, thresholds) have ALGORITHMS.md's defaults and can be
// changed on the struct. Thread-compatible value type.
#ifndef KVWIRE_COMPRESS_SPEC_H_
#define KVWIRE_COMPRESS_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvwire::compress {

// The method kvwire uses when nobody asks for another: chosen from the fidelity benchmark
// (README, "Compression quality").
inline constexpr char kDefaultMethod[] = "defensive+recent/adaptive/merge";

enum class ScorerKind { kWindow, kH2O, kSnapKV, kDefensive, kRecon, kGate };
enum class AllocatorKind { kUniform, kAdaptive, kGlobal };
enum class MergeMode { kNone, kGuarded, kZip };

struct CompressionSpec {
  ScorerKind scorer = ScorerKind::kSnapKV;
  bool critical = false;  // value-aware two-stage selection on top of the scorer
  // +recent=SHARE: share of each head's budget given to the most recent positions (the forced
  // window grows to max(window, share * budget)); the rest is chosen by score. 0 = off.
  // +recent alone: the share follows the kept fraction b, RecentShareFor(b).
  float recent_share = 0.0f;
  bool recent_by_budget = false;
  AllocatorKind allocator = AllocatorKind::kUniform;
  MergeMode merge = MergeMode::kNone;

  int sinks = 4;                 // first positions always kept
  int window = 32;               // observation window: last positions, always kept
  int pool_kernel = 5;           // snapkv/defensive 1-D pooling
  float critical_alpha = 0.5f;   // share of a head's budget chosen by the base score alone
  float adaptive_floor = 0.2f;   // Ada-KV per-head floor (alpha)
  float merge_threshold = 0.8f;  // minimum key cosine similarity to merge instead of drop
  float zip_min_abs = 0.5f;      // ZIP key only when |mean log-score| >= this ...
  float zip_max_ratio = 2.0f;    // ... and target/mean log-score ratio in [1/r, r]

  // INVALID_ARGUMENT naming the bad part and the accepted words.
  static absl::StatusOr<CompressionSpec> Parse(absl::string_view text);
  std::string ToString() const;
  // How many trailing prompt positions' queries scoring needs (all of them for h2o).
  int64_t QueryRows(int64_t prompt_length) const;
  // True for the scorers whose scores the caller supplies (recon, gate).
  bool external_scores() const {
    return scorer == ScorerKind::kRecon || scorer == ScorerKind::kGate;
  }
  // The recency share for kept fraction b: fixed, or clamp(1.2 - 3b, 0.5, 0.9) with `+recent`
  // (tight budgets are spent mostly on recent context; larger ones on scored entries).
  float RecentShareFor(double kept_fraction) const;
  // INVALID_ARGUMENT for out-of-range parameters.
  absl::Status Validate() const;
};

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_SPEC_H_
