#include "kvwire/kernels/compress.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kRowBlock = 64;  // query rows per sgemm block: bounds scratch to 64 x n floats

// Per-thread partial sums of AttentionStats over a subset of query rows. The unmasked log-mean-exp
// is kept as sum_r exp(z_ri - shift) with one shift for all columns (the largest row maximum
// seen), so each logit costs a single exp.
struct StatsAccumulator {
  explicit StatsAccumulator(int64_t n) : mean(n, 0.0f), max(n, 0.0f), sum(n, 0.0f), lse(n, 0.0) {}
  std::vector<float> mean, max, sum;
  std::vector<double> lse;
  float shift = kNegInf;

  void Rescale(float new_shift) {
    if (shift != kNegInf) {
      const double f = std::exp(static_cast<double>(shift) - new_shift);
      for (double& x : lse) x *= f;
    }
    shift = new_shift;
  }
  void Merge(StatsAccumulator& o) {
    if (o.shift > shift) Rescale(o.shift);
    const double f = o.shift == kNegInf ? 0.0 : std::exp(static_cast<double>(o.shift) - shift);
    for (size_t i = 0; i < mean.size(); ++i) {
      mean[i] += o.mean[i];
      max[i] = std::max(max[i], o.max[i]);
      sum[i] += o.sum[i];
      lse[i] += o.lse[i] * f;
    }
  }
};

// Rows (j, g) of the group of `kv_head`, copied contiguous: [n_queries * G][head_dim].
std::vector<float> GatherGroupQueries(const QueryBlock& qb, int kv_head) {
  const int group = qb.n_heads / qb.n_kv_heads;
  const int d = qb.head_dim;
  std::vector<float> rows(static_cast<size_t>(qb.n_queries) * group * d);
  for (int64_t j = 0; j < qb.n_queries; ++j) {
    for (int g = 0; g < group; ++g) {
      const float* src = qb.q + (j * qb.n_heads + kv_head * group + g) * d;
      std::copy(src, src + d, rows.data() + (j * group + g) * d);
    }
  }
  return rows;
}

// z[r][i] = scale * rows[r] · keys[i] for r in [r0, r1).
void Logits(const float* rows, int64_t r0, int64_t r1, const StridedRows& keys, int d, float scale,
            float* z) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0),
              static_cast<int>(keys.n), d, scale, rows + r0 * d, d, keys.base,
              static_cast<int>(keys.stride), 0.0f, z, static_cast<int>(keys.n));
}

// Overwrites z with exp(z - max z) and folds the row into the accumulator.
void AccumulateRow(float* z, int64_t n, int32_t query_pos, const int32_t* key_pos, float inv_rows,
                   float inv_group, StatsAccumulator& acc) {
  const float m = *std::max_element(z, z + n);
  if (m > acc.shift) acc.Rescale(m);
  double visible = 0;
  for (int64_t i = 0; i < n; ++i) {
    z[i] = std::exp(z[i] - m);
    if (key_pos[i] <= query_pos) visible += z[i];
  }
  const double to_shift = std::exp(static_cast<double>(m) - acc.shift);
  for (int64_t i = 0; i < n; ++i) acc.lse[i] += z[i] * to_shift;
  if (visible == 0) return;  // This query sees none of these keys.
  const auto inv = static_cast<float>(1.0 / visible);
  for (int64_t i = 0; i < n; ++i) {
    const float a = key_pos[i] <= query_pos ? z[i] * inv : 0.0f;
    acc.mean[i] += a * inv_rows;
    acc.max[i] = std::max(acc.max[i], a);
    acc.sum[i] += a * inv_group;
  }
}

}  // namespace

