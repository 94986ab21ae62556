#include "prefill_node/device_prefill.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/config.h"
#include "prefill_node/stage_clock.h"

#if KVWIRE_HAVE_CUDA
#include "kernels/cuda/device.h"
#include "kernels/cuda/model_ops.h"
#include "kvwire/compress/gpu/device_compressor.h"
#include "prefill_node/compressing_prefill.h"
#include "runtime/gpu_runner.h"
#endif

namespace kvwire::prefill {

#if KVWIRE_HAVE_CUDA

struct DevicePrefill::Impl {
  const runtime::Model* model = nullptr;
  int device = 0;  // made current on the calling thread by every call (gRPC threads vary)
  std::string description;
  std::unique_ptr<runtime::GpuRunner> runner;
  std::unique_ptr<runtime::GpuKvCache> cache;  // the prompt's cache; context-length capacity
  // +critical: each layer's output projection, fp32 [hidden][n_heads*head_dim], uploaded on
  // first use and kept (the weights themselves are fp16 in the GpuModel).
  std::vector<kernels::cuda::DeviceBuffer> wo;

  absl::StatusOr<const float*> OutputProjection(kernels::cuda::Context& ctx, int layer) {
    if (wo.empty()) wo.resize(model->config().n_layers);
    if (wo[layer].data() == nullptr) {
      KVWIRE_ASSIGN_OR_RETURN(
          wo[layer], kernels::cuda::ToDevice(ctx, DequantizeOutputProjection(*model, layer)));
    }
    return wo[layer].as<float>();
  }
};

absl::StatusOr<std::vector<std::unique_ptr<DevicePrefill>>> DevicePrefill::CreateWorkers(
    const runtime::Model& model, int device, int n) {
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("need at least one worker, got ", n));
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::ProbeDevice());
  KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<const runtime::GpuModel> weights,
                          runtime::GpuModel::Upload(model, {.device = device}));
  std::vector<std::unique_ptr<DevicePrefill>> workers;
  for (int i = 0; i < n; ++i) {
    auto impl = std::make_unique<Impl>();
    impl->model = &model;
    impl->device = device;
    KVWIRE_ASSIGN_OR_RETURN(impl->runner, runtime::GpuRunner::Create(weights));
    impl->description =
        absl::StrCat("cuda:", device, " ", impl->runner->context().properties().name);
    KVWIRE_ASSIGN_OR_RETURN(impl->cache, runtime::GpuKvCache::Create(*weights, 0));
    workers.push_back(std::unique_ptr<DevicePrefill>(new DevicePrefill(std::move(impl))));
  }
  return workers;
}

absl::Status DevicePrefill::CompressesOnDevice(const compress::Compressor& compressor) const {
  if (!compressor.streams_layers()) {
    return absl::UnimplementedError("the global allocator needs every layer on the host");
  }
  return compress::gpu::DeviceCompressor::Supports(compressor.spec());
}

absl::StatusOr<std::vector<float>> DevicePrefill::Prefill(absl::Span<const int32_t> prompt,
                                                          const runtime::ForwardOptions& options,
                                                          cache::KvCache* full) {
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::UseDevice(impl_->device));
  runtime::GpuForwardOptions o;
  o.window = options.window;
  o.on_layer = options.on_layer;
  o.all_logits = options.all_logits;
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits,
                          impl_->runner->Prefill(prompt, o, impl_->cache.get()));
  if (full != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(*full, impl_->cache->Download());
  }
  return logits;
}

absl::StatusOr<std::vector<float>> DevicePrefill::RunCompressed(
    absl::Span<const int32_t> prompt, const compress::Compressor& compressor, const Sink& sink,
    DevicePrefillTimes* times) {
  KVWIRE_RETURN_IF_ERROR(CompressesOnDevice(compressor));
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::UseDevice(impl_->device));
  KVWIRE_ASSIGN_OR_RETURN(
      const compress::gpu::DeviceCompressor device_compressor,
      compress::gpu::DeviceCompressor::Create(compressor.spec(), compressor.kept_fraction()));
  const runtime::ModelConfig& cfg = impl_->model->config();
  DevicePrefillTimes local;
  DevicePrefillTimes* t = times != nullptr ? times : &local;
  runtime::GpuForwardOptions o;
  o.window = static_cast<int>(device_compressor.QueryRows(static_cast<int64_t>(prompt.size())));
  o.on_layer_device = [&](const runtime::GpuPrefillLayer& gl) -> absl::Status {
    const auto start = Clock::now();
    compress::gpu::DeviceLayerInput in;
    in.layer = gl.layer;
    in.n_tokens = gl.n_tokens;
    in.first_position = gl.first_position;
    in.n_heads = cfg.n_heads;
    in.n_kv_heads = cfg.n_kv_heads;
    in.head_dim = cfg.head_dim;
    in.keys = gl.keys;
    in.values = gl.values;
    in.window = gl.window;
    in.window_queries = gl.window_queries;
    if (compressor.spec().critical) {
      KVWIRE_ASSIGN_OR_RETURN(in.wo, impl_->OutputProjection(*gl.ctx, gl.layer));
      in.hidden = cfg.hidden;
    }
    compress::LayerStats stats;
    KVWIRE_ASSIGN_OR_RETURN(cache::LayerCache layer,
                            device_compressor.CompressLayer(*gl.ctx, in, &stats));
    t->compress_seconds += SecondsSince(start);
    t->kept_entries += stats.kept;
    const auto sink_start = Clock::now();
    absl::Status sunk = sink(gl.layer, std::move(layer), stats);
    t->sink_seconds += SecondsSince(sink_start);
    return sunk;
  };
  return impl_->runner->Prefill(prompt, o, impl_->cache.get());
}

#else  // !KVWIRE_HAVE_CUDA

struct DevicePrefill::Impl {
  std::string description;
};

absl::StatusOr<std::vector<std::unique_ptr<DevicePrefill>>> DevicePrefill::CreateWorkers(
    const runtime::Model&, int device, int) {
  return absl::FailedPreconditionError(
      absl::StrCat("--gpu ", device,
                   ": this build has no CUDA (configure with -DKVWIRE_CUDA=ON "
                   "on a machine with the CUDA toolkit)"));
}

absl::Status DevicePrefill::CompressesOnDevice(const compress::Compressor&) const {
  return absl::FailedPreconditionError("this build has no CUDA");
}

absl::StatusOr<std::vector<float>> DevicePrefill::Prefill(absl::Span<const int32_t>,
                                                          const runtime::ForwardOptions&,
                                                          cache::KvCache*) {
  return absl::FailedPreconditionError("this build has no CUDA");
}

absl::StatusOr<std::vector<float>> DevicePrefill::RunCompressed(absl::Span<const int32_t>,
                                                                const compress::Compressor&,
                                                                const Sink&, DevicePrefillTimes*) {
  return absl::FailedPreconditionError("this build has no CUDA");
}

#endif  // KVWIRE_HAVE_CUDA

DevicePrefill::DevicePrefill(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DevicePrefill::~DevicePrefill() = default;

const std::string& DevicePrefill::description() const { return impl_->description; }

}  // namespace kvwire::prefill
