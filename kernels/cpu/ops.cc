// Row and elementwise operations of a Llama block.
#include "kvwire/kernels/ops.h"

#include <cmath>

#include "kernels/cpu/vector_math.h"

namespace kvwire::kernels {
namespace {

inline constexpr int kLanes = 16;

}  // namespace

float Dot(const float* a, const float* b, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  }
  // Pairwise folding keeps the reduction short (a serial sum of 16 lanes would cost more than
  // the whole dot product for head_dim 64).
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  }
  float sum = lanes[0];
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void RmsNorm(const float* x, const float* weight, int64_t n_rows, int64_t n, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float mean_sq = Dot(xr, xr, n) / static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(mean_sq + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void Rope(float* x, int64_t n_tokens, int n_heads, int head_dim, const int32_t* positions,
          float theta, RopeStyle style) {
  const int half = head_dim / 2;
  // Pair i uses element indices (a, b): adjacent (2i, 2i+1) or halves (i, i + d/2).
  const int a_stride = style == RopeStyle::kAdjacent ? 2 : 1;
  const int b_offset = style == RopeStyle::kAdjacent ? 1 : half;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double pos = positions[t];
    for (int i = 0; i < half; ++i) {
      const double freq = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
      const float c = static_cast<float>(std::cos(pos * freq));
      const float s = static_cast<float>(std::sin(pos * freq));
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        const int a = i * a_stride, b = a + b_offset;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

void Softmax(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  const float inv = 1.0f / internal::ExpShiftedSum(x, n, max);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  internal::SiluMul(gate, up, n, out);
}

void AddInPlace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace kvwire::kernels
