// kvwire/cache/frames.h — a KvCache to and from wire-format v1 frame streams.
//
// Sender side, layer-streamed: construct a CacheStreamEncoder with the manifest, send
// ManifestFrame(), then LayerFrame(l, cache.layers[l]) for each layer as soon as it exists (any
// order), then CommitFrame(). Receiver side: feed every received frame to CacheAssembler in
// arrival order; it validates everything (frame integrity, sequencing, shapes against the
// manifest, positions strictly increasing and inside the original prompt, finite log-votes,
// entry budget, commit digest) before installing, and hands out the cache after Commit.
//
// Errors: a malformed or out-of-order frame -> DATA_LOSS, unsupported version/flags ->
// FAILED_PRECONDITION (from format). A sender's Abort ends the stream with the sender's code.
// After any error the assembler rejects further frames and holds no partial cache for use.
// Thread-compatible: one encoder / assembler per stream.
#ifndef KVWIRE_CACHE_FRAMES_H_
#define KVWIRE_CACHE_FRAMES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/format/frame.h"
#include "kvwire/format/messages.h"
#include "kvwire/format/stream.h"

namespace kvwire::cache {

struct EncodeOptions {
  // With int8 keys/values, the most recent `fp16_tail` entries of each head stay fp16.
  uint32_t fp16_tail = 0;
};

class CacheStreamEncoder {
 public:
  // `manifest` describes the whole stream (shape, dtypes, original length, entry budget).
  CacheStreamEncoder(uint64_t request_id, format::Manifest manifest, EncodeOptions options = {});

  std::vector<uint8_t> ManifestFrame();
  // INVALID_ARGUMENT if the layer's shape disagrees with the manifest or its arrays are
  // inconsistent.
  absl::StatusOr<std::vector<uint8_t>> LayerFrame(uint32_t layer, const LayerCache& cache);
  std::vector<uint8_t> CommitFrame();
  std::vector<uint8_t> AbortFrame(const absl::Status& status);

  const format::Manifest& manifest() const { return manifest_; }
  uint64_t entries_sent() const { return entries_; }

 private:
  uint64_t request_id_;
  format::Manifest manifest_;
  EncodeOptions options_;
  uint32_t next_sequence_ = 0;
  uint32_t layers_sent_ = 0;
  uint64_t entries_ = 0;
  format::StreamDigest digest_;
};

// The manifest for sending `cache` as-is (fills shape, original length, entry budget).
format::Manifest ManifestFor(const KvCache& cache, uint16_t n_query_heads, format::DType kv_dtype,
                             std::string method, float budget);

class CacheAssembler {
 public:
  enum class Event { kManifest, kLayer, kCommitted, kAborted };

  explicit CacheAssembler(format::Limits limits = {}) : limits_(limits) {}

  // Consumes exactly one frame (header + payload).
  absl::StatusOr<Event> OnFrame(absl::Span<const uint8_t> frame);

  bool committed() const {
    return !failed_ && checker_.state() == format::StreamChecker::State::kCommitted;
  }
  bool failed() const { return failed_; }
  // The sender's reason when the stream ended in an Abort frame.
  const absl::Status& abort_status() const { return abort_status_; }
  const format::StreamChecker& checker() const { return checker_; }
  // The installed cache; FAILED_PRECONDITION unless the stream committed. Moves it out.
  absl::StatusOr<KvCache> TakeCache();

 private:
  absl::StatusOr<Event> Consume(absl::Span<const uint8_t> frame);
  absl::Status InstallLayer(const format::LayerView& view);

  format::Limits limits_;
  format::StreamChecker checker_;
  KvCache cache_;
  absl::Status abort_status_;
  bool failed_ = false;
};

// Convenience for tests and tools: the whole stream for `cache` as a list of frames.
absl::StatusOr<std::vector<std::vector<uint8_t>>> EncodeCacheFrames(
    uint64_t request_id, const format::Manifest& manifest, const KvCache& cache,
    EncodeOptions options = {});

}  // namespace kvwire::cache

#endif  // KVWIRE_CACHE_FRAMES_H_
