#include "kvwire/control/synthetic_kv.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kvwire/base/status.h"
#include "kvwire/format/frame.h"

namespace kvwire::control {

std::string SyntheticKv::ToString() const {
  return absl::StrCat(shape.n_layers, "x", shape.n_kv_heads, "x", shape.head_dim, "x",
                      n_query_heads);
}

uint64_t SyntheticKv::Fp16BytesPerToken() const {
  return uint64_t{2} * 2 * static_cast<uint64_t>(shape.n_layers) * shape.n_kv_heads *
         shape.head_dim;
}

absl::StatusOr<SyntheticKv> ParseSyntheticKv(absl::string_view spec) {
  const std::vector<absl::string_view> parts = absl::StrSplit(spec, 'x');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic KV shape '", spec, "': ", why,
                                                   " (want LAYERSxKVHEADSxDIM[xQUERYHEADS])"));
  };
  if (parts.size() != 3 && parts.size() != 4) return bad("needs 3 or 4 numbers");
  std::vector<int> n;
  for (absl::string_view part : parts) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value) || value <= 0) {
      return bad(absl::StrCat("'", part, "' is not a positive number"));
    }
    n.push_back(value);
  }
  SyntheticKv kv;
  kv.shape = {n[0], n[1], n[2]};
  if (absl::Status s = kv.shape.Validate(); !s.ok()) return bad(s.message());
  kv.n_query_heads = parts.size() == 4 ? n[3] : n[1];
  if (kv.n_query_heads % kv.shape.n_kv_heads != 0 || kv.n_query_heads > 1024) {
    return bad(absl::StrCat(kv.n_query_heads, " query heads are not a multiple of ",
                            kv.shape.n_kv_heads, " KV heads within 1024"));
  }
  return kv;
}

uint64_t SyntheticFingerprint(const SyntheticKv& kv, int vocab_size) {
  const std::string text = absl::StrCat("kvwire-synthetic-kv:", kv.ToString(), "/", vocab_size);
  const uint64_t hash = format::HashBytes(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  return hash == 0 ? 1 : hash;
}

std::string DescribeKv(const cache::CacheShape& shape, bool synthetic) {
  return absl::StrCat(shape.n_layers, "x", shape.n_kv_heads, "x", shape.head_dim,
                      synthetic ? " synthetic" : "");
}

}  // namespace kvwire::control
