// Decode attention, grouped and split (flash-decoding style). Reading the fp32 cache is the cost
// at long context, so each task handles all G query heads of one KV head (every key and value row
// is loaded once, not G times) over one slice of the entries, and keeps a partial softmax:
// (max logit m, sum of exp(l - m), sum of exp(l - m) v). Slices are merged per query head with
// the usual rescaling by exp(m_slice - m_total). Slicing gives the pool enough tasks when there
// are fewer KV heads than threads.
#include "kernels/cpu/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vector_math.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::kernels::internal {
namespace {

inline constexpr int64_t kSliceEntries = 128;
inline constexpr int64_t kMaxSlices = 8;

struct Partial {  // one (query, KV head, slice) task: G query heads
  float* max;     // [G]
  float* sum;     // [G]
  float* out;     // [G][head_dim]
};

// Partial softmax of query heads g0..g0+G-1 (query row q_row) over entries [i0, i1) of kv.
void AttendSlice(const AttentionShape& s, const float* q_row, int g0, int group,
                 const KvHeadView& kv, int64_t i0, int64_t i1, const Partial& p) {
  const int d = s.head_dim;
  const int64_t len = i1 - i0;
  thread_local std::vector<float> logits;
  logits.resize(static_cast<size_t>(group * std::max<int64_t>(len, 1)));
  for (int64_t i = i0; i < i1; ++i) {
    const float* k = kv.keys + i * d;
    const float bias = kv.bias != nullptr ? kv.bias[i] : 0.0f;
    for (int g = 0; g < group; ++g) {
      logits[g * len + (i - i0)] = Dot(q_row + (g0 + g) * d, k, d) * s.scale + bias;
    }
  }
  std::fill(p.out, p.out + group * d, 0.0f);
  for (int g = 0; g < group; ++g) {
    float* row = logits.data() + g * len;
    float m = -INFINITY;
    for (int64_t i = 0; i < len; ++i) m = row[i] > m ? row[i] : m;
    p.max[g] = m;
    p.sum[g] = len > 0 ? ExpShiftedSum(row, len, m) : 0.0f;
  }
  for (int64_t i = i0; i < i1; ++i) {
    const float* v = kv.values + i * d;
    for (int g = 0; g < group; ++g) {
      const float w = logits[g * len + (i - i0)];
      float* o = p.out + g * d;
      for (int j = 0; j < d; ++j) o[j] += w * v[j];
    }
  }
}

// out[j] = sum_s e^{m_s - M} out_s[j] / sum_s e^{m_s - M} sum_s over the non-empty slices.
void MergeSlices(const std::vector<float>& max, const std::vector<float>& sum,
                 const std::vector<float>& outs, int64_t first, int64_t stride, int64_t slices,
                 int d, float* out) {
  float m = -INFINITY;
  for (int64_t k = 0; k < slices; ++k) {
    if (sum[first + k * stride] > 0) m = std::max(m, max[first + k * stride]);
  }
  float total = 0;
  std::fill(out, out + d, 0.0f);
  for (int64_t k = 0; k < slices; ++k) {
    const int64_t at = first + k * stride;
    if (sum[at] <= 0) continue;
    const float w = std::exp(max[at] - m);
    total += w * sum[at];
    for (int j = 0; j < d; ++j) out[j] += w * outs[at * d + j];
  }
  for (int j = 0; j < d; ++j) out[j] /= total;
}

}  // namespace

void DecodeAttention(const AttentionShape& s, const float* q, const KvHeadView* kv, float* out,
                     ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads, d = s.head_dim;
  int64_t longest = 0;
  for (int h = 0; h < s.n_kv_heads; ++h) longest = std::max(longest, kv[h].n);
  const int64_t slices =
      std::clamp<int64_t>((longest + kSliceEntries - 1) / kSliceEntries, 1, kMaxSlices);
  // Task index = ((t * n_kv_heads + h) * slices + slice); per task G query heads.
  const int64_t tasks = s.n_queries * s.n_kv_heads * slices;
  std::vector<float> max(tasks * group), sum(tasks * group), outs(tasks * group * d);
  const int64_t ld = int64_t{s.n_heads} * d;
  ParallelFor(pool, tasks, 1, [&](int64_t a, int64_t b) {
    for (int64_t task = a; task < b; ++task) {
      const int64_t slice = task % slices, th = task / slices;
      const int64_t t = th / s.n_kv_heads;
      const int h = static_cast<int>(th % s.n_kv_heads);
      const int64_t visible = kv[h].n - s.n_queries + t + 1;
      const int64_t per = (visible + slices - 1) / slices;
      const int64_t i0 = std::min(visible, slice * per), i1 = std::min(visible, i0 + per);
      const Partial p{max.data() + task * group, sum.data() + task * group,
                      outs.data() + task * group * d};
      AttendSlice(s, q + t * ld, h * group, group, kv[h], i0, i1, p);
    }
  });
  for (int64_t th = 0; th < s.n_queries * s.n_kv_heads; ++th) {
    const int64_t t = th / s.n_kv_heads, h = th % s.n_kv_heads;
    for (int g = 0; g < group; ++g) {
      // Slice k of this (t, h) holds head g at row (th * slices + k) * group + g.
      MergeSlices(max, sum, outs, th * slices * group + g, group, slices, d,
                  out + t * ld + (h * group + g) * d);
    }
  }
}

}  // namespace kvwire::kernels::internal
