#include "decode_node/device_decoder.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "decode_node/mirror_step.h"
#include "kvwire/base/status.h"
#include "kvwire/config.h"

#if KVWIRE_HAVE_CUDA
#include "kernels/cuda/device.h"
#include "kernels/cuda/model_ops.h"
#include "runtime/gpu_runner.h"
#endif

namespace kvwire::decode {

#if KVWIRE_HAVE_CUDA

struct DeviceDecoder::Sequence::State {
  int device = 0;
  std::unique_ptr<runtime::GpuKvCache> cache;
  ~State() {
    // Freed from whichever thread drops the request: on the cache's device.
    if (cache != nullptr) kernels::cuda::UseDevice(device).IgnoreError();
  }
};

// Every call makes the device current on its thread first: installs come from gRPC threads,
// decode steps from the scheduler's.
struct DeviceDecoder::Impl {
  std::string description;
  int device = 0;
  absl::Mutex mu;
  std::shared_ptr<const runtime::GpuModel> weights;
  std::unique_ptr<runtime::GpuRunner> runner ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<DeviceDecoder>> DeviceDecoder::Create(const runtime::Model& model,
                                                                     int device) {
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::ProbeDevice());
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  KVWIRE_ASSIGN_OR_RETURN(impl->weights, runtime::GpuModel::Upload(model, {.device = device}));
  {
    absl::MutexLock lock(&impl->mu);
    KVWIRE_ASSIGN_OR_RETURN(impl->runner, runtime::GpuRunner::Create(impl->weights));
    impl->description =
        absl::StrCat("cuda:", device, " ", impl->runner->context().properties().name);
  }
  return std::unique_ptr<DeviceDecoder>(new DeviceDecoder(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<DeviceDecoder::Sequence>> DeviceDecoder::Install(
    const cache::KvCache& cache, int64_t extra_entries) {
  if (extra_entries < 0) {
    return absl::InvalidArgumentError(absl::StrCat("extra_entries ", extra_entries, " < 0"));
  }
  int64_t longest = 0;
  for (const cache::LayerCache& layer : cache.layers) {
    for (const auto& head : layer.heads) longest = std::max<int64_t>(longest, head.size());
  }
  absl::MutexLock lock(&impl_->mu);
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::UseDevice(impl_->device));
  auto state = std::make_unique<Sequence::State>();
  state->device = impl_->device;
  KVWIRE_ASSIGN_OR_RETURN(state->cache,
                          runtime::GpuKvCache::Create(*impl_->weights, longest + extra_entries));
  KVWIRE_RETURN_IF_ERROR(state->cache->Install(cache));
  return std::unique_ptr<Sequence>(new Sequence(std::move(state)));
}

absl::StatusOr<std::vector<std::vector<float>>> DeviceDecoder::DecodeBatch(
    absl::Span<const Step> steps) {
  std::vector<runtime::GpuDecodeStep> gpu_steps;
  gpu_steps.reserve(steps.size());
  // Hooks of the merging steps; sized up front so the pointers into it stay valid.
  std::vector<runtime::GpuForwardOptions> hooks(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    if (s.sequence == nullptr) return absl::InvalidArgumentError("decode step without a sequence");
    if ((s.mirror == nullptr) != (s.compaction == nullptr || !s.compaction->on_layer)) {
      return absl::InvalidArgumentError("a merging decode step needs both a mirror and its hook");
    }
    runtime::GpuKvCache* cache = s.sequence->state_->cache.get();
    runtime::GpuDecodeStep step{s.token, s.position, cache, nullptr};
    if (s.mirror != nullptr) {
      const int head_dim = s.mirror->shape.head_dim;
      cache::KvCache* mirror = s.mirror;
      const runtime::ForwardOptions* compaction = s.compaction;
      hooks[i].window = compaction->window;
      hooks[i].on_layer = [mirror, compaction, cache,
                           head_dim](const runtime::PrefillLayer& pl) -> absl::Status {
        cache::LayerCache& layer = mirror->layers[pl.layer];
        const std::vector<size_t> before = AppendStepToMirror(pl, head_dim, &layer);
        KVWIRE_RETURN_IF_ERROR(compaction->on_layer(pl));
        for (int h : HeadsChangedByHook(before, static_cast<size_t>(pl.n_tokens), layer)) {
          KVWIRE_RETURN_IF_ERROR(cache->ReplaceHead(pl.layer, h, layer.heads[h]));
        }
        return absl::OkStatus();
      };
      step.options = &hooks[i];
    }
    gpu_steps.push_back(step);
  }
  absl::MutexLock lock(&impl_->mu);
  KVWIRE_RETURN_IF_ERROR(kernels::cuda::UseDevice(impl_->device));
  return impl_->runner->DecodeBatch(gpu_steps);
}

absl::Status DeviceDecoder::Validate(const Step& step) {
  if (step.sequence == nullptr) return absl::InvalidArgumentError("decode step without a sequence");
  absl::MutexLock lock(&impl_->mu);
  return impl_->runner->ValidateDecode(step.token, step.position,
                                       step.sequence->state_->cache.get());
}

int32_t DeviceDecoder::Sequence::original_length() const {
  return state_->cache->original_length();
}

#else  // !KVWIRE_HAVE_CUDA

struct DeviceDecoder::Sequence::State {
  int32_t original_length = 0;
};

struct DeviceDecoder::Impl {
  std::string description;
};

absl::StatusOr<std::unique_ptr<DeviceDecoder>> DeviceDecoder::Create(const runtime::Model&,
                                                                     int device) {
  return absl::FailedPreconditionError(
      absl::StrCat("--gpu ", device,
                   ": this build has no CUDA (configure with -DKVWIRE_CUDA=ON "
                   "on a machine with the CUDA toolkit)"));
}

absl::StatusOr<std::unique_ptr<DeviceDecoder::Sequence>> DeviceDecoder::Install(
    const cache::KvCache&, int64_t) {
  return absl::FailedPreconditionError("this build has no CUDA");
}

absl::Status DeviceDecoder::Validate(const Step&) {
  return absl::FailedPreconditionError("this build has no CUDA");
}

absl::StatusOr<std::vector<std::vector<float>>> DeviceDecoder::DecodeBatch(absl::Span<const Step>) {
  return absl::FailedPreconditionError("this build has no CUDA");
}

int32_t DeviceDecoder::Sequence::original_length() const { return state_->original_length; }

#endif  // KVWIRE_HAVE_CUDA

DeviceDecoder::Sequence::Sequence(std::unique_ptr<State> state) : state_(std::move(state)) {}
DeviceDecoder::Sequence::~Sequence() = default;
DeviceDecoder::DeviceDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceDecoder::~DeviceDecoder() = default;

const std::string& DeviceDecoder::description() const { return impl_->description; }

}  // namespace kvwire::decode
