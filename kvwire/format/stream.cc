#include "kvwire/format/stream.h"

#include "absl/strings/str_cat.h"

namespace kvwire::format {

uint64_t StreamDigest::Value() const {
  return HashBytes(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(hashes_.data()),
                                       hashes_.size() * sizeof(uint64_t)));
}

absl::Status StreamChecker::Fail(absl::Status status) {
  state_ = State::kFailed;
  return status;
}

absl::Status StreamChecker::CheckNext(const FrameHeader& header, absl::string_view what) {
  if (state_ == State::kFailed) return absl::DataLossError("stream already failed");
  if (state_ == State::kCommitted || state_ == State::kAborted) {
    return Fail(absl::DataLossError(absl::StrCat(what, " frame after the stream ended")));
  }
  if (state_ != State::kExpectManifest && header.request_id != request_id_) {
    return Fail(absl::DataLossError(absl::StrCat(what, " frame for request ", header.request_id,
                                                 " in the stream of request ", request_id_)));
  }
  if (header.sequence != next_sequence_) {
    return Fail(absl::DataLossError(absl::StrCat("sequence gap: expected ", next_sequence_,
                                                 ", got ", header.sequence, " (", what, ")")));
  }
  ++next_sequence_;
  return absl::OkStatus();
}

absl::Status StreamChecker::OnManifest(const FrameHeader& header, const Manifest& manifest) {
  if (state_ == State::kExpectLayerOrCommit) {
    return Fail(absl::DataLossError("second manifest in one stream"));
  }
  if (auto s = CheckNext(header, "manifest"); !s.ok()) return s;
  request_id_ = header.request_id;
  manifest_ = manifest;
  layer_seen_.assign(manifest.n_layers, false);
  state_ = State::kExpectLayerOrCommit;
  return absl::OkStatus();
}

absl::Status StreamChecker::OnLayer(const FrameHeader& header, const LayerLayout& layout) {
  if (state_ == State::kExpectManifest) return Fail(absl::DataLossError("layer before manifest"));
  if (auto s = CheckNext(header, "layer"); !s.ok()) return s;
  const Manifest& m = *manifest_;
  if (layout.layer >= m.n_layers) {
    return Fail(absl::DataLossError(
        absl::StrCat("layer index ", layout.layer, " >= n_layers ", m.n_layers)));
  }
  if (layer_seen_[layout.layer]) {
    return Fail(absl::DataLossError(absl::StrCat("layer ", layout.layer, " sent twice")));
  }
  if (layout.counts.size() != m.n_kv_heads || layout.head_dim != m.head_dim ||
      layout.kv_dtype != m.kv_dtype || layout.vote_dtype != m.vote_dtype ||
      layout.quant_group != m.quant_group) {
    return Fail(absl::DataLossError(
        absl::StrCat("layer ", layout.layer, " shape or dtype disagrees with the manifest")));
  }
  uint64_t entries = 0;
  for (uint32_t c : layout.counts) {
    if (c > m.original_length) {
      return Fail(absl::DataLossError(absl::StrCat("layer ", layout.layer, " head has ", c,
                                                   " entries for a ", m.original_length,
                                                   "-token prompt")));
    }
    entries += c;
  }
  if (entries_ + entries > m.entry_budget) {
    return Fail(absl::DataLossError(absl::StrCat("stream exceeds its entry budget of ",
                                                 m.entry_budget, " at layer ", layout.layer)));
  }
  entries_ += entries;
  layer_seen_[layout.layer] = true;
  ++layers_received_;
  digest_.Add(header.payload_hash);
  return absl::OkStatus();
}

absl::Status StreamChecker::OnCommit(const FrameHeader& header, const Commit& commit) {
  if (state_ == State::kExpectManifest) return Fail(absl::DataLossError("commit before manifest"));
  if (auto s = CheckNext(header, "commit"); !s.ok()) return s;
  if (layers_received_ != manifest_->n_layers || commit.n_layers != layers_received_) {
    return Fail(absl::DataLossError(absl::StrCat("commit after ", layers_received_, " of ",
                                                 manifest_->n_layers, " layers (commit says ",
                                                 commit.n_layers, ")")));
  }
  if (commit.total_entries != entries_) {
    return Fail(absl::DataLossError(absl::StrCat("commit counts ", commit.total_entries,
                                                 " entries, received ", entries_)));
  }
  if (commit.stream_digest != digest_.Value()) {
    return Fail(absl::DataLossError("commit stream digest does not match the layers received"));
  }
  state_ = State::kCommitted;
  return absl::OkStatus();
}

absl::Status StreamChecker::OnAbort(const FrameHeader& header) {
  if (state_ == State::kExpectManifest) return Fail(absl::DataLossError("abort before manifest"));
  if (auto s = CheckNext(header, "abort"); !s.ok()) return s;
  state_ = State::kAborted;
  return absl::OkStatus();
}

}  // namespace kvwire::format
