#include "kvwire/format/messages.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/format/bytes.h"

namespace kvwire::format {
namespace {

constexpr size_t kManifestFixedSize = 8 + 4 + 2 + 2 + 2 + 1 + 1 + 4 + 2 + 2 + 4 + 8;
constexpr size_t kLayerFixedSize = 4 + 2 + 2 + 1 + 1 + 2;
constexpr size_t kCommitSize = 4 + 8 + 8;
constexpr uint16_t kMinQuantGroup = 16;
constexpr uint16_t kMaxQuantGroup = 1024;

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("malformed ", what));
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Sizes of the per-head sections, in bytes.
struct HeadSizes {
  uint64_t positions, votes, keys, values, key_scales, value_scales, tail_keys, tail_values;
  uint64_t Total() const {
    return positions + votes + keys + values + key_scales + value_scales + tail_keys + tail_values;
  }
};

HeadSizes SizesFor(const LayerLayout& l, uint32_t count, uint32_t tail) {
  const uint64_t d = l.head_dim;
  HeadSizes s{};
  s.positions = uint64_t{4} * count;
  s.votes = DTypeSize(l.vote_dtype) * uint64_t{count};
  if (l.kv_dtype != DType::kI8) {
    s.keys = s.values = DTypeSize(l.kv_dtype) * uint64_t{count} * d;
    return s;
  }
  const uint64_t q = count - tail;
  s.keys = s.values = q * d;
  s.key_scales = 2 * CeilDiv(q, l.quant_group) * d;
  s.value_scales = 2 * q;
  s.tail_keys = s.tail_values = 2 * uint64_t{tail} * d;
  return s;
}

// Validates a layout against limits; `code` is the status to return on violation
// (INVALID_ARGUMENT when encoding a caller's layout, DATA_LOSS when decoding a peer's).
absl::Status CheckLayout(const LayerLayout& l, const Limits& limits, absl::StatusCode code) {
  auto fail = [code](auto&&... parts) { return absl::Status(code, absl::StrCat(parts...)); };
  if (l.counts.empty() || l.counts.size() > limits.max_kv_heads) {
    return fail("layer has ", l.counts.size(), " KV heads (limit ", limits.max_kv_heads, ")");
  }
  if (l.tails.size() != l.counts.size()) return fail("tails and counts differ in length");
  if (l.head_dim == 0 || l.head_dim > limits.max_head_dim) {
    return fail("head_dim ", l.head_dim, " outside [1, ", limits.max_head_dim, "]");
  }
  if (l.layer >= limits.max_layers) return fail("layer index ", l.layer, " over the limit");
  if (l.vote_dtype != DType::kF32 && l.vote_dtype != DType::kF16) {
    return fail("log-votes must be f32 or f16, got ", DTypeName(l.vote_dtype));
  }
  const bool i8 = l.kv_dtype == DType::kI8;
  if (i8 && (l.quant_group < kMinQuantGroup || l.quant_group > kMaxQuantGroup)) {
    return fail("int8 quant_group ", l.quant_group, " outside [16, 1024]");
  }
  if (!i8 && l.quant_group != 0) return fail("quant_group set without int8 keys");
  for (size_t h = 0; h < l.counts.size(); ++h) {
    if (l.counts[h] > limits.max_entries_per_head) {
      return fail("head ", h, " has ", l.counts[h], " entries (limit ",
                  limits.max_entries_per_head, ")");
    }
    if (l.tails[h] > l.counts[h] || (!i8 && l.tails[h] != 0)) {
      return fail("head ", h, " tail ", l.tails[h], " invalid for ", l.counts[h], " entries");
    }
  }
  return absl::OkStatus();
}

uint64_t PayloadSizeUnchecked(const LayerLayout& l) {
  uint64_t total = kLayerFixedSize + 8 * uint64_t{l.counts.size()};
  for (size_t h = 0; h < l.counts.size(); ++h) total += SizesFor(l, l.counts[h], l.tails[h]).Total();
  return total;
}

void PutF16(ByteWriter& w, float f) { w.Put<uint16_t>(FloatToHalf(f)); }

// Symmetric int8 with an fp16 scale; the scale actually stored is used to quantise.
float StoredScale(float max_abs) { return HalfToFloat(FloatToHalf(max_abs / 127.0f)); }

int8_t Quantize(float x, float scale) {
  if (scale == 0.0f) return 0;
  const float q = std::nearbyint(x / scale);
  return static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
}

void EncodeI8Keys(const float* keys, uint32_t q, int d, uint16_t group, ByteWriter& w) {
  std::vector<float> scales(CeilDiv(q, group) * d);
  for (uint32_t g0 = 0, gi = 0; g0 < q; g0 += group, ++gi) {
    const uint32_t g1 = std::min<uint32_t>(q, g0 + group);
    for (int c = 0; c < d; ++c) {
      float m = 0;
      for (uint32_t i = g0; i < g1; ++i) m = std::max(m, std::fabs(keys[size_t{i} * d + c]));
      scales[size_t{gi} * d + c] = StoredScale(m);
    }
  }
  for (uint32_t i = 0; i < q; ++i) {
    const float* s = &scales[size_t{i / group} * d];
    for (int c = 0; c < d; ++c) w.Put<int8_t>(Quantize(keys[size_t{i} * d + c], s[c]));
  }
  for (float s : scales) PutF16(w, s);
}

void EncodeI8Values(const float* values, uint32_t q, int d, ByteWriter& w) {
  std::vector<float> scales(q);
  for (uint32_t i = 0; i < q; ++i) {
    float m = 0;
    for (int c = 0; c < d; ++c) m = std::max(m, std::fabs(values[size_t{i} * d + c]));
    scales[i] = StoredScale(m);
    for (int c = 0; c < d; ++c) w.Put<int8_t>(Quantize(values[size_t{i} * d + c], scales[i]));
  }
  for (float s : scales) PutF16(w, s);
}

void EncodeHead(const LayerLayout& l, uint32_t count, uint32_t tail, const HeadInput& in,
                ByteWriter& w) {
  const int d = l.head_dim;
  w.PutBytes(in.positions, size_t{count} * 4);
  PackFloats(in.log_votes, count, l.vote_dtype, w.Reserve(DTypeSize(l.vote_dtype) * count));
  if (l.kv_dtype != DType::kI8) {
    const size_t n = size_t{count} * d;
    PackFloats(in.keys, n, l.kv_dtype, w.Reserve(n * DTypeSize(l.kv_dtype)));
    PackFloats(in.values, n, l.kv_dtype, w.Reserve(n * DTypeSize(l.kv_dtype)));
    return;
  }
  const uint32_t q = count - tail;
  EncodeI8Keys(in.keys, q, d, l.quant_group, w);
  EncodeI8Values(in.values, q, d, w);
  const size_t off = size_t{q} * d, n = size_t{tail} * d;
  PackFloats(in.keys + off, n, DType::kF16, w.Reserve(n * 2));
  PackFloats(in.values + off, n, DType::kF16, w.Reserve(n * 2));
}

}  // namespace

