// Compiled with -ffast-math (see CMakeLists.txt): lets the loops below vectorise with libmvec.
#include "kernels/cpu/vector_math.h"

#include <cmath>

namespace kvwire::kernels::internal {

float ExpShiftedSum(float* x, int64_t n, float shift) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace kvwire::kernels::internal
