// runtime/sampling.h — next-token selection from logits: greedy, or temperature + nucleus (top-p)
// sampling driven by a seeded generator, so a (seed, logits sequence) pair always yields the same
// tokens on every platform (the uniform draw is computed from mt19937_64 bits directly).
//
// Thread-safety: a Sampler is single-threaded. Errors: none (options are clamped: temperature
// <= 0 means greedy, top_p outside (0, 1] means 1).
#ifndef KVWIRE_RUNTIME_SAMPLING_H_
#define KVWIRE_RUNTIME_SAMPLING_H_

#include <cstdint>
#include <random>

#include "absl/types/span.h"

namespace kvwire::runtime {

struct SamplingOptions {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;
};

// Index of the largest logit (lowest index on ties).
int32_t ArgMax(absl::Span<const float> logits);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t Sample(absl::Span<const float> logits);

 private:
  double Uniform();  // [0, 1)

  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_SAMPLING_H_