std::vector<uint8_t> EncodeManifest(const Manifest& m) {
  std::vector<uint8_t> out(kManifestFixedSize + m.method.size());
  ByteWriter w(absl::MakeSpan(out));
  w.Put<uint64_t>(m.model_fingerprint);
  w.Put<uint32_t>(m.n_layers);
  w.Put<uint16_t>(m.n_kv_heads);
  w.Put<uint16_t>(m.n_query_heads);
  w.Put<uint16_t>(m.head_dim);
  w.Put<uint8_t>(static_cast<uint8_t>(m.kv_dtype));
  w.Put<uint8_t>(static_cast<uint8_t>(m.vote_dtype));
  w.Put<uint32_t>(m.original_length);
  w.Put<uint16_t>(m.quant_group);
  w.Put<uint16_t>(static_cast<uint16_t>(m.method.size()));
  w.Put<float>(m.budget);
  w.Put<uint64_t>(m.entry_budget);
  w.PutBytes(m.method.data(), m.method.size());
  return out;
}

absl::StatusOr<Manifest> DecodeManifest(absl::Span<const uint8_t> payload, const Limits& limits) {
  ByteReader r(payload);
  Manifest m;
  uint8_t kv = 0, vote = 0;
  uint16_t method_len = 0;
  r.Get(&m.model_fingerprint);
  r.Get(&m.n_layers);
  r.Get(&m.n_kv_heads);
  r.Get(&m.n_query_heads);
  r.Get(&m.head_dim);
  r.Get(&kv);
  r.Get(&vote);
  r.Get(&m.original_length);
  r.Get(&m.quant_group);
  r.Get(&method_len);
  r.Get(&m.budget);
  r.Get(&m.entry_budget);
  if (r.failed()) return Malformed("manifest: truncated fixed fields");
  if (method_len > limits.max_method_length) return Malformed("manifest: method string too long");
  const uint8_t* method = r.Take(method_len);
  if (method == nullptr) return Malformed("manifest: truncated method string");
  if (r.remaining() != 0) return Malformed("manifest: trailing bytes");
  m.method.assign(reinterpret_cast<const char*>(method), method_len);
  if (!IsValidDType(kv) || !IsValidDType(vote)) return Malformed("manifest: unknown dtype");
  m.kv_dtype = static_cast<DType>(kv);
  m.vote_dtype = static_cast<DType>(vote);
  if (m.n_layers == 0 || m.n_layers > limits.max_layers) return Malformed("manifest: n_layers");
  if (m.n_kv_heads == 0 || m.n_kv_heads > limits.max_kv_heads) return Malformed("manifest: n_kv_heads");
  if (m.n_query_heads == 0 || m.n_query_heads % m.n_kv_heads != 0) {
    return Malformed("manifest: n_query_heads is not a positive multiple of n_kv_heads");
  }
  if (m.head_dim == 0 || m.head_dim > limits.max_head_dim) return Malformed("manifest: head_dim");
  if (m.original_length == 0) return Malformed("manifest: original_length is 0");
  if (m.kv_dtype == DType::kI8 ? (m.quant_group < kMinQuantGroup || m.quant_group > kMaxQuantGroup)
                               : m.quant_group != 0) {
    return Malformed("manifest: quant_group does not fit the key dtype");
  }
  if (!(m.budget > 0.0f && m.budget <= 1.0f)) return Malformed("manifest: budget outside (0, 1]");
  if (m.vote_dtype != DType::kF32 && m.vote_dtype != DType::kF16) {
    return Malformed("manifest: vote dtype must be f32 or f16");
  }
  return m;
}

