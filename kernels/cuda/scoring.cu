// Observation-window statistics, pooling and cosine matching on the device. See compress.h.
//
// AttentionStats runs in two passes that recompute logits instead of storing the rows x keys
// matrix: (1) per query row, the max logit over all keys and the visible softmax denominator
// relative to it, split over key ranges; (2) per key tile, every row's probability of that key
// (mean, max, sum) and an online log-sum-exp of its unmasked logits. Both passes use the same
// tile shape: warps own query rows, lanes own keys, key rows padded in shared memory so the lanes'
// float4 reads of different rows fall into different banks.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/compress.h"
#include "kernels/cuda/internal.h"

namespace kvwire::kernels::cuda {
namespace {

using internal::Dot4;
using internal::WarpMax;
using internal::WarpSum;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kRowTile = 16;  // query rows per tile
constexpr int kRowsPerWarp = kRowTile / kWarps;
constexpr int kKeyTile = 32;     // keys per tile, one per lane
constexpr int kCosRowTile = 32;  // query rows per CosineArgmax block
constexpr int kPoolThreads = 1024;

// The query rows (j, g) of one KV head's group, row r = j * group + g as on the CPU.
struct RowSource {
  const float* q;
  const int32_t* positions;
  int64_t n_rows;
  int group, n_heads, d, kv_head;
  __device__ const float* Row(int64_t r) const {
    return q + ((r / group) * n_heads + int64_t{kv_head} * group + r % group) * d;
  }
  __device__ int32_t Position(int64_t r) const { return positions[r / group]; }
};

struct KeySource {
  const float* base;
  int64_t stride, n;
  const int32_t* positions;
  __device__ const float* Row(int64_t i) const { return base + i * stride; }
};

struct StatsOut {
  float *mean, *max, *sum, *log_score;
};

// rows [r0, r0 + count) of `src` into dst (row pitch ld4 float4s); zeros past n.
template <typename Source>
__device__ void LoadTile(const Source& src, int64_t n, int64_t r0, int count, int d4, int ld4,
                         float4* dst) {
  for (int idx = threadIdx.x; idx < count * d4; idx += blockDim.x) {
    const int r = idx / d4, c = idx - r * d4;
    dst[r * ld4 + c] = r0 + r < n ? reinterpret_cast<const float4*>(src.Row(r0 + r))[c]
                                  : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}

__device__ __forceinline__ float TileDot(const float4* a, const float4* b, int d4) {
  float dot = 0.0f;
  for (int c = 0; c < d4; ++c) dot += Dot4(a[c], b[c]);
  return dot;
}

// Pass 1. Block (row tile, key split): per row, max logit m over the split's keys and
// s = sum over the visible ones of exp(z - m). partial [splits][n_rows].
__global__ void __launch_bounds__(kThreads)
    RowStatsKernel(const RowSource rows, const KeySource keys, float scale, int64_t keys_per_split,
                   float2* partial) {
  extern __shared__ float4 smem4[];
  const int d4 = rows.d / 4;
  float4* q_s = smem4;
  float4* k_s = q_s + kRowTile * d4;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = int64_t{blockIdx.x} * kRowTile;
  const int64_t k_begin = blockIdx.y * keys_per_split;
  const int64_t k_end = min(keys.n, k_begin + keys_per_split);
  LoadTile(rows, rows.n_rows, r0, kRowTile, d4, d4, q_s);
  int32_t qpos[kRowsPerWarp];
  float m[kRowsPerWarp], s[kRowsPerWarp];
#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t r = r0 + warp + kWarps * k;
    qpos[k] = r < rows.n_rows ? rows.Position(r) : 0;
    m[k] = -INFINITY;
    s[k] = 0.0f;
  }
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kKeyTile) {
    __syncthreads();
    LoadTile(keys, keys.n, k0, kKeyTile, d4, d4 + 1, k_s);
    __syncthreads();
    const int64_t key = k0 + lane;
    const bool valid = key < k_end;
    const int32_t kpos = valid ? keys.positions[key] : 0;
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int row = warp + kWarps * k;
      const float z =
          valid ? TileDot(q_s + row * d4, k_s + lane * (d4 + 1), d4) * scale : -INFINITY;
      const float m_new = fmaxf(m[k], WarpMax(z));
      const float e = valid && kpos <= qpos[k] ? expf(z - m_new) : 0.0f;
      s[k] = s[k] * expf(m[k] - m_new) + WarpSum(e);
      m[k] = m_new;
    }
  }
  if (lane != 0) return;
#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t r = r0 + warp + kWarps * k;
    if (r < rows.n_rows) partial[blockIdx.y * rows.n_rows + r] = make_float2(m[k], s[k]);
  }
}

