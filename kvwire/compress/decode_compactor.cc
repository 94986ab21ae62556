#include "kvwire/compress/decode_compactor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/merge.h"
#include "kvwire/kernels/ops.h"

namespace kvwire::compress {

DecodeCompactor::DecodeCompactor(const CompressionSpec& spec, int n_heads, int64_t max_entries,
                                 float decay)
    : spec_(spec), n_heads_(n_heads), max_entries_(max_entries), decay_(decay) {
  if (spec_.merge == MergeMode::kNone) spec_.merge = MergeMode::kGuarded;
}

kernels::QueryBlock DecodeCompactor::RecentBlock(const LayerState& st, std::vector<float>* rows,
                                                 std::vector<int32_t>* positions, int n_kv_heads,
                                                 int d) const {
  rows->clear();
  for (const auto& q : st.recent) rows->insert(rows->end(), q.begin(), q.end());
  const int64_t n = static_cast<int64_t>(st.recent.size());
  positions->assign(n, std::numeric_limits<int32_t>::max());  // see every entry
  return {rows->data(),
          n,
          positions->data(),
          n_heads_,
          n_kv_heads,
          d,
          1.0f / std::sqrt(static_cast<float>(d))};
}

void DecodeCompactor::UpdateScores(LayerState& st, const float* query,
                                   const cache::LayerCache& layer, int d) {
  const int n_kv = static_cast<int>(layer.heads.size());
  const int group = n_heads_ / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int h = 0; h < n_kv; ++h) {
    const cache::HeadSegment& seg = layer.heads[h];
    std::vector<float>& ema = st.heads[h].ema;
    ema.resize(seg.size(), 0.0f);  // new entries start at 0
    std::vector<float> prob(seg.size(), 0.0f), z(seg.size());
    for (int g = h * group; g < (h + 1) * group; ++g) {
      for (size_t i = 0; i < seg.size(); ++i) {
        z[i] = scale * kernels::Dot(query + g * d, seg.key(i, d), d) + seg.log_votes[i];
      }
      kernels::Softmax(z.data(), static_cast<int64_t>(z.size()));
      for (size_t i = 0; i < seg.size(); ++i) prob[i] += z[i] / static_cast<float>(group);
    }
    for (size_t i = 0; i < seg.size(); ++i) ema[i] = decay_ * ema[i] + (1.0f - decay_) * prob[i];
  }
}

int64_t DecodeCompactor::LowestEma(const LayerState& st, int h,
                                   const cache::HeadSegment& seg) const {
  const int64_t n = static_cast<int64_t>(seg.size());
  const int64_t lo = std::min<int64_t>(spec_.sinks, n),
                hi = std::max<int64_t>(lo, n - spec_.window);
  const std::vector<float>& ema = st.heads[h].ema;
  int64_t victim = lo;
  for (int64_t i = lo; i < hi; ++i) {
    if (ema[i] < ema[victim]) victim = i;
  }
  return victim;
}

void DecodeCompactor::MergeOne(LayerState& st, int h, cache::HeadSegment& seg, int d,
                               int64_t victim) {
  const int64_t n = static_cast<int64_t>(seg.size());
  std::vector<float>& ema = st.heads[h].ema;
  // Most similar other entry.
  std::vector<float> cos(n, -2.0f);
  const float* kv = seg.key(victim, d);
  const float nv = std::sqrt(kernels::Dot(kv, kv, d));
  int64_t target = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (i == victim) continue;
    const float* k = seg.key(i, d);
    const float nk = std::sqrt(kernels::Dot(k, k, d));
    cos[i] = (nv > 0 && nk > 0) ? kernels::Dot(kv, k, d) / (nv * nk) : 0.0f;
    if (target < 0 || cos[i] > cos[target]) target = i;
  }
  // Log-scores of the pair and of their weighted mean key under the recent queries.
  std::vector<float> rows;
  std::vector<int32_t> pos;
  const kernels::QueryBlock qb = RecentBlock(st, &rows, &pos, static_cast<int>(st.heads.size()), d);
  std::vector<float> pair_keys(2 * d), l(2), l_mean(1);
  std::copy_n(seg.key(target, d), d, pair_keys.data());
  std::copy_n(kv, d, pair_keys.data() + d);
  kernels::LogMeanExpScores(qb, h, {pair_keys.data(), d, 2}, l.data());
  const MergeMember group[2] = {
      {seg.key(target, d), seg.value(target, d), seg.log_votes[target], l[0]},
      {kv, seg.value(victim, d), seg.log_votes[victim], l[1]}};
  GroupMoments moments = ComputeMoments(group, d);
  kernels::LogMeanExpScores(qb, h, {moments.mean_key.data(), d, 1}, l_mean.data());
  MergedEntry merged = FinishMerge(spec_, std::move(moments), l_mean[0]);
  std::copy_n(merged.key.data(), d, seg.keys.data() + target * d);
  std::copy_n(merged.value.data(), d, seg.values.data() + target * d);
  seg.log_votes[target] = merged.log_vote;
  ema[target] += ema[victim];
  // Remove the victim, keeping every array aligned.
  seg.positions.erase(seg.positions.begin() + victim);
  seg.log_votes.erase(seg.log_votes.begin() + victim);
  seg.keys.erase(seg.keys.begin() + victim * d, seg.keys.begin() + (victim + 1) * d);
  seg.values.erase(seg.values.begin() + victim * d, seg.values.begin() + (victim + 1) * d);
  ema.erase(ema.begin() + victim);
  std::vector<float>& gate = st.heads[h].gate;
  if (!gate.empty()) gate.erase(gate.begin() + victim);
  ++merges_;
}

