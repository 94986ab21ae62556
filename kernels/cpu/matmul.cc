// Weight x activation products: fused dot products for decode, dequantized tiles + sgemm for
// prefill.
#include "kvwire/kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/blas.h"

namespace kvwire::kernels {
namespace {

// Rows per dequantized tile in the sgemm path: a tile of 256 rows x 1536 cols is 1.5 MiB of fp32,
// small enough to stay in L2/L3 while sgemm streams the activations.
inline constexpr int64_t kTileRows = 256;

void MatVecRows(const WeightView& w, const float* x, int64_t n_tokens, float* y, int64_t r0,
                int64_t r1) {
  const int64_t row_bytes = RowBytes(w.type, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t t = 0; t < n_tokens; ++t) {
      y[t * w.rows + r] = DotRow(w.type, base + r * row_bytes, x + t * w.cols, w.cols);
    }
  }
}

std::vector<float>& TileScratch() {
  thread_local std::vector<float> scratch;
  return scratch;
}

// y[:, r0:r1] = x * W[r0:r1]^T, dequantizing W tile by tile into this thread's scratch.
void GemmRows(const WeightView& w, const float* x, int64_t n_tokens, float* y, int64_t r0,
              int64_t r1) {
  const int64_t row_bytes = RowBytes(w.type, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  std::vector<float>& tile = TileScratch();
  tile.resize(static_cast<size_t>(std::min(kTileRows, r1 - r0) * w.cols));
  for (int64_t t0 = r0; t0 < r1; t0 += kTileRows) {
    const int64_t t1 = std::min(r1, t0 + kTileRows);
    const float* rows = reinterpret_cast<const float*>(base + t0 * row_bytes);
    if (w.type != QuantType::kF32) {
      for (int64_t r = t0; r < t1; ++r) {
        DequantizeRow(w.type, base + r * row_bytes, tile.data() + (r - t0) * w.cols, w.cols);
      }
      rows = tile.data();
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_tokens),
                static_cast<int>(t1 - t0), static_cast<int>(w.cols), 1.0f, x,
                static_cast<int>(w.cols), rows, static_cast<int>(w.cols), 0.0f, y + t0,
                static_cast<int>(w.rows));
  }
}

}  // namespace

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool* pool) {
  if (n_tokens >= kGemmMinTokens) {
    UseSingleThreadedBlas();
    ParallelFor(pool, w.rows, 64,
                [&](int64_t r0, int64_t r1) { GemmRows(w, x, n_tokens, y, r0, r1); });
    return;
  }
  ParallelFor(pool, w.rows, 32,
              [&](int64_t r0, int64_t r1) { MatVecRows(w, x, n_tokens, y, r0, r1); });
}

}  // namespace kvwire::kernels
