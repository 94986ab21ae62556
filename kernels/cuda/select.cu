// Per-head top-k selection on the device. See select.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal.h"
#include "kernels/cuda/select.h"

namespace kvwire::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kHeadsPerLaunch = 48;  // keeps the plan table within the 4 KiB of launch parameters

struct Plan {
  int64_t budget, sinks, window, stage1;
  int64_t keep_offset, evicted_offset;
};

struct PlanTable {
  Plan plans[kHeadsPerLaunch];
};

// Order-preserving map of a float to 32 bits (-0 and +0 are the same score).
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Larger key = better: higher score, then lower index.
__device__ __forceinline__ uint64_t SelectKey(float score, int64_t i) {
  return (uint64_t{OrderedBits(score)} << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
}

struct HeadView {
  const float* scores;
  const float* norms;  // null for stage A
  uint8_t* flags;      // 1 = kept
  int64_t n;
  __device__ uint64_t Key(int64_t i) const {
    const float s = norms == nullptr ? scores[i] : (scores[i] + 1e-4f) * norms[i];
    return SelectKey(s, i);
  }
};

// Marks the k best unflagged entries of `v` (k <= number of unflagged entries).
__device__ void SelectBest(const HeadView& v, int64_t k) {
  __shared__ uint32_t hist[256];
  __shared__ uint64_t prefix_s;
  __shared__ int64_t remaining_s;
  if (k <= 0) return;
  uint64_t prefix = 0, mask = 0;
  int64_t remaining = k;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < v.n; i += blockDim.x) {
      if (v.flags[i]) continue;
      const uint64_t key = v.Key(i);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t above = 0;
      int b = 255;
      for (; b > 0 && above + hist[b] < remaining; --b) above += hist[b];
      prefix_s = prefix | (uint64_t(b) << shift);
      remaining_s = remaining - above;
    }
    __syncthreads();
    prefix = prefix_s;
    remaining = remaining_s;
    mask |= uint64_t{255} << shift;
    __syncthreads();
  }
  // Keys are unique, so exactly k unflagged keys are >= the k-th best (== prefix).
  for (int64_t i = threadIdx.x; i < v.n; i += blockDim.x) {
    if (!v.flags[i] && v.Key(i) >= prefix) v.flags[i] = 1;
  }
  __syncthreads();
}

// Writes the indices whose flag equals `want` to out, in increasing order (block-wide scan).
__device__ void Compact(const uint8_t* flags, int64_t n, uint8_t want, int32_t* out) {
  __shared__ int32_t warp_counts[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t written = 0;
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const bool take = i < n && flags[i] == want;
    const uint32_t ballot = __ballot_sync(0xffffffffu, take);
    __syncthreads();
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int64_t offset = written;
    int64_t total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) offset += warp_counts[w];
      total += warp_counts[w];
    }
    if (take) out[offset + __popc(ballot & ((1u << lane) - 1))] = static_cast<int32_t>(i);
    written += total;
  }
}

__global__ void __launch_bounds__(kThreads)
    SelectKernel(const PlanTable table, int head0, const float* scores, const float* norms,
                 int64_t n, uint8_t* flags_all, int32_t* keep, int32_t* evicted) {
  const Plan p = table.plans[blockIdx.x];
  const int64_t h = head0 + blockIdx.x;
  uint8_t* flags = flags_all + blockIdx.x * n;
  const bool all = p.budget >= n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    flags[i] = all || i < p.sinks || i >= n - p.window ? 1 : 0;
  }
  __syncthreads();
  if (!all) {
    const int64_t free = p.budget - p.sinks - p.window;
    const int64_t first = p.stage1 < 0 ? free : p.stage1;
    SelectBest({scores + h * n, nullptr, flags, n}, first);
    if (p.stage1 >= 0) SelectBest({scores + h * n, norms + h * n, flags, n}, free - first);
  }
  Compact(flags, n, 1, keep + p.keep_offset);
  if (evicted != nullptr) Compact(flags, n, 0, evicted + p.evicted_offset);
}

absl::Status CheckPlan(const HeadSelectPlan& p, int64_t n, bool have_norms, size_t h) {
  const int64_t kept = std::min(p.budget, n);
  const bool ok = p.budget >= 0 && p.sinks >= 0 && p.window >= 0 &&
                  (p.budget >= n || p.sinks + p.window <= p.budget) &&
                  (p.stage1 < 0 || (have_norms && p.stage1 <= kept - p.sinks - p.window));
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("select: head ", h, " plan budget=", p.budget,
                                                 " sinks=", p.sinks, " window=", p.window,
                                                 " stage1=", p.stage1, " does not fit length ", n,
                                                 have_norms ? "" : " (stage1 needs value norms)"));
}

}  // namespace

absl::Status SelectTopK(Context& ctx, const float* scores, const float* value_norm, int64_t length,
                        absl::Span<const HeadSelectPlan> heads, int32_t* keep, int32_t* evicted) {
  if (length <= 0 || length > int64_t{std::numeric_limits<int32_t>::max()}) {
    return absl::InvalidArgumentError(
        absl::StrCat("select: length ", length, " outside [1, 2^31 - 1] (int32 indices)"));
  }
  std::vector<Plan> plans;
  int64_t keep_off = 0, evict_off = 0;
  for (size_t h = 0; h < heads.size(); ++h) {
    KVWIRE_RETURN_IF_ERROR(CheckPlan(heads[h], length, value_norm != nullptr, h));
    const HeadSelectPlan& p = heads[h];
    plans.push_back({p.budget, p.sinks, p.window, p.stage1, keep_off, evict_off});
    keep_off += std::min(p.budget, length);
    evict_off += length - std::min(p.budget, length);
  }
  const int64_t per_launch = std::min<int64_t>(kHeadsPerLaunch, heads.size());
  KVWIRE_ASSIGN_OR_RETURN(void* flags, ctx.Scratch(per_launch * length, internal::kSlotSelect));
  for (size_t h0 = 0; h0 < heads.size(); h0 += kHeadsPerLaunch) {
    const size_t count = std::min<size_t>(kHeadsPerLaunch, heads.size() - h0);
    PlanTable table{};
    std::copy_n(plans.begin() + h0, count, table.plans);
    SelectKernel<<<static_cast<unsigned>(count), kThreads, 0, ctx.stream()>>>(
        table, static_cast<int>(h0), scores, value_norm, length, static_cast<uint8_t*>(flags), keep,
        evicted);
    KVWIRE_RETURN_IF_ERROR(ctx.CheckLaunch("SelectKernel"));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::kernels::cuda