// Per-key accumulators of pass 2.
// Plain data (no initialisers) so it can live in shared memory; start from Empty().
struct KeyAcc {
  float mean, max, sum;
  float lse_max, lse_sum;  // log-sum-exp as (max, sum of exp(z - max))
  static __device__ KeyAcc Empty() { return {0.0f, 0.0f, 0.0f, -INFINITY, 0.0f}; }
  __device__ void AddLogit(float z) {
    if (z > lse_max) {
      lse_sum = lse_sum * expf(lse_max - z) + 1.0f;
      lse_max = z;
    } else {
      lse_sum += expf(z - lse_max);
    }
  }
  __device__ void Merge(const KeyAcc& o) {
    mean += o.mean;
    max = fmaxf(max, o.max);
    sum += o.sum;
    if (o.lse_max == -INFINITY) return;
    const float m = fmaxf(lse_max, o.lse_max);
    lse_sum = lse_sum * expf(lse_max - m) + o.lse_sum * expf(o.lse_max - m);
    lse_max = m;
  }
};

// Pass 2. Block = one tile of keys; loops over all query rows. With probs, row statistics come
// from pass 1 (combined over its splits here).
__global__ void __launch_bounds__(kThreads)
    KeyStatsKernel(const RowSource rows, const KeySource keys, float scale, const float2* partial,
                   int splits, bool probs, const StatsOut out) {
  extern __shared__ float4 smem4[];
  const int d4 = rows.d / 4;
  float4* k_s = smem4;
  float4* q_s = k_s + kKeyTile * (d4 + 1);
  __shared__ float row_m[kRowTile], row_inv[kRowTile];
  __shared__ int32_t row_pos[kRowTile];
  __shared__ KeyAcc red[kWarps][kKeyTile];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t k0 = int64_t{blockIdx.x} * kKeyTile, key = k0 + lane;
  const bool valid = key < keys.n;
  const int32_t kpos = valid && probs ? keys.positions[key] : 0;
  LoadTile(keys, keys.n, k0, kKeyTile, d4, d4 + 1, k_s);
  const float inv_rows = 1.0f / static_cast<float>(rows.n_rows);
  const float inv_group = 1.0f / static_cast<float>(rows.group);
  KeyAcc acc = KeyAcc::Empty();
  for (int64_t r0 = 0; r0 < rows.n_rows; r0 += kRowTile) {
    __syncthreads();
    LoadTile(rows, rows.n_rows, r0, kRowTile, d4, d4, q_s);
    if (probs && threadIdx.x < kRowTile) {
      const int64_t r = r0 + threadIdx.x;
      float m = -INFINITY, s = 0.0f;
      if (r < rows.n_rows) {
        for (int sp = 0; sp < splits; ++sp) m = fmaxf(m, partial[sp * rows.n_rows + r].x);
        for (int sp = 0; sp < splits; ++sp) {
          const float2 p = partial[sp * rows.n_rows + r];
          if (p.y > 0.0f) s += p.y * expf(p.x - m);
        }
        row_pos[threadIdx.x] = rows.Position(r);
      }
      row_m[threadIdx.x] = m;
      row_inv[threadIdx.x] = s > 0.0f ? 1.0f / s : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int row = warp + kWarps * k;
      if (r0 + row >= rows.n_rows) break;
      const float z = TileDot(q_s + row * d4, k_s + lane * (d4 + 1), d4) * scale;
      acc.AddLogit(z);
      if (!probs) continue;
      const float a =
          kpos <= row_pos[row] && row_inv[row] > 0.0f ? expf(z - row_m[row]) * row_inv[row] : 0.0f;
      acc.mean += a * inv_rows;
      acc.max = fmaxf(acc.max, a);
      acc.sum += a * inv_group;
    }
  }
  red[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || !valid) return;
  for (int w = 1; w < kWarps; ++w) acc.Merge(red[w][lane]);
  if (out.mean) out.mean[key] = acc.mean;
  if (out.max) out.max[key] = acc.max;
  if (out.sum) out.sum[key] = acc.sum;
  if (out.log_score) {
    out.log_score[key] = acc.lse_max + logf(acc.lse_sum) - logf(static_cast<float>(rows.n_rows));
  }
}

