// KeepKV merging of one KV head on the device. See merge.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/compress.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/merge.h"

namespace kvwire::kernels::cuda {
namespace {

using internal::WarpMax;

constexpr int kGroupThreads = 1024;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxChannelsPerLane = 8;  // head_dim <= 256

// Device scratch of one MergeHead call, carved from slot 3 with 256-byte aligned parts.
struct Work {
  float* evicted_keys;        // [E][d]
  float* mean_keys;           // [B][d], zeroed: unused rows score harmlessly
  int32_t* target;            // [E]
  float* cosine;              // [E]
  int32_t* count;             // [B] members per kept entry
  int32_t* start;             // [B] first member slot
  int32_t* cursor;            // [B]
  int32_t* members;           // [E] evicted indices grouped by target, increasing within a group
  int32_t* group_ids;         // [B] kept entries with members, increasing
  float* moments;             // [B][3] mean log-score, log mass, log votes
  float* mean_key_lse;        // [B] l(mean key)
  unsigned long long* tally;  // [3] merged, dropped, zip
  int32_t* n_groups;          // [1]
};

size_t Carve(size_t* offset, size_t bytes) {
  const size_t at = *offset;
  *offset += (bytes + 255) / 256 * 256;
  return at;
}

// Copies rows idx[0..n) of `src` into dst [n][d]; optionally the indices into positions and zero
// log-votes.
__global__ void GatherRowsKernel(const float* base, int64_t stride, const int32_t* idx, int64_t n,
                                 int d, float* dst, int32_t* positions, float* log_votes) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n * d;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / d;
    const int c = static_cast<int>(t - r * d);
    dst[t] = base[idx[r] * stride + c];
    if (c == 0 && positions != nullptr) positions[r] = idx[r], log_votes[r] = 0.0f;
  }
}

// Ordered exclusive scan of count[0..n) into start, and the indices with count > 0 into ids.
__device__ void ScanAndListGroups(const int32_t* count, int64_t n, int32_t* start, int32_t* ids,
                                  int32_t* n_ids) {
  __shared__ int32_t warp_sum[32], warp_nz[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  int64_t running = 0, listed = 0;
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const int32_t v = i < n ? count[i] : 0;
    int32_t incl = v;
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t up = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += up;
    }
    const uint32_t nz = __ballot_sync(0xffffffffu, v > 0);
    __syncthreads();
    if (lane == 31) warp_sum[warp] = incl;
    if (lane == 0) warp_nz[warp] = __popc(nz);
    __syncthreads();
    int64_t before = running, listed_before = listed, total = 0, total_nz = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_sum[w], listed_before += warp_nz[w];
      total += warp_sum[w];
      total_nz += warp_nz[w];
    }
    if (i < n) start[i] = static_cast<int32_t>(before + incl - v);
    if (v > 0) ids[listed_before + __popc(nz & ((1u << lane) - 1))] = static_cast<int32_t>(i);
    running += total;
    listed += total_nz;
  }
  if (threadIdx.x == 0) *n_ids = static_cast<int32_t>(listed);
}

// One block: members per kept entry, their slots, and a stable scatter (warp 0, 32 evicted
// entries at a time; lanes with the same target take consecutive slots in lane order).
__global__ void __launch_bounds__(kGroupThreads)
    GroupKernel(const int32_t* evicted, int64_t n_evicted, int64_t n_keep, float threshold,
                Work w) {
  __shared__ double red[32];
  for (int64_t k = threadIdx.x; k < n_keep; k += blockDim.x) w.count[k] = 0;
  __syncthreads();
  double merged = 0;
  for (int64_t e = threadIdx.x; e < n_evicted; e += blockDim.x) {
    if (w.target[e] >= 0 && w.cosine[e] >= threshold) {
      atomicAdd(&w.count[w.target[e]], 1);
      merged += 1;
    }
  }
  merged = internal::BlockSumDouble(merged, red);
  __syncthreads();
  ScanAndListGroups(w.count, n_keep, w.start, w.group_ids, w.n_groups);
  if (threadIdx.x == 0) {
    w.tally[0] += static_cast<unsigned long long>(merged);
    w.tally[1] += static_cast<unsigned long long>(n_evicted - static_cast<int64_t>(merged));
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < n_keep; k += blockDim.x) w.cursor[k] = w.start[k];
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  for (int64_t base = 0; base < n_evicted; base += 32) {
    const int64_t e = base + lane;
    const int32_t t =
        e < n_evicted && w.target[e] >= 0 && w.cosine[e] >= threshold ? w.target[e] : -1;
    const uint32_t same = __match_any_sync(0xffffffffu, t);
    const int rank = __popc(same & ((1u << lane) - 1));
    const int32_t slot = t >= 0 ? w.cursor[t] + rank : 0;
    __syncwarp();
    if (t >= 0 && rank == 0) w.cursor[t] += __popc(same);
    __syncwarp();
    if (t >= 0) w.members[slot] = evicted[e];
  }
}

