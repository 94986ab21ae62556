#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kvwire::runtime {

int32_t ArgMax(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  if (!(options_.top_p > 0.0f && options_.top_p <= 1.0f)) options_.top_p = 1.0f;
}

double Sampler::Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (!(options_.temperature > 0.0f) || logits.empty()) return ArgMax(logits);
  // Probabilities at the temperature, in double, sorted descending with index tie-break so the
  // order is fully determined.
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = std::exp((logits[i] - max) / options_.temperature);
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  // Nucleus: the shortest prefix whose mass reaches top_p.
  double kept = 0;
  size_t n_kept = 0;
  while (n_kept < order.size() && (n_kept == 0 || kept < options_.top_p * total)) {
    kept += p[order[n_kept++]];
  }
  double r = Uniform() * kept;
  for (size_t i = 0; i < n_kept; ++i) {
    r -= p[order[i]];
    if (r < 0) return order[i];
  }
  return order[n_kept - 1];
}

}  // namespace kvwire::runtime
