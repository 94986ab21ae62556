// decode_node/mirror_step.h — decode-time merging for a cache that lives on a CUDA device.
//
// compress::DecodeCompactor works on a host cache::LayerCache. A --gpu decode node keeps a host
// copy (the mirror) of each merging request's cache beside the device copy and, after every
// layer of every decode step (from the runner's host hook, which sees the step's K/V and query):
//   1. AppendStepToMirror adds the step's entries to the mirror's layer, as the device pass
//      already did to its own copy (positions first_position + t, log-vote 0);
//   2. the compaction hook runs on the mirror's layer (DecodeCompactor::OnStep);
//   3. HeadsChangedByHook names the heads that hook changed; the caller uploads those heads again
//      (GpuKvCache::ReplaceHead), so the device copy equals the mirror before the next layer.
// A merge always removes an entry, so a head the hook changed is exactly one whose size is no
// longer its size before the step plus the step's entries.
//
// Thread-safety: plain functions over caller-owned data.
#ifndef KVWIRE_DECODE_NODE_MIRROR_STEP_H_
#define KVWIRE_DECODE_NODE_MIRROR_STEP_H_

#include <cstddef>
#include <vector>

#include "kvwire/cache/kv_cache.h"
#include "runtime/runner.h"

namespace kvwire::decode {

// Appends the pass's pl.n_tokens rows to every head of `layer` (pl.keys/values are
// [n_tokens][n_kv_heads][head_dim]); returns each head's size before.
std::vector<size_t> AppendStepToMirror(const runtime::PrefillLayer& pl, int head_dim,
                                       cache::LayerCache* layer);

// Heads of `layer` whose size differs from before[h] + appended: those a hook merged.
std::vector<int> HeadsChangedByHook(const std::vector<size_t>& before, size_t appended,
                                    const cache::LayerCache& layer);

}  // namespace kvwire::decode

#endif  // KVWIRE_DECODE_NODE_MIRROR_STEP_H_
