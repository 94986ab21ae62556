// Vote-biased GQA decode attention (flash-decoding with split entries). See attention.h.
//
// Per block: the group's query rows live in shared memory; each 32-entry tile of keys and values
// is loaded once (coalesced float4) and serves every query head of the block: logits for
// (head, entry) pairs with one thread per pair (key rows padded by 4 floats so the threads of a
// warp, reading different rows, hit different banks), one warp per head for the tile's softmax
// update, then each thread accumulates a float4 column of one or more heads' outputs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/internal.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;       // entries per shared-memory tile (= warp width: one lane per entry)
constexpr int kGroupChunk = 8;  // query heads served by one block
constexpr int kAccSlots = 4;    // kGroupChunk / (kThreads / (kMaxHeadDim / 4)) heads per thread
constexpr int64_t kMinEntriesPerSlice = 4 * kTile;
constexpr int kMaxSlices = 256;
constexpr int kMaxGridZ = 65535;

struct HeadTable {
  KvHeadView heads[kMaxKvHeads];
};

struct Params {
  const float* q;
  float* out;       // final output, written directly when slices == 1
  float* part_out;  // [n_queries * n_heads][slices][d] unnormalised partial outputs
  float2* part_ml;  // [n_queries * n_heads][slices] (running max, sum of exp)
  int64_t n_queries;
  int n_heads, group, group_chunks, d, slices;
  float scale;
};

using internal::Dot4;
using internal::WarpMax;
using internal::WarpSum;

__device__ __forceinline__ void Fma4(float w, float4 v, float4& acc) {
  acc.x += w * v.x;
  acc.y += w * v.y;
  acc.z += w * v.z;
  acc.w += w * v.w;
}

// Shared memory in floats: q [kGroupChunk][d] | k [kTile][d + 4] | v [kTile][d] |
// p [kGroupChunk][kTile] | m, l, alpha [kGroupChunk]. Every array before p is a multiple of 4
// floats, so the float4 views stay aligned.
size_t SharedBytes(int d) {
  return sizeof(float) *
         (kGroupChunk * d + kTile * (d + 4) + kTile * d + kGroupChunk * kTile + 3 * kGroupChunk);
}

