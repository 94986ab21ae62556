#include "decode_node/mirror_step.h"

namespace kvwire::decode {

std::vector<size_t> AppendStepToMirror(const runtime::PrefillLayer& pl, int head_dim,
                                       cache::LayerCache* layer) {
  const size_t n_kv = layer->heads.size();
  std::vector<size_t> before(n_kv);
  for (size_t h = 0; h < n_kv; ++h) {
    cache::HeadSegment& seg = layer->heads[h];
    before[h] = seg.size();
    for (int64_t t = 0; t < pl.n_tokens; ++t) {
      const size_t row = (static_cast<size_t>(t) * n_kv + h) * head_dim;
      seg.Append(pl.first_position + static_cast<int32_t>(t), 0.0f, pl.keys + row, pl.values + row,
                 head_dim);
    }
  }
  return before;
}

std::vector<int> HeadsChangedByHook(const std::vector<size_t>& before, size_t appended,
                                    const cache::LayerCache& layer) {
  std::vector<int> changed;
  for (size_t h = 0; h < layer.heads.size(); ++h) {
    if (h >= before.size() || layer.heads[h].size() != before[h] + appended) {
      changed.push_back(static_cast<int>(h));
    }
  }
  return changed;
}

}  // namespace kvwire::decode
