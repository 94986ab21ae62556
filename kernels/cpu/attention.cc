// Vote-biased GQA attention. Few queries (decode): decode_attention.cc. Many queries
// (prefill): blocks of queries per head, scores and outputs through single-threaded sgemm, blocks
// spread over the pool.
#include "kvwire/kernels/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/decode_attention.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::kernels {
namespace {

// Queries per sgemm block in the prefill path.
inline constexpr int64_t kQueryBlock = 64;
inline constexpr int64_t kGemmMinQueries = 16;

std::vector<float>& Scratch() {
  thread_local std::vector<float> scratch;
  return scratch;
}

// Softmax of logits[0..visible) (already scaled and biased) into probabilities.
void BiasAndSoftmax(float* logits, const float* bias, int64_t visible, float scale) {
  for (int64_t i = 0; i < visible; ++i) {
    logits[i] = logits[i] * scale + (bias != nullptr ? bias[i] : 0.0f);
  }
  Softmax(logits, visible);
}

// Queries [t0, t1) of head g through sgemm: S = Q K^T, masked softmax, O = P V.
void AttendBlock(const AttentionShape& s, const float* q, const KvHeadView& kv, int g, int64_t t0,
                 int64_t t1, float* out) {
  const int64_t offset = kv.n - s.n_queries;  // entries every query sees
  const int64_t m = offset + t1;              // entries the block's last query sees
  const int64_t rows = t1 - t0;
  const int ld_q = s.n_heads * s.head_dim;
  std::vector<float>& scores = Scratch();
  scores.resize(static_cast<size_t>(rows * m));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(m),
              s.head_dim, 1.0f, q + t0 * ld_q + g * s.head_dim, ld_q, kv.keys, s.head_dim, 0.0f,
              scores.data(), static_cast<int>(m));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = scores.data() + r * m;
    const int64_t visible = offset + t0 + r + 1;
    BiasAndSoftmax(row, kv.bias, visible, s.scale);
    std::fill(row + visible, row + m, 0.0f);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), s.head_dim,
              static_cast<int>(m), 1.0f, scores.data(), static_cast<int>(m), kv.values, s.head_dim,
              0.0f, out + t0 * ld_q + g * s.head_dim, ld_q);
}

}  // namespace

void Attention(const AttentionShape& s, const float* q, const KvHeadView* kv, float* out,
               ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  if (s.n_queries < kGemmMinQueries) {
    internal::DecodeAttention(s, q, kv, out, pool);
    return;
  }
  UseSingleThreadedBlas();
  const int64_t blocks = (s.n_queries + kQueryBlock - 1) / kQueryBlock;
  // Interleave heads and blocks so both halves of the task list carry similar causal work.
  ParallelFor(pool, blocks * s.n_heads, 1, [&](int64_t a, int64_t b) {
    for (int64_t task = a; task < b; ++task) {
      const int g = static_cast<int>(task % s.n_heads);
      const int64_t blk = task / s.n_heads;
      const int64_t t0 = blk * kQueryBlock, t1 = std::min(s.n_queries, t0 + kQueryBlock);
      AttendBlock(s, q, kv[g / group], g, t0, t1, out);
    }
  });
}

}  // namespace kvwire::kernels
