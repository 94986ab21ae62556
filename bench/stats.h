// bench/stats.h — order statistics shared by the benchmarks.
#ifndef KVWIRE_BENCH_STATS_H_
#define KVWIRE_BENCH_STATS_H_

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvwire::bench {

// The sample at quantile p (0..1) by nearest rank; NaN for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

inline double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_STATS_H_