// One block: pooled (and optionally clamped) scores, following kernels::AveragePool1d's order of
// operations so the pooled values before rescaling match the CPU bit for bit.
__global__ void __launch_bounds__(kPoolThreads)
    PoolKernel(const float* in, int64_t n, int kernel, bool clamp, float* out) {
  __shared__ double red[32];
  const int half = kernel / 2;
  double in_sum = 0, out_sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    double s = 0;
    for (int64_t k = max(int64_t{0}, i - half); k <= min(n - 1, i + half); ++k) s += in[k];
    const float o = static_cast<float>(s / kernel);
    out[i] = o;
    in_sum += in[i];
    out_sum += o;
  }
  in_sum = internal::BlockSumDouble(in_sum, red);
  out_sum = internal::BlockSumDouble(out_sum, red);
  const float rescale = out_sum > 0 ? static_cast<float>(in_sum / out_sum) : 1.0f;
  double total = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float o = out_sum > 0 ? out[i] * rescale : out[i];
    out[i] = o;
    total += o;
  }
  if (!clamp) return;
  total = internal::BlockSumDouble(total, red);
  const float mean = static_cast<float>(total) / static_cast<float>(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = fmaxf(out[i], mean);
}

// One warp per row: 1 / ||row|| (0 for a zero row).
__global__ void InvNormKernel(const float* base, int64_t stride, int64_t n, int dim, float* inv) {
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= n) return;
  const float* r = base + row * stride;
  float s = 0.0f;
  for (int c = threadIdx.x % 32; c < dim; c += 32) s += r[c] * r[c];
  s = WarpSum(s);
  const float norm = sqrtf(s);
  if (threadIdx.x % 32 == 0) inv[row] = norm > 0.0f ? 1.0f / norm : 0.0f;
}

struct Rows {
  const float* base;
  int64_t stride;
  __device__ const float* Row(int64_t i) const { return base + i * stride; }
};

// Block = kCosRowTile query rows (8 per warp) against every candidate tile. Each lane keeps the
// best of the candidates congruent to it; a warp argmax per row finishes (ties: lowest index).
__global__ void __launch_bounds__(kThreads)
    CosineKernel(const Rows queries, int64_t nq, const Rows cands, int64_t nc, int dim,
                 const float* inv_q, const float* inv_c, int32_t* best_index, float* best_cos) {
  constexpr int kPerWarp = kCosRowTile / kWarps;
  extern __shared__ float4 smem4[];
  const int d4 = dim / 4;
  float4* q_s = smem4;
  float4* c_s = q_s + kCosRowTile * d4;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = int64_t{blockIdx.x} * kCosRowTile;
  LoadTile(queries, nq, r0, kCosRowTile, d4, d4, q_s);
  float best[kPerWarp];
  int32_t arg[kPerWarp];
#pragma unroll
  for (int k = 0; k < kPerWarp; ++k) best[k] = -2.0f, arg[k] = -1;
  for (int64_t c0 = 0; c0 < nc; c0 += kKeyTile) {
    __syncthreads();
    LoadTile(cands, nc, c0, kKeyTile, d4, d4 + 1, c_s);
    __syncthreads();
    const int64_t c = c0 + lane;
    if (c >= nc) continue;
#pragma unroll
    for (int k = 0; k < kPerWarp; ++k) {
      const int row = warp + kWarps * k;
      if (r0 + row >= nq) break;
      const float sim = TileDot(q_s + row * d4, c_s + lane * (d4 + 1), d4);
      const float cos = sim * inv_q[r0 + row] * inv_c[c];
      if (cos > best[k]) best[k] = cos, arg[k] = static_cast<int32_t>(c);
    }
  }
#pragma unroll
  for (int k = 0; k < kPerWarp; ++k) {
    float b = best[k];
    int32_t a = arg[k];
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, b, o);
      const int32_t oa = __shfl_xor_sync(0xffffffffu, a, o);
      if (ob > b || (ob == b && oa >= 0 && (a < 0 || oa < a))) b = ob, a = oa;
    }
    const int64_t r = r0 + warp + kWarps * k;
    if (lane == 0 && r < nq) {
      best_index[r] = a;
      best_cos[r] = a < 0 ? 0.0f : b;
    }
  }
}