struct HeadRows {
  const float* keys;
  const float* values;
  int64_t key_stride, value_stride;
  const float* log_score;
  const int32_t* keep;
};

// One warp per group: weights exp(l_i - max l) in double (as the CPU does), channels over lanes,
// members in the CPU's order (target, then members by increasing index).
__global__ void MomentsKernel(const HeadRows rows, int d, Work w, float* out_values) {
  const int64_t gi = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  if (gi >= *w.n_groups) return;
  const int lane = threadIdx.x % 32;
  const int32_t k = w.group_ids[gi];
  const int32_t size = 1 + w.count[k];
  const int32_t* members = w.members + w.start[k];
  auto member = [&](int32_t j) { return j == 0 ? rows.keep[k] : members[j - 1]; };
  float m = -INFINITY;
  for (int32_t j = lane; j < size; j += 32) m = fmaxf(m, rows.log_score[member(j)]);
  m = WarpMax(m);
  double w_sum = 0, l_sum = 0;
  float kacc[kMaxChannelsPerLane] = {}, vacc[kMaxChannelsPerLane] = {};
  for (int32_t j = 0; j < size; ++j) {
    const int64_t i = member(j);
    const float l = rows.log_score[i];
    const double wt = exp(static_cast<double>(l) - m);
    w_sum += wt;
    l_sum += wt * l;
#pragma unroll
    for (int c = 0; c < kMaxChannelsPerLane; ++c) {
      const int ch = lane + 32 * c;
      if (ch >= d) break;
      kacc[c] += static_cast<float>(wt * rows.keys[i * rows.key_stride + ch]);
      vacc[c] += static_cast<float>(wt * rows.values[i * rows.value_stride + ch]);
    }
  }
  const float inv = static_cast<float>(1.0 / w_sum);
#pragma unroll
  for (int c = 0; c < kMaxChannelsPerLane; ++c) {
    const int ch = lane + 32 * c;
    if (ch >= d) break;
    w.mean_keys[gi * d + ch] = kacc[c] * inv;
    out_values[int64_t{k} * d + ch] = vacc[c] * inv;
  }
  if (lane == 0) {
    w.moments[3 * gi] = static_cast<float>(l_sum / w_sum);
    w.moments[3 * gi + 1] = m + static_cast<float>(log(w_sum));
    w.moments[3 * gi + 2] = static_cast<float>(log(static_cast<double>(size)));
  }
}

// One warp per group: the key rule and the log-vote.
__global__ void FinishKernel(const MergeParams p, int d, Work w, float* out_keys,
                             float* out_votes) {
  const int64_t gi = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  if (gi >= *w.n_groups) return;
  const int lane = threadIdx.x % 32;
  const int32_t k = w.group_ids[gi];
  const float mean = w.moments[3 * gi], log_mass = w.moments[3 * gi + 1];
  const float log_votes = w.moments[3 * gi + 2];
  const float ratio = (log_mass - log_votes) / mean;
  const bool zip = p.zip && fabsf(mean) >= p.zip_min_abs && ratio > 0.0f &&
                   ratio >= 1.0f / p.zip_max_ratio && ratio <= p.zip_max_ratio;
  const float key_scale = zip ? ratio : 1.0f;
  for (int ch = lane; ch < d; ch += 32) {
    out_keys[int64_t{k} * d + ch] = w.mean_keys[gi * d + ch] * key_scale;
  }
  if (lane != 0) return;
  out_votes[k] = zip ? log_votes : log_mass - w.mean_key_lse[gi];
  if (zip) atomicAdd(&w.tally[2], 1ull);
}