__global__ void __launch_bounds__(kThreads)
    DecodeSliceKernel(const HeadTable table, const Params p) {
  extern __shared__ float4 smem4[];
  const int d = p.d, d4 = d / 4, ldk4 = d4 + 1;
  float4* q_s4 = smem4;
  float4* k_s4 = q_s4 + kGroupChunk * d4;
  float4* v_s4 = k_s4 + kTile * ldk4;
  float* p_s = reinterpret_cast<float*>(v_s4 + kTile * d4);
  float* m_s = p_s + kGroupChunk * kTile;
  float* l_s = m_s + kGroupChunk;
  float* a_s = l_s + kGroupChunk;

  const int slice = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int64_t t = blockIdx.z / p.group_chunks;
  const int g0 = static_cast<int>(blockIdx.z % p.group_chunks) * kGroupChunk;
  const int gc = min(kGroupChunk, p.group - g0);
  const KvHeadView kv = table.heads[h];
  const int64_t visible = kv.n - p.n_queries + t + 1;
  const int64_t per = ((visible + p.slices - 1) / p.slices + kTile - 1) / kTile * kTile;
  const int64_t i0 = min(visible, slice * per), i1 = min(visible, i0 + per);
  const int qh0 = h * p.group + g0;

  const float4* q4 = reinterpret_cast<const float4*>(p.q + (t * p.n_heads + qh0) * d);
  for (int idx = tid; idx < gc * d4; idx += kThreads) q_s4[idx] = q4[idx];
  if (tid < kGroupChunk) m_s[tid] = -INFINITY, l_s[tid] = 0.0f;
  const int col = tid % d4, slot = tid / d4, n_slots = kThreads / d4;
  float4 acc[kAccSlots];
#pragma unroll
  for (int k = 0; k < kAccSlots; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  __syncthreads();

  const float4* keys4 = reinterpret_cast<const float4*>(kv.keys);
  const float4* vals4 = reinterpret_cast<const float4*>(kv.values);
  const int warp = tid / 32, lane = tid % 32;
  for (int64_t base = i0; base < i1; base += kTile) {
    const int rows = static_cast<int>(min(static_cast<int64_t>(kTile), i1 - base));
    for (int idx = tid; idx < rows * d4; idx += kThreads) {
      const int r = idx / d4, c = idx - r * d4;
      k_s4[r * ldk4 + c] = __ldg(keys4 + (base + r) * d4 + c);
      v_s4[r * d4 + c] = __ldg(vals4 + (base + r) * d4 + c);
    }
    __syncthreads();
    for (int idx = tid; idx < gc * kTile; idx += kThreads) {
      const int g = idx / kTile, r = idx % kTile;
      float z = -INFINITY;
      if (r < rows) {
        const float4* kr = k_s4 + r * ldk4;
        const float4* qg = q_s4 + g * d4;
        float dot = 0.0f;
        for (int c = 0; c < d4; ++c) dot += Dot4(qg[c], kr[c]);
        z = dot * p.scale + (kv.bias != nullptr ? kv.bias[base + r] : 0.0f);
      }
      p_s[g * kTile + r] = z;
    }
    __syncthreads();
    for (int g = warp; g < gc; g += kWarps) {
      const float z = p_s[g * kTile + lane];
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, WarpMax(z));
      const float e = lane < rows ? expf(z - m_new) : 0.0f;
      const float sum = WarpSum(e);
      p_s[g * kTile + lane] = e;
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);
        a_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();
    if (slot < n_slots) {
#pragma unroll
      for (int k = 0; k < kAccSlots; ++k) {
        const int g = slot + k * n_slots;
        if (g >= gc) break;
        const float alpha = a_s[g];
        float4 a =
            make_float4(acc[k].x * alpha, acc[k].y * alpha, acc[k].z * alpha, acc[k].w * alpha);
        for (int r = 0; r < rows; ++r) Fma4(p_s[g * kTile + r], v_s4[r * d4 + col], a);
        acc[k] = a;
      }
    }
    __syncthreads();
  }

  if (slot >= n_slots) return;
#pragma unroll
  for (int k = 0; k < kAccSlots; ++k) {
    const int g = slot + k * n_slots;
    if (g >= gc) break;
    const int64_t row = t * p.n_heads + qh0 + g;
    if (p.slices == 1) {
      const float inv = l_s[g] > 0.0f ? 1.0f / l_s[g] : 0.0f;
      reinterpret_cast<float4*>(p.out)[row * d4 + col] =
          make_float4(acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
    } else {
      reinterpret_cast<float4*>(p.part_out)[(row * p.slices + slice) * d4 + col] = acc[k];
      if (col == 0) p.part_ml[row * p.slices + slice] = make_float2(m_s[g], l_s[g]);
    }
  }
}

// One block per (query, query head): out = sum_s e^{m_s - M} o_s / sum_s e^{m_s - M} l_s over the
// non-empty slices.
__global__ void MergeSlicesKernel(const Params p) {
  const int64_t row = blockIdx.x;
  const float2* ml = p.part_ml + row * p.slices;
  float m = -INFINITY;
  for (int s = 0; s < p.slices; ++s) {
    if (ml[s].y > 0.0f) m = fmaxf(m, ml[s].x);
  }
  for (int c = threadIdx.x; c < p.d; c += blockDim.x) {
    float acc = 0.0f, total = 0.0f;
    for (int s = 0; s < p.slices; ++s) {
      if (!(ml[s].y > 0.0f)) continue;
      const float w = expf(ml[s].x - m);
      total += w * ml[s].y;
      acc += w * p.part_out[(row * p.slices + s) * p.d + c];
    }
    p.out[row * p.d + c] = total > 0.0f ? acc / total : 0.0f;
  }
}

absl::Status Validate(const AttentionShape& s, const float* q, const KvHeadView* kv,
                      const float* out) {
  if (s.n_kv_heads <= 0 || s.n_kv_heads > kMaxKvHeads || s.n_heads <= 0 ||
      s.n_heads % s.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: ", s.n_heads, " query heads over ",
                                                   s.n_kv_heads, " KV heads (at most ", kMaxKvHeads,
                                                   " KV heads, an exact multiple)"));
  }
  if (s.head_dim <= 0 || s.head_dim % 4 != 0 || s.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: head_dim ", s.head_dim, " must be a multiple of 4 in [4, ", kMaxHeadDim, "]"));
  }
  if (s.n_queries < 0 || (s.n_queries > 0 && (!internal::Aligned16(q) ||
                                              !internal::Aligned16(out) || kv == nullptr))) {
    return absl::InvalidArgumentError("attention: q/out must be 16-byte aligned device arrays");
  }
  for (int h = 0; h < s.n_kv_heads; ++h) {
    if (kv[h].n < s.n_queries) {
      return absl::InvalidArgumentError(absl::StrCat("attention: KV head ", h, " has ", kv[h].n,
                                                     " entries, fewer than ", s.n_queries,
                                                     " queries"));
    }
    if (kv[h].n > 0 && (!internal::Aligned16(kv[h].keys) || !internal::Aligned16(kv[h].values))) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention: keys/values of KV head ", h, " are not 16-byte aligned"));
    }
  }
  return absl::OkStatus();
}

