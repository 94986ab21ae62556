// bench/timing.h — wall-clock medians of a repeated call, shared by the benchmarks.
#ifndef KVWIRE_BENCH_TIMING_H_
#define KVWIRE_BENCH_TIMING_H_

#include <chrono>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/stats.h"

namespace kvwire::bench {

inline absl::Status StatusOf(const absl::Status& s) { return s; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// Milliseconds per call of `body` (returning absl::Status or absl::StatusOr<T>): `warmups` untimed
// calls, then the median of `repeats`. A call's result is destroyed only after its time is taken;
// the first failing call's status is returned.
template <typename Body>
absl::StatusOr<double> MedianWallMillis(int warmups, int repeats, Body&& body) {
  std::vector<double> ms;
  for (int i = 0; i < warmups + repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto result = body();
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!result.ok()) return StatusOf(result);
    if (i >= warmups) ms.push_back(t);
  }
  return Median(ms);
}

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_TIMING_H_