absl::Status CheckRows(const char* what, const float* base, int64_t stride, int64_t n, int d) {
  if (d <= 0 || d % 4 != 0 || d > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": head_dim ", d, " must be a multiple of 4 in [4, 256]"));
  }
  if (n < 0 || (n > 0 && (!internal::Aligned16(base) || stride % 4 != 0 || stride < d))) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": rows must be 16-byte aligned with a stride >= head_dim (stride ", stride, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckQueries(const QueryBlock& qb, int kv_head) {
  if (qb.n_kv_heads <= 0 || qb.n_heads % qb.n_kv_heads != 0 || kv_head < 0 ||
      kv_head >= qb.n_kv_heads || qb.n_queries <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("queries: ", qb.n_queries, " rows of ",
                                                   qb.n_heads, " heads over ", qb.n_kv_heads,
                                                   " KV heads, KV head ", kv_head));
  }
  return CheckRows("queries", qb.q, int64_t{qb.n_heads} * qb.head_dim, qb.n_queries, qb.head_dim);
}

RowSource MakeRows(const QueryBlock& qb, int kv_head) {
  const int group = qb.n_heads / qb.n_kv_heads;
  return {qb.q, qb.positions, qb.n_queries * group, group, qb.n_heads, qb.head_dim, kv_head};
}

}  // namespace

absl::Status AttentionStats(Context& ctx, const QueryBlock& qb, int kv_head,
                            const StridedRows& keys, const int32_t* key_positions,
                            const HeadAttentionStats& out) {
  KVWIRE_RETURN_IF_ERROR(CheckQueries(qb, kv_head));
  KVWIRE_RETURN_IF_ERROR(CheckRows("keys", keys.base, keys.stride, keys.n, qb.head_dim));
  if (keys.n == 0) return absl::OkStatus();
  const bool probs = out.mean_prob || out.max_prob || out.sum_prob;
  if (probs && (key_positions == nullptr || qb.positions == nullptr)) {
    return absl::InvalidArgumentError("AttentionStats: probabilities need query and key positions");
  }
  const RowSource rows = MakeRows(qb, kv_head);
  const KeySource ks{keys.base, keys.stride, keys.n, key_positions};
  const int d4 = qb.head_dim / 4;
  float2* partial = nullptr;
  int splits = 1;
  if (probs) {
    const int64_t row_blocks = internal::CeilDiv(rows.n_rows, kRowTile);
    splits = static_cast<int>(
        std::clamp<int64_t>(internal::CeilDiv(int64_t{4} * ctx.properties().sm_count, row_blocks),
                            1, std::min<int64_t>(65535, internal::CeilDiv(keys.n, 8 * kKeyTile))));
    const int64_t per = internal::CeilDiv(internal::CeilDiv(keys.n, splits), kKeyTile) * kKeyTile;
    KVWIRE_ASSIGN_OR_RETURN(
        void* scratch, ctx.Scratch(sizeof(float2) * splits * rows.n_rows, internal::kSlotRowStats));
    partial = static_cast<float2*>(scratch);
    const size_t smem = sizeof(float4) * (kRowTile * d4 + kKeyTile * (d4 + 1));
    KVWIRE_RETURN_IF_ERROR(internal::AllowSharedMemory(RowStatsKernel, smem));
    RowStatsKernel<<<dim3(static_cast<unsigned>(row_blocks), splits), kThreads, smem,
                     ctx.stream()>>>(rows, ks, qb.scale, per, partial);
    KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("RowStatsKernel"));
  }
  const size_t smem = sizeof(float4) * (kRowTile * d4 + kKeyTile * (d4 + 1));
  KVWIRE_RETURN_IF_ERROR(internal::AllowSharedMemory(KeyStatsKernel, smem));
  const StatsOut o{out.mean_prob, out.max_prob, out.sum_prob, out.log_score};
  KeyStatsKernel<<<static_cast<unsigned>(internal::CeilDiv(keys.n, kKeyTile)), kThreads, smem,
                   ctx.stream()>>>(rows, ks, qb.scale, partial, splits, probs, o);
  return ctx.CheckLaunch("KeyStatsKernel");
}

