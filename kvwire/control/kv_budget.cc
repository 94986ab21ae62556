#include "kvwire/control/kv_budget.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kvwire/compress/select.h"
#include "kvwire/format/frame.h"

namespace kvwire::control {
namespace {

// Bytes besides entries: manifest, commit and their headers, with room for a long method name.
constexpr uint64_t kStreamOverhead = 2 * format::kFrameHeaderSize + 512;
// Per layer frame: its header and fixed fields, plus (count, tail) per head.
constexpr uint64_t kLayerOverhead = format::kFrameHeaderSize + 16;

}  // namespace

uint64_t ModelFingerprint(const cache::CacheShape& shape, int n_query_heads, int vocab_size) {
  const std::string text = absl::StrCat("kvwire-model:", shape.n_layers, "/", shape.n_kv_heads, "/",
                                        shape.head_dim, "/", n_query_heads, "/", vocab_size);
  const uint64_t hash = format::HashBytes(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  return hash == 0 ? 1 : hash;
}

format::Manifest StreamManifest(const cache::CacheShape& shape, int n_query_heads,
                                uint64_t fingerprint, uint32_t original_length, float kept_fraction,
                                format::DType kv_dtype, std::string method) {
  format::Manifest m;
  m.model_fingerprint = fingerprint;
  m.n_layers = static_cast<uint32_t>(shape.n_layers);
  m.n_kv_heads = static_cast<uint16_t>(shape.n_kv_heads);
  m.n_query_heads = static_cast<uint16_t>(n_query_heads);
  m.head_dim = static_cast<uint16_t>(shape.head_dim);
  m.kv_dtype = kv_dtype;
  m.vote_dtype = format::DType::kF32;
  m.quant_group = kv_dtype == format::DType::kI8 ? 64 : 0;
  m.original_length = original_length;
  m.budget = kept_fraction;
  m.entry_budget = uint64_t{original_length} * static_cast<uint64_t>(shape.n_layers) *
                   static_cast<uint64_t>(shape.n_kv_heads);
  m.method = std::move(method);
  return m;
}

uint64_t EstimateWireBytes(const cache::CacheShape& shape, uint32_t prompt_tokens,
                           float kept_fraction, format::DType kv_dtype) {
  const uint64_t heads = static_cast<uint64_t>(shape.n_layers) * shape.n_kv_heads;
  // Allocators move budget between heads but keep the total at HeadBudget per head.
  const uint64_t per_head =
      prompt_tokens == 0
          ? 0
          : static_cast<uint64_t>(compress::HeadBudget(kept_fraction, prompt_tokens));
  // i8 carries scales and an fp16 tail; f16 per element bounds it from above.
  const uint64_t element = std::max<uint64_t>(format::DTypeSize(kv_dtype), 2);
  const uint64_t per_entry = 4 + 4 + 2 * element * static_cast<uint64_t>(shape.head_dim);
  return kStreamOverhead + static_cast<uint64_t>(shape.n_layers) * kLayerOverhead + heads * 8 +
         heads * per_head * per_entry;
}

}  // namespace kvwire::control
