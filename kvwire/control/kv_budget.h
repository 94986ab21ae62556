// kvwire/control/kv_budget.h — sizes and identities both nodes must agree on without talking:
// the model fingerprint carried in manifests and grants, the manifest a prefill node streams, and
// the wire-byte allowance a decode node grants for a prompt.
//
// Thread-safety: pure functions. Errors: none (callers validate their inputs first).
#ifndef KVWIRE_CONTROL_KV_BUDGET_H_
#define KVWIRE_CONTROL_KV_BUDGET_H_

#include <cstdint>
#include <string>

#include "kvwire/cache/kv_cache.h"
#include "kvwire/format/dtype.h"
#include "kvwire/format/messages.h"

namespace kvwire::control {

// A stable 64-bit identity of a model's KV-relevant shape (layers, heads, dims, vocab); never 0.
uint64_t ModelFingerprint(const cache::CacheShape& shape, int n_query_heads, int vocab_size);

// The manifest for streaming a prompt of `original_length` tokens compressed to `kept_fraction`.
// entry_budget is the uncompressed entry count (an upper bound for every method).
format::Manifest StreamManifest(const cache::CacheShape& shape, int n_query_heads,
                                uint64_t fingerprint, uint32_t original_length, float kept_fraction,
                                format::DType kv_dtype, std::string method);

// Upper bound on the wire bytes of such a stream (every frame header, manifest, per-head tables,
// positions, f32 log-votes, keys and values at `kv_dtype`, commit) when every head keeps at most
// compress::HeadBudget entries on average.
uint64_t EstimateWireBytes(const cache::CacheShape& shape, uint32_t prompt_tokens,
                           float kept_fraction, format::DType kv_dtype);

}  // namespace kvwire::control

#endif  // KVWIRE_CONTROL_KV_BUDGET_H_
