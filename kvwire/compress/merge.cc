#include "kvwire/compress/merge.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvwire::compress {
namespace {

float LogSumExp(const std::vector<float>& x) {
  const float m = *std::max_element(x.begin(), x.end());
  double s = 0;
  for (float v : x) s += std::exp(v - m);
  return m + static_cast<float>(std::log(s));
}

std::vector<float> Gather(const kernels::StridedRows& rows, absl::Span<const int32_t> idx, int d) {
  std::vector<float> out(idx.size() * d);
  for (size_t i = 0; i < idx.size(); ++i) std::copy_n(rows.row(idx[i]), d, out.data() + i * d);
  return out;
}

}  // namespace

GroupMoments ComputeMoments(absl::Span<const MergeMember> group, int d) {
  std::vector<float> a(group.size()), lambda(group.size());
  for (size_t i = 0; i < group.size(); ++i) {
    a[i] = group[i].log_vote + group[i].log_score;
    lambda[i] = group[i].log_vote;
  }
  const float m = *std::max_element(a.begin(), a.end());
  GroupMoments g;
  g.mean_key.assign(d, 0.0f);
  g.value.assign(d, 0.0f);
  double w_sum = 0, l_sum = 0;
  for (size_t i = 0; i < group.size(); ++i) {
    const double w = std::exp(static_cast<double>(a[i]) - m);
    w_sum += w;
    l_sum += w * group[i].log_score;
    for (int c = 0; c < d; ++c) {
      g.mean_key[c] += static_cast<float>(w * group[i].key[c]);
      g.value[c] += static_cast<float>(w * group[i].value[c]);
    }
  }
  const float inv = static_cast<float>(1.0 / w_sum);
  for (int c = 0; c < d; ++c) g.mean_key[c] *= inv, g.value[c] *= inv;
  g.mean_log_score = static_cast<float>(l_sum / w_sum);
  g.log_mass = m + static_cast<float>(std::log(w_sum));
  g.log_votes = LogSumExp(lambda);
  return g;
}

MergedEntry FinishMerge(const CompressionSpec& spec, GroupMoments g, float log_score_of_mean_key) {
  MergedEntry e;
  e.value = std::move(g.value);
  if (spec.merge == MergeMode::kZip) {
    const float target = g.log_mass - g.log_votes;  // l*
    const float mean = g.mean_log_score;            // l̄
    const float ratio = target / mean;
    const bool stable = std::fabs(mean) >= spec.zip_min_abs && ratio > 0 &&
                        ratio >= 1.0f / spec.zip_max_ratio && ratio <= spec.zip_max_ratio;
    if (stable) {
      e.key = std::move(g.mean_key);
      for (float& k : e.key) k *= ratio;
      e.log_vote = g.log_votes;
      e.zip = true;
      return e;
    }
  }
  e.key = std::move(g.mean_key);
  e.log_vote = g.log_mass - log_score_of_mean_key;
  return e;
}

cache::HeadSegment BuildHeadSegment(const CompressionSpec& spec, const LayerInput& in, int h,
                                    const HeadScores& scores, absl::Span<const int32_t> keep,
                                    kernels::ThreadPool* pool, MergeCounts* counts) {
  const int d = in.head_dim;
  const int64_t L = in.n_tokens;
  const kernels::StridedRows keys = in.KeyRows(h), values = in.ValueRows(h);
  cache::HeadSegment seg;
  seg.Reserve(keep.size(), d);
  for (int32_t i : keep) seg.Append(i, 0.0f, keys.row(i), values.row(i), d);
  if (spec.merge == MergeMode::kNone || static_cast<int64_t>(keep.size()) >= L) {
    if (counts) counts->dropped += L - static_cast<int64_t>(keep.size());
    return seg;
  }
  // Evicted entries and their most similar kept key.
  std::vector<bool> kept(L, false);
  for (int32_t i : keep) kept[i] = true;
  std::vector<int32_t> evicted;
  for (int64_t i = 0; i < L; ++i) {
    if (!kept[i]) evicted.push_back(static_cast<int32_t>(i));
  }
  const std::vector<float> ev_keys = Gather(keys, evicted, d);
  std::vector<int32_t> target(evicted.size());
  std::vector<float> cosine(evicted.size());
  kernels::CosineArgmax({ev_keys.data(), d, static_cast<int64_t>(evicted.size())},
                        {seg.keys.data(), d, static_cast<int64_t>(keep.size())}, d, target.data(),
                        cosine.data(), pool);
  std::vector<std::vector<int32_t>> members(keep.size());
  for (size_t e = 0; e < evicted.size(); ++e) {
    if (target[e] >= 0 && cosine[e] >= spec.merge_threshold) {
      members[target[e]].push_back(evicted[e]);
      if (counts) ++counts->merged;
    } else if (counts) {
      ++counts->dropped;
    }
  }
  // Moments of every group, then l(k̄) for all mean keys in one batch.
  std::vector<int32_t> groups;
  std::vector<GroupMoments> moments;
  for (size_t k = 0; k < keep.size(); ++k) {
    if (members[k].empty()) continue;
    std::vector<MergeMember> group{{keys.row(keep[k]), values.row(keep[k]), 0.0f,
                                    scores.log_score[keep[k]]}};
    for (int32_t e : members[k]) group.push_back({keys.row(e), values.row(e), 0.0f, scores.log_score[e]});
    groups.push_back(static_cast<int32_t>(k));
    moments.push_back(ComputeMoments(group, d));
  }
  if (groups.empty()) return seg;
  std::vector<float> mean_keys(groups.size() * d), l_mean(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) std::copy_n(moments[g].mean_key.data(), d, &mean_keys[g * d]);
  std::vector<int32_t> query_pos;
  const kernels::QueryBlock all = WindowQueries(in, &query_pos);
  const kernels::QueryBlock window = LastRows(all, std::min<int64_t>(spec.window, all.n_queries));
  kernels::LogMeanExpScores(window, h, {mean_keys.data(), d, static_cast<int64_t>(groups.size())},
                            l_mean.data());
  for (size_t g = 0; g < groups.size(); ++g) {
    MergedEntry m = FinishMerge(spec, std::move(moments[g]), l_mean[g]);
    const size_t k = groups[g];
    std::copy_n(m.key.data(), d, seg.keys.data() + k * d);
    std::copy_n(m.value.data(), d, seg.values.data() + k * d);
    seg.log_votes[k] = m.log_vote;
    if (counts && m.zip) ++counts->zip;
  }
  return seg;
}

}  // namespace kvwire::compress