int ChooseSlices(const Context& ctx, int64_t longest, int64_t base_blocks) {
  const int64_t want = internal::CeilDiv(int64_t{4} * ctx.properties().sm_count, base_blocks);
  const int64_t most = std::max<int64_t>(1, longest / kMinEntriesPerSlice);
  return static_cast<int>(std::clamp<int64_t>(std::min(want, most), 1, kMaxSlices));
}

}  // namespace

absl::Status Attention(Context& ctx, const AttentionShape& s, const float* q, const KvHeadView* kv,
                       float* out, AttentionOptions options) {
  KVWIRE_RETURN_IF_ERROR(Validate(s, q, kv, out));
  if (s.n_queries == 0) return absl::OkStatus();
  HeadTable table{};
  int64_t longest = 0;
  for (int h = 0; h < s.n_kv_heads; ++h) {
    table.heads[h] = kv[h];
    longest = std::max(longest, kv[h].n);
  }
  Params p{};
  p.q = q;
  p.out = out;
  p.n_queries = s.n_queries;
  p.n_heads = s.n_heads;
  p.group = s.n_heads / s.n_kv_heads;
  p.group_chunks = static_cast<int>(internal::CeilDiv(p.group, kGroupChunk));
  p.d = s.head_dim;
  p.scale = s.scale;
  const int64_t z_blocks = s.n_queries * p.group_chunks;
  if (z_blocks > kMaxGridZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: ", s.n_queries, " queries exceed one launch; split the call"));
  }
  p.slices = options.slices > 0 ? std::min(options.slices, kMaxSlices)
                                : ChooseSlices(ctx, longest, s.n_kv_heads * z_blocks);
  if (p.slices > 1) {
    const int64_t rows = s.n_queries * s.n_heads;
    const size_t out_floats = static_cast<size_t>(rows) * p.slices * s.head_dim;
    KVWIRE_ASSIGN_OR_RETURN(
        void* scratch,
        ctx.Scratch(out_floats * sizeof(float) + rows * p.slices * 8, internal::kSlotAttention));
    p.part_out = static_cast<float*>(scratch);
    p.part_ml = reinterpret_cast<float2*>(p.part_out + out_floats);
  }
  const size_t smem = SharedBytes(s.head_dim);
  KVWIRE_RETURN_IF_ERROR(internal::AllowSharedMemory(DecodeSliceKernel, smem));
  const dim3 grid(p.slices, s.n_kv_heads, static_cast<unsigned>(z_blocks));
  DecodeSliceKernel<<<grid, kThreads, smem, ctx.stream()>>>(table, p);
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("DecodeSliceKernel"));
  if (p.slices == 1) return absl::OkStatus();
  MergeSlicesKernel<<<static_cast<unsigned>(s.n_queries * s.n_heads), 64, 0, ctx.stream()>>>(p);
  return ctx.CheckLaunch("MergeSlicesKernel");
}

}  // namespace kvwire::kernels::cuda
