// decode_node/device_decoder.h — the decode node's model on a CUDA device (kvwire-decode --gpu).
//
//   auto device = DeviceDecoder::Create(model, /*device=*/0);       // weights uploaded once
//   auto seq = (*device)->Install(received_cache, /*extra_entries=*/max_tokens);
//   auto logits = (*device)->DecodeBatch({{seq->get(), token, position}, ...});
//
// Each request's (possibly compressed, ragged, voted) cache is uploaded once when its stream has
// arrived and stays on the device, growing by one entry per head and token; a decode step for
// all active requests is one batched forward pass (weight products over every request's token,
// attention per request over its own cache) whose only host traffic is token ids in and logits
// out. Decode-time merging (a decode budget) runs on a host copy of the request's cache kept in
// step with the device copy (mirror_step.h): each step's new entries are appended to it, the
// compaction hook merges there, and the heads it changed are uploaded again.
//
// Built in every configuration: without CUDA, Create fails with FAILED_PRECONDITION ("this build
// has no CUDA"); without a usable device, with UNAVAILABLE naming the CUDA error.
// Thread-safety: all methods are thread-safe (one mutex: installs wait for a running step).
// A Sequence must not outlive its DeviceDecoder.
#ifndef KVWIRE_DECODE_NODE_DEVICE_DECODER_H_
#define KVWIRE_DECODE_NODE_DEVICE_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::decode {

class DeviceDecoder {
 public:
  // One request's cache on the device; destroying it frees that memory.
  class Sequence {
   public:
    ~Sequence();
    Sequence(const Sequence&) = delete;
    Sequence& operator=(const Sequence&) = delete;
    int32_t original_length() const;

   private:
    friend class DeviceDecoder;
    struct State;
    explicit Sequence(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
  };

  struct Step {
    Sequence* sequence = nullptr;
    int32_t token = 0;
    int32_t position = 0;  // RoPE position (runtime::DecodePosition)
    // Decode-time merging (both or neither): the host copy of this sequence's cache, equal to the
    // device copy, and the per-layer hook that compacts it (on_layer, window >= 1 for the step's
    // query). Each layer's new entries are appended to `mirror` before on_layer runs; heads it
    // changed are uploaded to the device again.
    cache::KvCache* mirror = nullptr;
    const runtime::ForwardOptions* compaction = nullptr;
  };

  // `model` must outlive the decoder.
  static absl::StatusOr<std::unique_ptr<DeviceDecoder>> Create(const runtime::Model& model,
                                                               int device);
  ~DeviceDecoder();
  DeviceDecoder(const DeviceDecoder&) = delete;
  DeviceDecoder& operator=(const DeviceDecoder&) = delete;

  // "cuda:<device> <name>", for logs.
  const std::string& description() const;

  // Uploads `cache` (the model's shape) with room for `extra_entries` more entries per head.
  // INVALID_ARGUMENT for a cache of another shape; RESOURCE_EXHAUSTED when the device is full.
  absl::StatusOr<std::unique_ptr<Sequence>> Install(const cache::KvCache& cache,
                                                    int64_t extra_entries);

  // What DecodeBatch checks before touching anything; OK when `step` would be accepted.
  absl::Status Validate(const Step& step);

  // One token per step, appended to its sequence; fp32 [vocab] logits per step, in order. Every
  // step is validated first: an error leaves every sequence unchanged.
  absl::StatusOr<std::vector<std::vector<float>>> DecodeBatch(absl::Span<const Step> steps);

 private:
  struct Impl;
  explicit DeviceDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvwire::decode

#endif  // KVWIRE_DECODE_NODE_DEVICE_DECODER_H_
