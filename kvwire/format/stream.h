// kvwire/format/stream.h — ordering rules of a v1 frame stream.
//
// StreamChecker enforces, frame by frame: the first frame is a Manifest with sequence 0; then
// Layer frames with sequences 1, 2, ... (no gaps, no repeats), each layer index in
// [0, n_layers) exactly once, shapes matching the manifest; then a Commit whose sequence follows
// the last layer, whose counts match what arrived and whose digest matches the layer hashes; or
// an Abort at any point after the manifest. Every frame carries the manifest's request id. After
// the first error, or after Commit/Abort, every further frame is rejected.
//
// Errors: DATA_LOSS for any violation. Thread-compatible (one checker per stream).
#ifndef KVWIRE_FORMAT_STREAM_H_
#define KVWIRE_FORMAT_STREAM_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "kvwire/format/frame.h"
#include "kvwire/format/messages.h"

namespace kvwire::format {

class StreamDigest {
 public:
  void Add(uint64_t layer_payload_hash) { hashes_.push_back(layer_payload_hash); }
  uint64_t Value() const;

 private:
  std::vector<uint64_t> hashes_;
};

class StreamChecker {
 public:
  enum class State { kExpectManifest, kExpectLayerOrCommit, kCommitted, kAborted, kFailed };

  absl::Status OnManifest(const FrameHeader& header, const Manifest& manifest);
  absl::Status OnLayer(const FrameHeader& header, const LayerLayout& layout);
  absl::Status OnCommit(const FrameHeader& header, const Commit& commit);
  absl::Status OnAbort(const FrameHeader& header);

  State state() const { return state_; }
  const std::optional<Manifest>& manifest() const { return manifest_; }
  uint64_t entries_received() const { return entries_; }

 private:
  absl::Status CheckNext(const FrameHeader& header, absl::string_view what);
  absl::Status Fail(absl::Status status);

  State state_ = State::kExpectManifest;
  std::optional<Manifest> manifest_;
  uint64_t request_id_ = 0;
  uint32_t next_sequence_ = 0;
  std::vector<bool> layer_seen_;
  uint32_t layers_received_ = 0;
  uint64_t entries_ = 0;
  StreamDigest digest_;
};

}  // namespace kvwire::format

#endif  // KVWIRE_FORMAT_STREAM_H_
