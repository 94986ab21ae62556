#include "tests/kernels_gpu/gpu_test_util.h"

#include <algorithm>
#include <cmath>

namespace kvwire::kernels::cuda::testing {

const absl::Status& DeviceProbe() {
  static const absl::Status* const probe = new absl::Status(ProbeDevice());
  return *probe;
}

std::vector<float> RandomNormal(size_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> RandomUniform(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double ToleranceRatio(const std::vector<float>& a, const std::vector<float>& b, double atol,
                      double rtol) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(double{a[i]} - double{b[i]});
    const double ratio = err / (atol + rtol * std::fabs(double{b[i]}));
    worst = std::isnan(ratio) ? INFINITY : std::max(worst, ratio);
  }
  return worst;
}

}  // namespace kvwire::kernels::cuda::testing