std::vector<uint8_t> EncodeCommit(const Commit& c) {
  std::vector<uint8_t> out(kCommitSize);
  ByteWriter w(absl::MakeSpan(out));
  w.Put<uint32_t>(c.n_layers);
  w.Put<uint64_t>(c.total_entries);
  w.Put<uint64_t>(c.stream_digest);
  return out;
}

absl::StatusOr<Commit> DecodeCommit(absl::Span<const uint8_t> payload) {
  if (payload.size() != kCommitSize) {
    return Malformed(absl::StrCat("commit: ", payload.size(), " bytes, expected ", kCommitSize));
  }
  ByteReader r(payload);
  Commit c;
  r.Get(&c.n_layers);
  r.Get(&c.total_entries);
  r.Get(&c.stream_digest);
  return c;
}

std::vector<uint8_t> EncodeAbort(const Abort& a) {
  const size_t len = std::min<size_t>(a.message.size(), 0xffff);
  std::vector<uint8_t> out(4 + 2 + len);
  ByteWriter w(absl::MakeSpan(out));
  w.Put<uint32_t>(static_cast<uint32_t>(a.code));
  w.Put<uint16_t>(static_cast<uint16_t>(len));
  w.PutBytes(a.message.data(), len);
  return out;
}

absl::StatusOr<Abort> DecodeAbort(absl::Span<const uint8_t> payload, const Limits& limits) {
  ByteReader r(payload);
  uint32_t code = 0;
  uint16_t len = 0;
  r.Get(&code);
  r.Get(&len);
  if (r.failed()) return Malformed("abort: truncated");
  if (len > limits.max_message_length) return Malformed("abort: message too long");
  const uint8_t* msg = r.Take(len);
  if (msg == nullptr) return Malformed("abort: truncated message");
  if (r.remaining() != 0) return Malformed("abort: trailing bytes");
  if (code == 0 || code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return Malformed(absl::StrCat("abort: status code ", code, " is not an error code"));
  }
  return Abort{static_cast<absl::StatusCode>(code), std::string(reinterpret_cast<const char*>(msg), len)};
}

absl::StatusOr<uint64_t> LayerPayloadSize(const LayerLayout& layout) {
  KVWIRE_RETURN_IF_ERROR(CheckLayout(layout, Limits{}, absl::StatusCode::kInvalidArgument));
  return PayloadSizeUnchecked(layout);
}

absl::Status EncodeLayer(const LayerLayout& layout, absl::Span<const HeadInput> heads,
                         std::vector<uint8_t>* out) {
  KVWIRE_ASSIGN_OR_RETURN(const uint64_t size, LayerPayloadSize(layout));
  if (heads.size() != layout.counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeLayer: ", heads.size(),
                                                   " heads given, layout has ", layout.counts.size()));
  }
  out->resize(size);
  ByteWriter w(absl::MakeSpan(*out));
  w.Put<uint32_t>(layout.layer);
  w.Put<uint16_t>(static_cast<uint16_t>(layout.counts.size()));
  w.Put<uint16_t>(layout.head_dim);
  w.Put<uint8_t>(static_cast<uint8_t>(layout.kv_dtype));
  w.Put<uint8_t>(static_cast<uint8_t>(layout.vote_dtype));
  w.Put<uint16_t>(layout.quant_group);
  for (size_t h = 0; h < heads.size(); ++h) {
    w.Put<uint32_t>(layout.counts[h]);
    w.Put<uint32_t>(layout.tails[h]);
  }
  for (size_t h = 0; h < heads.size(); ++h) EncodeHead(layout, layout.counts[h], layout.tails[h], heads[h], w);
  return absl::OkStatus();
}

