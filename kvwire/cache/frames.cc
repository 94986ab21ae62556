#include "kvwire/cache/frames.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"

namespace kvwire::cache {

using format::FrameType;

CacheStreamEncoder::CacheStreamEncoder(uint64_t request_id, format::Manifest manifest,
                                       EncodeOptions options)
    : request_id_(request_id), manifest_(std::move(manifest)), options_(options) {}

std::vector<uint8_t> CacheStreamEncoder::ManifestFrame() {
  return format::AssembleFrame(FrameType::kManifest, request_id_, next_sequence_++,
                               format::EncodeManifest(manifest_));
}

absl::StatusOr<std::vector<uint8_t>> CacheStreamEncoder::LayerFrame(uint32_t layer,
                                                                    const LayerCache& cache) {
  const int d = manifest_.head_dim;
  if (layer >= manifest_.n_layers || cache.heads.size() != manifest_.n_kv_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " with ", cache.heads.size(), " heads does not fit the manifest"));
  }
  format::LayerLayout layout;
  layout.layer = layer;
  layout.head_dim = manifest_.head_dim;
  layout.kv_dtype = manifest_.kv_dtype;
  layout.vote_dtype = manifest_.vote_dtype;
  layout.quant_group = manifest_.quant_group;
  std::vector<format::HeadInput> inputs;
  uint64_t entries = 0;
  for (const HeadSegment& seg : cache.heads) {
    const size_t n = seg.size();
    if (seg.log_votes.size() != n || seg.keys.size() != n * d || seg.values.size() != n * d) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": inconsistent segment"));
    }
    layout.counts.push_back(static_cast<uint32_t>(n));
    const bool i8 = manifest_.kv_dtype == format::DType::kI8;
    layout.tails.push_back(i8 ? std::min<uint32_t>(n, options_.fp16_tail) : 0);
    inputs.push_back({seg.positions.data(), seg.log_votes.data(), seg.keys.data(), seg.values.data()});
    entries += n;
  }
  std::vector<uint8_t> payload;
  KVWIRE_RETURN_IF_ERROR(format::EncodeLayer(layout, inputs, &payload));
  uint64_t payload_hash = 0;
  std::vector<uint8_t> frame = format::AssembleFrame(FrameType::kLayer, request_id_,
                                                     next_sequence_++, payload, &payload_hash);
  digest_.Add(payload_hash);
  entries_ += entries;
  ++layers_sent_;
  return frame;
}

std::vector<uint8_t> CacheStreamEncoder::CommitFrame() {
  const format::Commit commit{layers_sent_, entries_, digest_.Value()};
  return format::AssembleFrame(FrameType::kCommit, request_id_, next_sequence_++,
                               format::EncodeCommit(commit));
}

std::vector<uint8_t> CacheStreamEncoder::AbortFrame(const absl::Status& status) {
  const format::Abort abort{status.ok() ? absl::StatusCode::kUnknown : status.code(),
                            std::string(status.message())};
  return format::AssembleFrame(FrameType::kAbort, request_id_, next_sequence_++,
                               format::EncodeAbort(abort));
}

format::Manifest ManifestFor(const KvCache& cache, uint16_t n_query_heads, format::DType kv_dtype,
                             std::string method, float budget) {
  format::Manifest m;
  m.n_layers = cache.shape.n_layers;
  m.n_kv_heads = static_cast<uint16_t>(cache.shape.n_kv_heads);
  m.n_query_heads = n_query_heads;
  m.head_dim = static_cast<uint16_t>(cache.shape.head_dim);
  m.kv_dtype = kv_dtype;
  m.quant_group = kv_dtype == format::DType::kI8 ? 64 : 0;
  m.original_length = static_cast<uint32_t>(cache.original_length);
  m.budget = budget;
  m.entry_budget = cache.TotalEntries();
  m.method = std::move(method);
  return m;
}

absl::StatusOr<CacheAssembler::Event> CacheAssembler::OnFrame(absl::Span<const uint8_t> frame) {
  if (failed_) return absl::DataLossError("stream already failed; frame rejected");
  absl::StatusOr<Event> event = Consume(frame);
  if (!event.ok()) {
    failed_ = true;
    cache_ = KvCache{};
  }
  return event;
}

