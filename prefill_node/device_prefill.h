// prefill_node/device_prefill.h — the prefill node's model on a CUDA device (kvwire-prefill --gpu).
//
//   auto workers = DevicePrefill::CreateWorkers(model, /*device=*/0, /*n=*/2);  // weights once
//   CompressingPrefill prefill(&cpu_runner);
//   prefill.set_device(workers->at(0).get());
//   prefill.Run(prompt, compressor, sink);   // the forward pass now runs on the device
//
// Two ways a compressed prefill runs on the device:
//   * on the device end to end, when the device compressor runs the method
//     (compress::gpu::DeviceCompressor::Supports: window/snapkv/defensive scores, uniform or
//     adaptive budgets, merging): after each layer its K/V and window queries are scored,
//     selected and merged where they are, and only the kept entries (about b of the layer) are
//     copied to the host for the sink;
//   * otherwise (h2o, +critical, gate, recon, global, ...) each layer's K/V, window queries and
//     attention input are copied to the host and the CPU compressor of CompressingPrefill runs
//     on them, as with the CPU runner.
// The full prompt cache is copied back only when a method needs it (recon).
//
// Built in every configuration: without CUDA, CreateWorkers fails with FAILED_PRECONDITION
// ("this build has no CUDA"); without a usable device, with UNAVAILABLE naming the CUDA error.
// Thread-safety: a DevicePrefill is one worker (its own stream and device cache), used by one
// call at a time; workers from one CreateWorkers share the device weights and may run at once.
#ifndef KVWIRE_PREFILL_NODE_DEVICE_PREFILL_H_
#define KVWIRE_PREFILL_NODE_DEVICE_PREFILL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/compressor.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::prefill {

// Timings of a device prefill, filled by RunCompressed (seconds).
struct DevicePrefillTimes {
  double compress_seconds = 0;  // on-device compression and the copy of the kept entries
  double sink_seconds = 0;      // inside the sink
  int64_t kept_entries = 0;
};

class DevicePrefill {
 public:
  // `n` workers on CUDA device `device` sharing one upload of `model`'s weights (fp16). The
  // model must outlive the workers.
  static absl::StatusOr<std::vector<std::unique_ptr<DevicePrefill>>> CreateWorkers(
      const runtime::Model& model, int device, int n);
  ~DevicePrefill();
  DevicePrefill(const DevicePrefill&) = delete;
  DevicePrefill& operator=(const DevicePrefill&) = delete;

  // "cuda:<device> <name>", for logs.
  const std::string& description() const;

  // Whether `compressor` runs on the device end to end (RunCompressed); OK or the reason not.
  absl::Status CompressesOnDevice(const compress::Compressor& compressor) const;

  // The prompt's prefill on the device, like runtime::Runner::Prefill: options.on_layer sees
  // host copies of each layer. `full` (may be null) receives the prompt's whole cache.
  absl::StatusOr<std::vector<float>> Prefill(absl::Span<const int32_t> prompt,
                                             const runtime::ForwardOptions& options,
                                             cache::KvCache* full);

  // The prompt's prefill with every layer compressed on the device as it finishes; `sink`
  // receives the compressed layer (host) and its statistics. Requires CompressesOnDevice.
  using Sink = std::function<absl::Status(int layer, cache::LayerCache layer_cache,
                                          const compress::LayerStats& stats)>;
  absl::StatusOr<std::vector<float>> RunCompressed(absl::Span<const int32_t> prompt,
                                                   const compress::Compressor& compressor,
                                                   const Sink& sink, DevicePrefillTimes* times);

 private:
  struct Impl;
  explicit DevicePrefill(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_DEVICE_PREFILL_H_