absl::StatusOr<LayerView> DecodeLayer(absl::Span<const uint8_t> payload, const Limits& limits) {
  ByteReader r(payload);
  LayerView view;
  LayerLayout& l = view.layout;
  uint16_t n_heads = 0;
  uint8_t kv = 0, vote = 0;
  r.Get(&l.layer);
  r.Get(&n_heads);
  r.Get(&l.head_dim);
  r.Get(&kv);
  r.Get(&vote);
  r.Get(&l.quant_group);
  if (r.failed()) return Malformed("layer: truncated fixed fields");
  if (!IsValidDType(kv) || !IsValidDType(vote)) return Malformed("layer: unknown dtype");
  l.kv_dtype = static_cast<DType>(kv);
  l.vote_dtype = static_cast<DType>(vote);
  if (n_heads == 0 || n_heads > limits.max_kv_heads) return Malformed("layer: KV head count");
  // n_heads is bounded above, so this table read is bounded before any allocation.
  if (r.remaining() < size_t{8} * n_heads) return Malformed("layer: truncated head table");
  l.counts.resize(n_heads);
  l.tails.resize(n_heads);
  for (size_t h = 0; h < n_heads; ++h) {
    r.Get(&l.counts[h]);
    r.Get(&l.tails[h]);
  }
  KVWIRE_RETURN_IF_ERROR(CheckLayout(l, limits, absl::StatusCode::kDataLoss));
  if (PayloadSizeUnchecked(l) != payload.size()) {
    return Malformed(absl::StrCat("layer: payload is ", payload.size(), " bytes, layout needs ",
                                  PayloadSizeUnchecked(l)));
  }
  view.heads.resize(n_heads);
  for (size_t h = 0; h < n_heads; ++h) {
    const HeadSizes s = SizesFor(l, l.counts[h], l.tails[h]);
    HeadView& hv = view.heads[h];
    hv.count = l.counts[h];
    hv.tail = l.tails[h];
    auto take = [&r](uint64_t n) { return absl::MakeConstSpan(r.Take(n), n); };
    hv.positions = take(s.positions);
    hv.votes = take(s.votes);
    hv.keys = take(s.keys);
    if (l.kv_dtype == DType::kI8) hv.key_scales = take(s.key_scales);
    hv.values = take(s.values);
    if (l.kv_dtype == DType::kI8) {
      hv.value_scales = take(s.value_scales);
      hv.tail_keys = take(s.tail_keys);
      hv.tail_values = take(s.tail_values);
    }
  }
  return view;
}

namespace {

void ExpandI8(const LayerLayout& l, const HeadView& hv, float* keys, float* values) {
  const int d = l.head_dim;
  const uint32_t q = hv.count - hv.tail;
  for (uint32_t i = 0; i < q; ++i) {
    for (int c = 0; c < d; ++c) {
      uint16_t ks;
      std::memcpy(&ks, hv.key_scales.data() + 2 * (size_t{i / l.quant_group} * d + c), 2);
      keys[size_t{i} * d + c] = static_cast<int8_t>(hv.keys[size_t{i} * d + c]) * HalfToFloat(ks);
    }
    uint16_t vs;
    std::memcpy(&vs, hv.value_scales.data() + 2 * size_t{i}, 2);
    const float vscale = HalfToFloat(vs);
    for (int c = 0; c < d; ++c) {
      values[size_t{i} * d + c] = static_cast<int8_t>(hv.values[size_t{i} * d + c]) * vscale;
    }
  }
  UnpackFloats(hv.tail_keys.data(), size_t{hv.tail} * d, DType::kF16, keys + size_t{q} * d);
  UnpackFloats(hv.tail_values.data(), size_t{hv.tail} * d, DType::kF16, values + size_t{q} * d);
}

}  // namespace

absl::Status ExpandHead(const LayerLayout& layout, const HeadView& head, int32_t* positions,
                        float* log_votes, float* keys, float* values) {
  if (!head.positions.empty()) std::memcpy(positions, head.positions.data(), head.positions.size());
  UnpackFloats(head.votes.data(), head.count, layout.vote_dtype, log_votes);
  for (uint32_t i = 0; i < head.count; ++i) {
    if (!std::isfinite(log_votes[i])) {
      return absl::DataLossError(absl::StrCat("layer ", layout.layer, ": log-vote ", i,
                                              " is not finite"));
    }
  }
  if (layout.kv_dtype == DType::kI8) {
    ExpandI8(layout, head, keys, values);
  } else {
    const size_t n = size_t{head.count} * layout.head_dim;
    UnpackFloats(head.keys.data(), n, layout.kv_dtype, keys);
    UnpackFloats(head.values.data(), n, layout.kv_dtype, values);
  }
  return absl::OkStatus();
}

}  // namespace kvwire::format