absl::StatusOr<CacheAssembler::Event> CacheAssembler::Consume(absl::Span<const uint8_t> frame) {
  KVWIRE_ASSIGN_OR_RETURN(const format::FrameView view, format::DecodeFrame(frame, limits_));
  const format::FrameHeader& h = view.header;
  switch (h.type) {
    case FrameType::kManifest: {
      KVWIRE_ASSIGN_OR_RETURN(format::Manifest m, format::DecodeManifest(view.payload, limits_));
      KVWIRE_RETURN_IF_ERROR(checker_.OnManifest(h, m));
      const CacheShape shape{static_cast<int>(m.n_layers), m.n_kv_heads, m.head_dim};
      cache_ = KvCache::Empty(shape, static_cast<int32_t>(m.original_length));
      return Event::kManifest;
    }
    case FrameType::kLayer: {
      KVWIRE_ASSIGN_OR_RETURN(format::LayerView layer, format::DecodeLayer(view.payload, limits_));
      KVWIRE_RETURN_IF_ERROR(checker_.OnLayer(h, layer.layout));
      KVWIRE_RETURN_IF_ERROR(InstallLayer(layer));
      return Event::kLayer;
    }
    case FrameType::kCommit: {
      KVWIRE_ASSIGN_OR_RETURN(format::Commit c, format::DecodeCommit(view.payload));
      KVWIRE_RETURN_IF_ERROR(checker_.OnCommit(h, c));
      return Event::kCommitted;
    }
    case FrameType::kAbort: {
      KVWIRE_ASSIGN_OR_RETURN(format::Abort a, format::DecodeAbort(view.payload, limits_));
      KVWIRE_RETURN_IF_ERROR(checker_.OnAbort(h));
      abort_status_ = absl::Status(a.code, absl::StrCat("sender aborted: ", a.message));
      cache_ = KvCache{};
      return Event::kAborted;
    }
  }
  return absl::DataLossError("unknown frame type");
}

absl::Status CacheAssembler::InstallLayer(const format::LayerView& view) {
  const format::LayerLayout& layout = view.layout;
  const int d = layout.head_dim;
  LayerCache& dst = cache_.layers[layout.layer];
  for (size_t h = 0; h < view.heads.size(); ++h) {
    const format::HeadView& hv = view.heads[h];
    HeadSegment& seg = dst.heads[h];
    seg.positions.resize(hv.count);
    seg.log_votes.resize(hv.count);
    seg.keys.resize(size_t{hv.count} * d);
    seg.values.resize(size_t{hv.count} * d);
    KVWIRE_RETURN_IF_ERROR(format::ExpandHead(layout, hv, seg.positions.data(),
                                              seg.log_votes.data(), seg.keys.data(),
                                              seg.values.data()));
    for (uint32_t i = 0; i < hv.count; ++i) {
      const int32_t p = seg.positions[i];
      if (p < 0 || p >= cache_.original_length || (i > 0 && p <= seg.positions[i - 1])) {
        return absl::DataLossError(absl::StrCat("layer ", layout.layer, " head ", h, ": position ",
                                                p, " at entry ", i,
                                                " is out of range or not increasing"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<KvCache> CacheAssembler::TakeCache() {
  if (!committed()) return absl::FailedPreconditionError("stream has not committed");
  return std::move(cache_);
}

absl::StatusOr<std::vector<std::vector<uint8_t>>> EncodeCacheFrames(
    uint64_t request_id, const format::Manifest& manifest, const KvCache& cache,
    EncodeOptions options) {
  KVWIRE_RETURN_IF_ERROR(cache.Validate());
  CacheStreamEncoder encoder(request_id, manifest, options);
  std::vector<std::vector<uint8_t>> frames;
  frames.push_back(encoder.ManifestFrame());
  for (size_t l = 0; l < cache.layers.size(); ++l) {
    KVWIRE_ASSIGN_OR_RETURN(auto frame, encoder.LayerFrame(static_cast<uint32_t>(l), cache.layers[l]));
    frames.push_back(std::move(frame));
  }
  frames.push_back(encoder.CommitFrame());
  return frames;
}

}  // namespace kvwire::cache
