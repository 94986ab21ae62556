// kernels/cuda/select.h — per-head top-k selection on the device (ALGORITHMS.md §3; the semantics
// of kvwire::compress::SelectHead, with the forced counts computed by the caller).
//
// For each head h: keep = [0, sinks) ∪ [L - window, L) ∪ the best free entries among the rest,
// where free = budget - sinks - window. Without value norms the free entries are the top `free`
// by score; with them (+critical) the top `stage1` by score, then the top `free - stage1` of the
// remaining by (score + 1e-4) * value_norm. Ties go to the lower index, exactly like the CPU's
// comparator, so the result is identical to SelectHead for the same scores. A budget >= L keeps
// everything.
//
// Kernel: one block per head; an 8-pass radix select (8 bits per pass) over 64-bit keys
// (order-preserving score bits, inverted index) finds the exact k-th best, then an ordered
// block scan writes the kept and evicted indices in increasing order.
//
// Errors: INVALID_ARGUMENT for plans that do not fit (forced > budget, stage1 > free, ...).
// Scratch: slot 0.
#ifndef KVWIRE_KERNELS_CUDA_SELECT_H_
#define KVWIRE_KERNELS_CUDA_SELECT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cuda/device.h"

namespace kvwire::kernels::cuda {

struct HeadSelectPlan {
  int64_t budget = 0;   // entries kept, forced ones included
  int64_t sinks = 0;    // forced first entries
  int64_t window = 0;   // forced last entries
  int64_t stage1 = -1;  // +critical: free entries chosen by score alone; -1 without value norms
};

// scores fp32 [heads.size()][length]; value_norm fp32 [heads.size()][length] or null (required
// when a plan has stage1 >= 0). keep int32 [sum of min(budget, length)]: each head's kept indices,
// increasing, heads concatenated in order. evicted int32 [sum of length - kept] or null: the rest.
// All device pointers.
absl::Status SelectTopK(Context& ctx, const float* scores, const float* value_norm, int64_t length,
                        absl::Span<const HeadSelectPlan> heads, int32_t* keep, int32_t* evicted);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_SELECT_H_
