#include "kvwire/compress/select.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace kvwire::compress {
namespace {

constexpr float kForcedScore = std::numeric_limits<float>::infinity();

// Indices of the k largest values among `candidates` (ties broken by lower index, so results are
// deterministic); order of the result is unspecified.
std::vector<int32_t> TopK(const std::vector<int32_t>& candidates, const std::vector<float>& value,
                          int64_t k) {
  std::vector<int32_t> idx = candidates;
  k = std::clamp<int64_t>(k, 0, static_cast<int64_t>(idx.size()));
  auto better = [&value](int32_t a, int32_t b) {
    return value[a] > value[b] || (value[a] == value[b] && a < b);
  };
  std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(k);
  return idx;
}

// Scores with forced entries raised to +inf, so they win every cross-head comparison.
std::vector<float> WithForced(const CompressionSpec& spec, const std::vector<float>& score,
                              int64_t L, int64_t B) {
  std::vector<float> s = score;
  const ForcedRange forced = Forced(spec, L, B);
  for (int64_t i = 0; i < L; ++i) {
    if (forced.Contains(i, L)) s[i] = kForcedScore;
  }
  return s;
}

// Scores of several heads in one array, position-major (entry i of head h at i * H + h), forced
// entries at +inf. Position-major order makes exact ties spread evenly over the heads.
std::vector<float> Interleave(const CompressionSpec& spec, absl::Span<const HeadScores* const> heads,
                              int64_t L, int64_t B) {
  const size_t H = heads.size();
  std::vector<float> all(H * L);
  for (size_t h = 0; h < H; ++h) {
    const std::vector<float> s = WithForced(spec, heads[h]->score, L, B);
    for (int64_t i = 0; i < L; ++i) all[i * H + h] = s[i];
  }
  return all;
}

std::vector<float> Interleave(const CompressionSpec& spec, absl::Span<const HeadScores> heads,
                              int64_t L, int64_t B) {
  std::vector<const HeadScores*> ptrs;
  for (const HeadScores& h : heads) ptrs.push_back(&h);
  return Interleave(spec, ptrs, L, B);
}

// Moves budgets by one until they sum to `total`, respecting [lo_h, L]; largest heads give first.
void FixSum(std::vector<int64_t>& budgets, const std::vector<int64_t>& lo, int64_t L, int64_t total) {
  int64_t sum = std::accumulate(budgets.begin(), budgets.end(), int64_t{0});
  while (sum != total) {
    int best = -1;
    for (size_t h = 0; h < budgets.size(); ++h) {
      const bool can = sum < total ? budgets[h] < L : budgets[h] > lo[h];
      if (!can) continue;
      if (best < 0 || (sum < total ? budgets[h] < budgets[best] : budgets[h] > budgets[best])) {
        best = static_cast<int>(h);
      }
    }
    if (best < 0) return;  // Every head is at a bound.
    budgets[best] += sum < total ? 1 : -1;
    sum += sum < total ? 1 : -1;
  }
}

}  // namespace

int64_t HeadBudget(float kept_fraction, int64_t L) {
  // The tolerance absorbs float representation error (0.2f * 100 = 20.0000003 keeps 20).
  const auto b = static_cast<int64_t>(std::ceil(static_cast<double>(kept_fraction) * L - 1e-4));
  return std::clamp<int64_t>(b, 1, L);
}

ForcedRange Forced(const CompressionSpec& spec, int64_t L, int64_t budget) {
  ForcedRange f;
  f.sinks = std::min<int64_t>({spec.sinks, budget, L});
  const double share = spec.RecentShareFor(L > 0 ? static_cast<double>(budget) / L : 1.0);
  const auto recent = static_cast<int64_t>(std::llround(share * budget));
  f.window = std::clamp<int64_t>(std::min<int64_t>(std::max<int64_t>(spec.window, recent), budget - f.sinks),
                                 0, L - f.sinks);
  return f;
}

