// kvwire/format/messages.h — payloads of the Manifest, Layer, Commit and Abort frames (v1).
//
// Manifest payload:
//   u64 model_fingerprint | u32 n_layers | u16 n_kv_heads | u16 n_query_heads | u16 head_dim |
//   u8 kv_dtype | u8 vote_dtype | u32 original_length | u16 quant_group | u16 method_length |
//   f32 budget | u64 entry_budget | method bytes[method_length]
//   entry_budget bounds the total entries over all layer frames; budget is the kept fraction.
//
// Layer payload:
//   u32 layer | u16 n_kv_heads | u16 head_dim | u8 kv_dtype | u8 vote_dtype | u16 quant_group |
//   n_kv_heads x (u32 count, u32 tail) |
//   then for each head h, with c = count, t = tail, q = c - t, G = quant_group:
//     i32 positions[c] | vote_dtype votes[c] |
//     kv_dtype in {f32, f16, bf16}:  keys[c*d] | values[c*d]                   (t must be 0)
//     kv_dtype = i8: i8 keys[q*d] | f16 key_scales[ceil(q/G)*d] | i8 values[q*d] |
//                    f16 value_scales[q] | f16 tail_keys[t*d] | f16 tail_values[t*d]
//   Keys are quantised per channel over groups of G entries, values per entry (symmetric,
//   x = q * scale); the last t entries (the recent window) stay fp16. vote_dtype is f32 or f16.
//
// Commit payload: u32 n_layers | u64 total_entries | u64 stream_digest
//   stream_digest = XXH3-64 over the concatenated u64 payload hashes of the layer frames in
//   sequence order: the receiver proves it installed exactly what was sent.
// Abort payload:  u32 status_code (absl::StatusCode) | u16 message_length | message bytes
//
// Decoders check every count against Limits and the exact payload length before touching data;
// anything malformed is DATA_LOSS. LayerView points into the caller's payload (zero-copy).
// Pure functions; thread-safe.
#ifndef KVWIRE_FORMAT_MESSAGES_H_
#define KVWIRE_FORMAT_MESSAGES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/format/dtype.h"
#include "kvwire/format/frame.h"

namespace kvwire::format {

struct Manifest {
  uint64_t model_fingerprint = 0;
  uint32_t n_layers = 0;
  uint16_t n_kv_heads = 0;
  uint16_t n_query_heads = 0;
  uint16_t head_dim = 0;
  DType kv_dtype = DType::kF16;
  DType vote_dtype = DType::kF32;
  uint32_t original_length = 0;
  uint16_t quant_group = 0;  // entries per key-scale group when kv_dtype is i8, else 0
  float budget = 1.0f;       // kept fraction applied, in (0, 1]
  uint64_t entry_budget = 0;  // upper bound on total entries across layers
  std::string method;         // compression spec string, e.g. "snapkv/adaptive/merge"
  bool operator==(const Manifest&) const = default;
};

struct Commit {
  uint32_t n_layers = 0;
  uint64_t total_entries = 0;
  uint64_t stream_digest = 0;
  bool operator==(const Commit&) const = default;
};

struct Abort {
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string message;
  bool operator==(const Abort&) const = default;
};

std::vector<uint8_t> EncodeManifest(const Manifest& m);
absl::StatusOr<Manifest> DecodeManifest(absl::Span<const uint8_t> payload, const Limits& limits);
std::vector<uint8_t> EncodeCommit(const Commit& c);
absl::StatusOr<Commit> DecodeCommit(absl::Span<const uint8_t> payload);
std::vector<uint8_t> EncodeAbort(const Abort& a);
absl::StatusOr<Abort> DecodeAbort(absl::Span<const uint8_t> payload, const Limits& limits);

// Shape and dtype of one layer payload.
struct LayerLayout {
  uint32_t layer = 0;
  uint16_t head_dim = 0;
  DType kv_dtype = DType::kF16;
  DType vote_dtype = DType::kF32;
  uint16_t quant_group = 0;  // required (16..1024) for i8, 0 otherwise
  std::vector<uint32_t> counts;  // [n_kv_heads] entries per head
  std::vector<uint32_t> tails;   // [n_kv_heads] fp16 tail entries per head (i8 only, else 0)
};

// Input for one head, all fp32, read-only; arrays sized count, count, count*d, count*d.
struct HeadInput {
  const int32_t* positions = nullptr;
  const float* log_votes = nullptr;
  const float* keys = nullptr;
  const float* values = nullptr;
};

// Exact payload size of a layer, or INVALID_ARGUMENT for an inconsistent layout.
absl::StatusOr<uint64_t> LayerPayloadSize(const LayerLayout& layout);
// Encodes a layer into `out` (resized to LayerPayloadSize). heads.size() == counts.size().
absl::Status EncodeLayer(const LayerLayout& layout, absl::Span<const HeadInput> heads,
                         std::vector<uint8_t>* out);

// Zero-copy view of one head inside a decoded layer payload. Byte spans are unaligned.
struct HeadView {
  uint32_t count = 0;
  uint32_t tail = 0;
  absl::Span<const uint8_t> positions;     // i32[count]
  absl::Span<const uint8_t> votes;         // vote_dtype[count]
  absl::Span<const uint8_t> keys;          // kv_dtype[(count - tail) * d] (i8) or [count * d]
  absl::Span<const uint8_t> values;        // likewise
  absl::Span<const uint8_t> key_scales;    // f16[ceil(q/G) * d], i8 only
  absl::Span<const uint8_t> value_scales;  // f16[q], i8 only
  absl::Span<const uint8_t> tail_keys;     // f16[tail * d], i8 only
  absl::Span<const uint8_t> tail_values;   // f16[tail * d], i8 only
};

struct LayerView {
  LayerLayout layout;
  std::vector<HeadView> heads;
};

absl::StatusOr<LayerView> DecodeLayer(absl::Span<const uint8_t> payload, const Limits& limits);

// Reconstructs one head's data as fp32 into caller arrays sized count, count, count*d, count*d.
// DATA_LOSS if a log-vote is not finite.
absl::Status ExpandHead(const LayerLayout& layout, const HeadView& head, int32_t* positions,
                        float* log_votes, float* keys, float* values);

}  // namespace kvwire::format

#endif  // KVWIRE_FORMAT_MESSAGES_H_