absl::Status LogMeanExpScores(Context& ctx, const QueryBlock& qb, int kv_head,
                              const StridedRows& keys, float* out) {
  HeadAttentionStats stats;
  stats.log_score = out;
  return AttentionStats(ctx, qb, kv_head, keys, nullptr, stats);
}

absl::Status AveragePool1d(Context& ctx, const float* in, int64_t n, int kernel, float* out) {
  if (kernel < 1 || kernel % 2 == 0) {
    return absl::InvalidArgumentError(absl::StrCat("pool kernel ", kernel, " must be odd"));
  }
  if (n <= 0) return absl::OkStatus();
  PoolKernel<<<1, kPoolThreads, 0, ctx.stream()>>>(in, n, kernel, false, out);
  return ctx.CheckLaunch("PoolKernel");
}

absl::Status WindowScores(Context& ctx, const QueryBlock& window, int kv_head,
                          const StridedRows& keys, const int32_t* key_positions,
                          WindowAggregate aggregate, int pool_kernel, float* score,
                          float* log_score) {
  if (pool_kernel < 1 || pool_kernel % 2 == 0) {
    return absl::InvalidArgumentError(absl::StrCat("pool kernel ", pool_kernel, " must be odd"));
  }
  if (keys.n <= 0) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(void* raw,
                          ctx.Scratch(sizeof(float) * keys.n, internal::kSlotWindowScores));
  HeadAttentionStats stats;
  (aggregate == WindowAggregate::kMean ? stats.mean_prob : stats.max_prob) =
      static_cast<float*>(raw);
  stats.log_score = log_score;
  KVWIRE_RETURN_IF_ERROR(AttentionStats(ctx, window, kv_head, keys, key_positions, stats));
  PoolKernel<<<1, kPoolThreads, 0, ctx.stream()>>>(
      static_cast<const float*>(raw), keys.n, pool_kernel,
      aggregate == WindowAggregate::kMaxClamped, score);
  return ctx.CheckLaunch("PoolKernel");
}

absl::Status CosineArgmax(Context& ctx, const StridedRows& query_rows,
                          const StridedRows& candidates, int dim, int32_t* best_index,
                          float* best_cosine) {
  KVWIRE_RETURN_IF_ERROR(
      CheckRows("cosine queries", query_rows.base, query_rows.stride, query_rows.n, dim));
  KVWIRE_RETURN_IF_ERROR(
      CheckRows("cosine candidates", candidates.base, candidates.stride, candidates.n, dim));
  const int64_t nq = query_rows.n, nc = candidates.n;
  if (nq == 0) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(void* scratch,
                          ctx.Scratch(sizeof(float) * (nq + nc + 1), internal::kSlotCosine));
  float* inv_q = static_cast<float*>(scratch);
  float* inv_c = inv_q + nq;
  constexpr int kNormRowsPerBlock = 8;
  InvNormKernel<<<static_cast<unsigned>(internal::CeilDiv(nq, kNormRowsPerBlock)),
                  32 * kNormRowsPerBlock, 0, ctx.stream()>>>(query_rows.base, query_rows.stride, nq,
                                                             dim, inv_q);
  if (nc > 0) {
    InvNormKernel<<<static_cast<unsigned>(internal::CeilDiv(nc, kNormRowsPerBlock)),
                    32 * kNormRowsPerBlock, 0, ctx.stream()>>>(candidates.base, candidates.stride,
                                                               nc, dim, inv_c);
  }
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("InvNormKernel"));
  const int d4 = dim / 4;
  const size_t smem = sizeof(float4) * (kCosRowTile * d4 + kKeyTile * (d4 + 1));
  KVWIRE_RETURN_IF_ERROR(internal::AllowSharedMemory(CosineKernel, smem));
  CosineKernel<<<static_cast<unsigned>(internal::CeilDiv(nq, kCosRowTile)), kThreads, smem,
                 ctx.stream()>>>({query_rows.base, query_rows.stride}, nq,
                                 {candidates.base, candidates.stride}, nc, dim, inv_q, inv_c,
                                 best_index, best_cosine);
  return ctx.CheckLaunch("CosineKernel");
}

}  // namespace kvwire::kernels::cuda
