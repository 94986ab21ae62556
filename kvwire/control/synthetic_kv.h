// kvwire/control/synthetic_kv.h — the KV shape a prefill and a decode node agree on in
// synthetic-KV mode (benchmarks only).
//
// `--synthetic-kv LAYERSxKVHEADSxDIM[xQUERYHEADS]` (e.g. 32x8x128x32, Llama-3-8B) makes the prefill
// node stream deterministic pseudo-random keys and values of that shape through the real
// compressor and data plane instead of running its model, and the decode node receive and install
// them without generating. The model file still supplies the tokenizer and vocabulary. The shape
// and a synthetic marker enter the fingerprint, so a decode node refuses streams from a prefill
// node of another shape, or from a real one.
//
// Thread-safety: plain values and pure functions. Errors: INVALID_ARGUMENT for a malformed spec.
#ifndef KVWIRE_CONTROL_SYNTHETIC_KV_H_
#define KVWIRE_CONTROL_SYNTHETIC_KV_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kvwire/cache/kv_cache.h"

namespace kvwire::control {

struct SyntheticKv {
  cache::CacheShape shape;
  int n_query_heads = 0;  // a multiple of shape.n_kv_heads (grouped-query attention)

  std::string ToString() const;  // "LAYERSxKVHEADSxDIMxQUERYHEADS"
  // The model name synthetic nodes announce unless told otherwise: "synthetic-" + ToString().
  std::string ModelName() const { return "synthetic-" + ToString(); }
  // Bytes of uncompressed fp16 keys and values per prompt token, all layers.
  uint64_t Fp16BytesPerToken() const;
};

// Parses "LxHxD" (query heads = H) or "LxHxDxQ". Every number must be positive, the shape within
// CacheShape's limits, Q a multiple of H and at most 1024.
absl::StatusOr<SyntheticKv> ParseSyntheticKv(absl::string_view spec);

// The fingerprint both synthetic nodes put in manifests; never equal to a real model's
// control::ModelFingerprint of the same shape.
uint64_t SyntheticFingerprint(const SyntheticKv& kv, int vocab_size);

// "LAYERSxKVHEADSxDIM", with " synthetic" appended for synthetic KV: for error messages.
std::string DescribeKv(const cache::CacheShape& shape, bool synthetic);

}  // namespace kvwire::control

#endif  // KVWIRE_CONTROL_SYNTHETIC_KV_H_