absl::StatusOr<Work> CarveWork(Context& ctx, int64_t E, int64_t B, int d) {
  size_t off = 0;
  const size_t ek = Carve(&off, sizeof(float) * E * d), mk = Carve(&off, sizeof(float) * B * d);
  const size_t tg = Carve(&off, 4 * E), cs = Carve(&off, 4 * E), cn = Carve(&off, 4 * B);
  const size_t st = Carve(&off, 4 * B), cu = Carve(&off, 4 * B), mb = Carve(&off, 4 * E);
  const size_t gi = Carve(&off, 4 * B), mo = Carve(&off, 12 * B), ml = Carve(&off, 4 * B);
  const size_t ta = Carve(&off, 8 * 3), ng = Carve(&off, 4);
  KVWIRE_ASSIGN_OR_RETURN(void* raw, ctx.Scratch(off, internal::kSlotMerge));
  char* b = static_cast<char*>(raw);
  auto at = [b](size_t o) { return static_cast<void*>(b + o); };
  Work w{static_cast<float*>(at(ek)),   static_cast<float*>(at(mk)),
         static_cast<int32_t*>(at(tg)), static_cast<float*>(at(cs)),
         static_cast<int32_t*>(at(cn)), static_cast<int32_t*>(at(st)),
         static_cast<int32_t*>(at(cu)), static_cast<int32_t*>(at(mb)),
         static_cast<int32_t*>(at(gi)), static_cast<float*>(at(mo)),
         static_cast<float*>(at(ml)),   static_cast<unsigned long long*>(at(ta)),
         static_cast<int32_t*>(at(ng))};
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w.mean_keys, 0, sizeof(float) * B * d, ctx.stream()));
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w.tally, 0, 8 * 3, ctx.stream()));
  return w;
}

absl::Status DownloadTally(Context& ctx, const Work& w, MergeTally* tally) {
  unsigned long long host[3] = {};
  KVWIRE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host, w.tally, sizeof(host), cudaMemcpyDeviceToHost, ctx.stream()));
  KVWIRE_RETURN_IF_ERROR(ctx.Synchronize());
  tally->merged += static_cast<int64_t>(host[0]);
  tally->dropped += static_cast<int64_t>(host[1]);
  tally->zip += static_cast<int64_t>(host[2]);
  return absl::OkStatus();
}

}  // namespace

absl::Status MergeHead(Context& ctx, const MergeParams& params, const QueryBlock& window,
                       int kv_head, const MergeHeadInput& in, const MergeHeadOutput& out,
                       MergeTally* tally) {
  const int d = window.head_dim;
  const int64_t B = in.n_keep, E = in.n_evicted;
  if (B < 0 || E < 0 || d <= 0 || d % 4 != 0 || d > 32 * kMaxChannelsPerLane ||
      !internal::Aligned16(out.keys)) {
    return absl::InvalidArgumentError(absl::StrCat("merge: ", B, " kept, ", E,
                                                   " evicted, head_dim ", d,
                                                   " (multiple of 4 up to 256, aligned output)"));
  }
  const unsigned blocks_b = internal::GridFor(B * d, 256, ctx);
  if (B > 0) {
    GatherRowsKernel<<<blocks_b, 256, 0, ctx.stream()>>>(in.keys.base, in.keys.stride, in.keep, B,
                                                         d, out.keys, out.positions, out.log_votes);
    GatherRowsKernel<<<blocks_b, 256, 0, ctx.stream()>>>(in.values.base, in.values.stride, in.keep,
                                                         B, d, out.values, nullptr, nullptr);
    KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("GatherRowsKernel"));
  }
  if (E == 0 || B == 0) {
    if (tally != nullptr) tally->dropped += E;
    return absl::OkStatus();
  }
  KVWIRE_ASSIGN_OR_RETURN(Work w, CarveWork(ctx, E, B, d));
  GatherRowsKernel<<<internal::GridFor(E * d, 256, ctx), 256, 0, ctx.stream()>>>(
      in.keys.base, in.keys.stride, in.evicted, E, d, w.evicted_keys, nullptr, nullptr);
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("GatherRowsKernel"));
  KVWIRE_RETURN_IF_ERROR(
      CosineArgmax(ctx, {w.evicted_keys, d, E}, {out.keys, d, B}, d, w.target, w.cosine));
  GroupKernel<<<1, kGroupThreads, 0, ctx.stream()>>>(in.evicted, E, B, params.threshold, w);
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("GroupKernel"));
  const unsigned group_blocks = static_cast<unsigned>(internal::CeilDiv(B, kWarpsPerBlock));
  const HeadRows rows{in.keys.base,     in.values.base, in.keys.stride,
                      in.values.stride, in.log_score,   in.keep};
  MomentsKernel<<<group_blocks, 32 * kWarpsPerBlock, 0, ctx.stream()>>>(rows, d, w, out.values);
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("MomentsKernel"));
  KVWIRE_RETURN_IF_ERROR(
      LogMeanExpScores(ctx, window, kv_head, {w.mean_keys, d, B}, w.mean_key_lse));
  FinishKernel<<<group_blocks, 32 * kWarpsPerBlock, 0, ctx.stream()>>>(params, d, w, out.keys,
                                                                       out.log_votes);
  KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("FinishKernel"));
  return tally != nullptr ? DownloadTally(ctx, w, tally) : absl::OkStatus();
}

}  // namespace kvwire::kernels::cuda