std::vector<int64_t> AllocateAdaptive(const CompressionSpec& spec,
                                      absl::Span<const HeadScores> heads, int64_t L, int64_t B) {
  const int64_t H = static_cast<int64_t>(heads.size());
  const std::vector<float> all = Interleave(spec, {heads.data(), heads.size()}, L, B);
  std::vector<int32_t> everything(all.size());
  std::iota(everything.begin(), everything.end(), 0);
  std::vector<int64_t> count(H, 0);
  for (int32_t w : TopK(everything, all, H * B)) ++count[w % H];
  const int64_t forced = Forced(spec, L, B).count();
  std::vector<int64_t> budgets(H), lo(H, forced);
  for (int64_t h = 0; h < H; ++h) {
    const double mixed = (1.0 - spec.adaptive_floor) * count[h] + spec.adaptive_floor * B;
    budgets[h] = std::clamp<int64_t>(std::llround(mixed), forced, L);
  }
  FixSum(budgets, lo, L, H * B);
  return budgets;
}

std::vector<std::vector<int64_t>> AllocateGlobal(
    const CompressionSpec& spec, absl::Span<const std::vector<HeadScores>> layers, int64_t L,
    int64_t B) {
  std::vector<const HeadScores*> flat_heads;
  for (const auto& layer : layers) {
    for (const HeadScores& h : layer) flat_heads.push_back(&h);
  }
  const size_t heads_total = flat_heads.size();
  const std::vector<float> all = Interleave(spec, flat_heads, L, B);
  std::vector<int32_t> everything(all.size());
  std::iota(everything.begin(), everything.end(), 0);
  std::vector<int64_t> count(heads_total, 0);
  for (int32_t w : TopK(everything, all, static_cast<int64_t>(heads_total) * B)) {
    ++count[w % heads_total];
  }
  const int64_t forced = Forced(spec, L, B).count();
  std::vector<int64_t> flat(heads_total), lo(heads_total, forced);
  for (size_t i = 0; i < heads_total; ++i) flat[i] = std::clamp<int64_t>(count[i], forced, L);
  FixSum(flat, lo, L, static_cast<int64_t>(heads_total) * B);
  std::vector<std::vector<int64_t>> out;
  size_t k = 0;
  for (const auto& layer : layers) {
    out.emplace_back(flat.begin() + k, flat.begin() + k + layer.size());
    k += layer.size();
  }
  return out;
}

std::vector<int32_t> SelectHead(const CompressionSpec& spec, const HeadScores& scores, int64_t L,
                                int64_t budget) {
  budget = std::clamp<int64_t>(budget, 0, L);
  std::vector<int32_t> keep;
  if (budget >= L) {
    keep.resize(L);
    std::iota(keep.begin(), keep.end(), 0);
    return keep;
  }
  const ForcedRange forced = Forced(spec, L, budget);
  std::vector<int32_t> rest;
  for (int64_t i = 0; i < L; ++i) {
    (forced.Contains(i, L) ? keep : rest).push_back(static_cast<int32_t>(i));
  }
  const int64_t free = budget - forced.count();
  if (!spec.critical) {
    for (int32_t i : TopK(rest, scores.score, free)) keep.push_back(i);
  } else {
    // Stage 1: alpha * budget by base score (forced entries count towards it).
    const int64_t stage1 = std::clamp<int64_t>(
        std::llround(spec.critical_alpha * budget) - forced.count(), 0, free);
    std::vector<int32_t> first = TopK(rest, scores.score, stage1);
    std::vector<bool> taken(L, false);
    for (int32_t i : first) taken[i] = true, keep.push_back(i);
    std::vector<int32_t> remaining;
    for (int32_t i : rest) {
      if (!taken[i]) remaining.push_back(i);
    }
    std::vector<float> value_aware(L);
    for (int64_t i = 0; i < L; ++i) value_aware[i] = (scores.score[i] + 1e-4f) * scores.value_norm[i];
    for (int32_t i : TopK(remaining, value_aware, free - stage1)) keep.push_back(i);
  }
  std::sort(keep.begin(), keep.end());
  return keep;
}

}  // namespace kvwire::compress