void AttentionStats(const QueryBlock& qb, int kv_head, const StridedRows& keys,
                    const int32_t* key_positions, const HeadAttentionStats& out, ThreadPool* pool) {
  UseSingleThreadedBlas();
  const int group = qb.n_heads / qb.n_kv_heads;
  const int64_t rows = qb.n_queries * group, n = keys.n;
  const std::vector<float> q = GatherGroupQueries(qb, kv_head);
  StatsAccumulator total(n);
  std::mutex mu;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  ParallelFor(pool, blocks, 1, [&](int64_t b0, int64_t b1) {
    StatsAccumulator acc(n);
    std::vector<float> z(static_cast<size_t>(kRowBlock) * n);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      Logits(q.data(), r0, r1, keys, qb.head_dim, qb.scale, z.data());
      for (int64_t r = r0; r < r1; ++r) {
        AccumulateRow(z.data() + (r - r0) * n, n, qb.positions[r / group], key_positions,
                      1.0f / static_cast<float>(rows), 1.0f / static_cast<float>(group), acc);
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    total.Merge(acc);
  });
  const float log_rows = std::log(static_cast<float>(rows));
  for (int64_t i = 0; i < n; ++i) {
    if (out.mean_prob) out.mean_prob[i] = total.mean[i];
    if (out.max_prob) out.max_prob[i] = total.max[i];
    if (out.sum_prob) out.sum_prob[i] = total.sum[i];
    // A key far below every row's maximum underflows to 0: report the lowest finite score.
    const double lse = total.lse[i] > 0 ? std::log(total.lse[i]) : -700.0;
    if (out.log_score) out.log_score[i] = static_cast<float>(total.shift + lse) - log_rows;
  }
}

void LogMeanExpScores(const QueryBlock& qb, int kv_head, const StridedRows& keys, float* out) {
  std::vector<int32_t> key_pos(keys.n, 0);  // no mask: every key is visible to every query
  HeadAttentionStats stats;
  stats.log_score = out;
  AttentionStats(qb, kv_head, keys, key_pos.data(), stats, nullptr);
}

void AveragePool1d(const float* in, int64_t n, int kernel, float* out) {
  const int half = kernel / 2;
  double in_sum = 0, out_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t k = std::max<int64_t>(0, i - half); k <= std::min(n - 1, i + half); ++k) s += in[k];
    out[i] = static_cast<float>(s / kernel);
    in_sum += in[i];
    out_sum += out[i];
  }
  if (out_sum > 0) {
    const float rescale = static_cast<float>(in_sum / out_sum);
    for (int64_t i = 0; i < n; ++i) out[i] *= rescale;
  }
}

void ValueOutputNorms(const StridedRows& values, const float* wo, int hidden, int n_heads,
                      int n_kv_heads, int head_dim, int kv_head, float* out, ThreadPool* pool) {
  UseSingleThreadedBlas();
  const int group = n_heads / n_kv_heads;
  const int64_t n = values.n;
  std::fill(out, out + n, 0.0f);
  ParallelFor(pool, n, 64, [&](int64_t i0, int64_t i1) {
    std::vector<float> proj(static_cast<size_t>(i1 - i0) * hidden);
    for (int g = kv_head * group; g < (kv_head + 1) * group; ++g) {
      // proj[i][o] = sum_c v_i[c] * wo[o][g*d + c]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(i1 - i0), hidden,
                  head_dim, 1.0f, values.row(i0), static_cast<int>(values.stride),
                  wo + static_cast<int64_t>(g) * head_dim, n_heads * head_dim, 0.0f, proj.data(),
                  hidden);
      for (int64_t i = i0; i < i1; ++i) {
        const float* p = proj.data() + (i - i0) * hidden;
        float l1 = 0;
        for (int o = 0; o < hidden; ++o) l1 += std::fabs(p[o]);
        out[i] += l1 / static_cast<float>(group);
      }
    }
  });
}

void CosineArgmax(const StridedRows& query_rows, const StridedRows& candidates, int dim,
                  int32_t* best_index, float* best_cosine, ThreadPool* pool) {
  UseSingleThreadedBlas();
  const int64_t nq = query_rows.n, nc = candidates.n;
  std::vector<float> inv_norm_c(nc);
  for (int64_t c = 0; c < nc; ++c) {
    const float norm = std::sqrt(Dot(candidates.row(c), candidates.row(c), dim));
    inv_norm_c[c] = norm > 0 ? 1.0f / norm : 0.0f;
  }
  ParallelFor(pool, nq, 32, [&](int64_t q0, int64_t q1) {
    std::vector<float> sim(static_cast<size_t>(q1 - q0) * nc);
    if (nc > 0) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(q1 - q0),
                  static_cast<int>(nc), dim, 1.0f, query_rows.row(q0),
                  static_cast<int>(query_rows.stride), candidates.base,
                  static_cast<int>(candidates.stride), 0.0f, sim.data(), static_cast<int>(nc));
    }
    for (int64_t q = q0; q < q1; ++q) {
      const float norm = std::sqrt(Dot(query_rows.row(q), query_rows.row(q), dim));
      const float inv_q = norm > 0 ? 1.0f / norm : 0.0f;
      int32_t best = -1;
      float best_cos = -2.0f;
      for (int64_t c = 0; c < nc; ++c) {
        const float cos = sim[(q - q0) * nc + c] * inv_q * inv_norm_c[c];
        if (cos > best_cos) best_cos = cos, best = static_cast<int32_t>(c);
      }
      best_index[q] = best;
      best_cosine[q] = best < 0 ? 0.0f : best_cos;
    }
  });
}

}  // namespace kvwire::kernels
