#include "kvwire/cache/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace kvwire::cache {

absl::Status CacheShape::Validate() const {
  constexpr int kMax = 1024;
  auto check = [](const char* what, int v) -> absl::Status {
    if (v <= 0 || v > kMax) {
      return absl::InvalidArgumentError(absl::StrCat(what, " must be in [1, ", kMax, "], got ", v));
    }
    return absl::OkStatus();
  };
  if (auto s = check("n_layers", n_layers); !s.ok()) return s;
  if (auto s = check("n_kv_heads", n_kv_heads); !s.ok()) return s;
  return check("head_dim", head_dim);
}

void HeadSegment::Reserve(size_t n, int head_dim) {
  positions.reserve(n);
  log_votes.reserve(n);
  keys.reserve(n * head_dim);
  values.reserve(n * head_dim);
}

void HeadSegment::Append(int32_t position, float log_vote, const float* key, const float* value,
                         int head_dim) {
  positions.push_back(position);
  log_votes.push_back(log_vote);
  keys.insert(keys.end(), key, key + head_dim);
  values.insert(values.end(), value, value + head_dim);
}

KvCache KvCache::Empty(const CacheShape& shape, int32_t original_length) {
  KvCache cache;
  cache.shape = shape;
  cache.original_length = original_length;
  cache.layers.resize(shape.n_layers);
  for (auto& layer : cache.layers) layer.heads.resize(shape.n_kv_heads);
  return cache;
}

size_t KvCache::TotalEntries() const {
  size_t n = 0;
  for (const auto& layer : layers) {
    for (const auto& head : layer.heads) n += head.size();
  }
  return n;
}

size_t KvCache::Fp16KvBytes() const { return TotalEntries() * 2 * shape.head_dim * 2; }

absl::Status KvCache::Validate() const {
  if (auto s = shape.Validate(); !s.ok()) return s;
  if (original_length < 0) return absl::InvalidArgumentError("original_length is negative");
  if (layers.size() != static_cast<size_t>(shape.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache has ", layers.size(), " layers, shape says ", shape.n_layers));
  }
  const size_t d = shape.head_dim;
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].heads.size() != static_cast<size_t>(shape.n_kv_heads)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " has ", layers[l].heads.size(),
                                                     " heads, shape says ", shape.n_kv_heads));
    }
    for (size_t h = 0; h < layers[l].heads.size(); ++h) {
      const HeadSegment& seg = layers[l].heads[h];
      const size_t n = seg.positions.size();
      if (seg.log_votes.size() != n || seg.keys.size() != n * d || seg.values.size() != n * d) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", l, " head ", h, ": inconsistent segment arrays (", n,
                         " positions, ", seg.log_votes.size(), " votes, ", seg.keys.size(),
                         " key floats, ", seg.values.size(), " value floats)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvwire::cache
