// kernels/cpu/vector_math.h — exp over arrays through glibc's vector math library (internal).
// vector_math.cc alone is built with -ffast-math so GCC may call libmvec's SIMD expf (a few ulp,
// far below the rounding the tests allow); inputs must be finite.
#ifndef KVWIRE_KERNELS_CPU_VECTOR_MATH_H_
#define KVWIRE_KERNELS_CPU_VECTOR_MATH_H_

#include <cstdint>

namespace kvwire::kernels::internal {

// x[i] <- exp(x[i] - shift); returns the sum of the results.
float ExpShiftedSum(float* x, int64_t n, float shift);
// out[i] <- gate[i] / (1 + exp(-gate[i])) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

}  // namespace kvwire::kernels::internal

#endif  // KVWIRE_KERNELS_CPU_VECTOR_MATH_H_