void DecodeCompactor::UseGates(const GateModel* gates, float kept_fraction,
                               kernels::ThreadPool* pool) {
  constexpr int kMaxBatch = 16;
  gate_rows_ =
      std::make_unique<GateRowBuffer>(gates, std::min(kMaxBatch, std::max(1, spec_.window)));
  gate_kept_fraction_ = kept_fraction;
  gate_pool_ = pool;
}

void DecodeCompactor::GateEvict(LayerState& st, int h, cache::HeadSegment& seg, int d) {
  const int64_t left = st.generated - spec_.window;  // generated tokens past the window
  if (left <= 0) return;
  const auto allowed =
      static_cast<int64_t>(std::ceil(gate_kept_fraction_ * static_cast<double>(left)));
  while (true) {
    const int64_t n = static_cast<int64_t>(seg.size());
    const int64_t lo = std::min<int64_t>(spec_.sinks, n),
                  hi = std::max<int64_t>(lo, n - spec_.window);
    const std::vector<float>& gate = st.heads[h].gate;
    int64_t victim = -1, scored = 0;
    for (int64_t i = lo; i < hi; ++i) {
      if (std::isnan(gate[i])) continue;
      ++scored;
      if (victim < 0 || gate[i] < gate[victim]) victim = i;
    }
    if (scored <= allowed) return;
    MergeOne(st, h, seg, d, victim);
    ++gate_merges_;
  }
}

absl::Status DecodeCompactor::GateStep(int layer, LayerState& st, const float* attn_input,
                                       cache::LayerCache* layer_cache, int d) {
  if (attn_input == nullptr) {
    return absl::InvalidArgumentError(
        "decode compactor with gates needs the step's attention input");
  }
  ++st.generated;
  for (auto& head : st.heads) head.gate.resize(head.ema.size(), NAN);
  if (!gate_rows_->Add(layer, attn_input)) return absl::OkStatus();
  const int64_t n = gate_rows_->pending(layer);
  std::vector<float> scores;
  gate_rows_->Flush(layer, &scores, gate_pool_);
  // The buffered rows are the newest n entries of every head (merges never touch the window).
  for (size_t h = 0; h < st.heads.size(); ++h) {
    std::vector<float>& gate = st.heads[h].gate;
    const int64_t first = static_cast<int64_t>(gate.size()) - n;
    for (int64_t i = 0; i < n && first + i >= 0; ++i) gate[first + i] = scores[h * n + i];
    GateEvict(st, static_cast<int>(h), layer_cache->heads[h], d);
  }
  return absl::OkStatus();
}

absl::Status DecodeCompactor::OnStep(int layer, const float* query, cache::LayerCache* layer_cache,
                                     const float* attn_input) {
  if (max_entries_ < spec_.sinks + spec_.window + 1) {
    return absl::InvalidArgumentError(absl::StrCat("decode budget of ", max_entries_,
                                                   " entries cannot hold ", spec_.sinks,
                                                   " sinks + ", spec_.window, " recent entries"));
  }
  if (layer < 0) return absl::InvalidArgumentError("negative layer");
  if (static_cast<size_t>(layer) >= layers_.size()) layers_.resize(layer + 1);
  LayerState& st = layers_[layer];
  const int n_kv = static_cast<int>(layer_cache->heads.size());
  if (n_kv == 0 || n_heads_ % n_kv != 0) return absl::InvalidArgumentError("bad KV head count");
  if (st.heads.empty()) st.heads.resize(n_kv);
  if (static_cast<int>(st.heads.size()) != n_kv)
    return absl::InvalidArgumentError("cache shape changed");
  const cache::HeadSegment& first = layer_cache->heads[0];
  if (first.size() == 0) return absl::OkStatus();
  const int d = static_cast<int>(first.keys.size() / first.size());
  st.recent.emplace_back(query, query + static_cast<size_t>(n_heads_) * d);
  if (st.recent.size() > kRecentQueries) st.recent.pop_front();
  UpdateScores(st, query, *layer_cache, d);
  if (gate_rows_ != nullptr) {
    if (layer >= gate_rows_->layers()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " has no gate"));
    }
    KVWIRE_RETURN_IF_ERROR(GateStep(layer, st, attn_input, layer_cache, d));
  }
  for (int h = 0; h < n_kv; ++h) {
    cache::HeadSegment& seg = layer_cache->heads[h];
    while (static_cast<int64_t>(seg.size()) > max_entries_) {
      MergeOne(st, h, seg, d, LowestEma(st, h, seg));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvwire::compress
