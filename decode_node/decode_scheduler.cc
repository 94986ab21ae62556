#include "decode_node/decode_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kvwire/compress/select.h"

namespace kvwire::decode {
namespace {

// How long the idle scheduler sleeps before re-checking for shutdown.
constexpr absl::Duration kIdleWait = absl::Milliseconds(200);

}  // namespace

absl::StatusOr<std::optional<int32_t>> Generation::Next(Deadline deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !tokens_.empty() || finished_; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline.ToAbslTime())) {
    return absl::DeadlineExceededError("no token generated in time");
  }
  if (!tokens_.empty()) {
    const int32_t token = tokens_.front();
    tokens_.pop_front();
    return std::optional<int32_t>(token);
  }
  if (!status_.ok()) return status_;
  return std::optional<int32_t>();
}

std::string Generation::finish_reason() {
  absl::MutexLock lock(&mu_);
  return finish_reason_;
}

int Generation::generated() {
  absl::MutexLock lock(&mu_);
  return generated_;
}

void Generation::Push(int32_t token) {
  absl::MutexLock lock(&mu_);
  tokens_.push_back(token);
  ++generated_;
}

void Generation::Finish(absl::Status status, std::string reason) {
  absl::MutexLock lock(&mu_);
  finished_ = true;
  status_ = std::move(status);
  finish_reason_ = std::move(reason);
}

DecodeScheduler::DecodeScheduler(const runtime::Model& model, int n_threads, DeviceDecoder* device)
    : runner_(model, n_threads), device_(device), thread_([this] { Loop(); }) {}

DecodeScheduler::~DecodeScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

std::shared_ptr<Generation> DecodeScheduler::Submit(GenerationRequest request) {
  auto job = std::make_unique<Job>();
  job->output = std::make_shared<Generation>();
  job->sampler = std::make_unique<runtime::Sampler>(request.sampling);
  // The prefill node drew first_token with a sampler of the same seed: skip that draw so the
  // whole sequence equals a single-process run.
  const float one_logit = 0.0f;
  job->sampler->Sample(absl::MakeConstSpan(&one_logit, 1));
  job->next_token = request.first_token;
  job->request = std::move(request);
  std::shared_ptr<Generation> output = job->output;
  if (device_ != nullptr) {
    // Room for every token this request may still add.
    absl::StatusOr<std::unique_ptr<DeviceDecoder::Sequence>> seq =
        device_->Install(job->request.cache, job->request.max_tokens);
    if (!seq.ok()) {
      output->Finish(seq.status(), "error");
      return output;
    }
    job->on_device = *std::move(seq);
    if (!(job->request.decode_kept_fraction > 0.0f)) {
      // The host copy is no longer read: keep only its shape and original length. With a decode
      // budget it stays, as the mirror the compactor merges (mirror_step.h).
      job->request.cache =
          cache::KvCache::Empty(job->request.cache.shape, job->request.cache.original_length);
    }
  }
  AttachCompactor(*job);
  absl::MutexLock lock(&mu_);
  incoming_.push_back(std::move(job));
  ++active_;
  return output;
}

size_t DecodeScheduler::active() { return active_.load(); }

void DecodeScheduler::AttachCompactor(Job& job) {
  const GenerationRequest& r = job.request;
  if (!(r.decode_kept_fraction > 0.0f)) return;
  const int64_t protected_entries = r.spec.sinks + r.spec.window + 1;
  const int64_t max_entries = std::max<int64_t>(
      compress::HeadBudget(r.decode_kept_fraction, std::max(1, r.cache.original_length)),
      protected_entries);
  job.compactor = std::make_unique<compress::DecodeCompactor>(
      r.spec, runner_.model().config().n_heads, max_entries);
  if (r.gates != nullptr && r.spec.scorer == compress::ScorerKind::kGate) {
    job.compactor->UseGates(r.gates, r.decode_kept_fraction, runner_.pool());
  }
  job.options.window = 1;  // the step's query, which the compactor scores with
  compress::DecodeCompactor* compactor = job.compactor.get();
  cache::KvCache* cache = &job.request.cache;
  job.options.on_layer = [compactor, cache](const runtime::PrefillLayer& layer) {
    return compactor->OnStep(layer.layer, layer.window_queries, &cache->layers[layer.layer],
                             layer.attn_input);
  };
}

DeviceDecoder::Step DecodeScheduler::DeviceStep(Job& job, int32_t position) {
  DeviceDecoder::Step step{job.on_device.get(), job.next_token, position};
  if (job.compactor != nullptr) {
    step.mirror = &job.request.cache;
    step.compaction = &job.options;
  }
  return step;
}

bool DecodeScheduler::Advance(Job& job, absl::Span<const float> logits) {
  const int32_t token = job.sampler->Sample(logits);
  ++job.generated;
  const auto& stops = job.request.stop_tokens;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
    job.output->Finish(absl::OkStatus(), "stop");
    return false;
  }
  job.output->Push(token);
  if (job.generated >= job.request.max_tokens) {
    job.output->Finish(absl::OkStatus(), "length");
    return false;
  }
  job.next_token = token;
  return true;
}

void DecodeScheduler::StepAll(std::vector<std::unique_ptr<Job>>& active) {
  // Cancelled requests and steps the runner would refuse (checked one by one, before anything
  // changes) leave first; every other request advances one token in a single batched decode step
  // (weights read once for all of them).
  std::vector<runtime::DecodeStep> steps;
  std::vector<DeviceDecoder::Step> device_steps;
  std::vector<Job*> jobs;
  auto drop = [&](std::unique_ptr<Job>& job) {
    job.reset();
    --active_;
  };
  for (auto& job : active) {
    if (job->output->cancelled()) {
      job->output->Finish(absl::CancelledError("generation cancelled"), "cancelled");
      drop(job);
      continue;
    }
    cache::KvCache& cache = job->request.cache;
    const int32_t position = runtime::DecodePosition(cache, job->generated - 1);
    absl::Status valid;
    if (job->on_device != nullptr) {
      const DeviceDecoder::Step step = DeviceStep(*job, position);
      valid = device_->Validate(step);
      if (valid.ok()) device_steps.push_back(step);
    } else {
      valid = runner_.ValidateDecode(job->next_token, position, cache);
      if (valid.ok()) steps.push_back({job->next_token, position, &cache, &job->options});
    }
    if (!valid.ok()) {
      job->output->Finish(valid, "error");
      drop(job);
      continue;
    }
    jobs.push_back(job.get());
  }
  if (jobs.empty()) return;
  // On a --gpu node every job is on the device (Submit installs it there or ends it).
  absl::StatusOr<std::vector<std::vector<float>>> logits =
      device_ != nullptr ? device_->DecodeBatch(device_steps) : runner_.DecodeBatch(steps);
  for (size_t i = 0; i < jobs.size(); ++i) {
    // A step that fails after validation (a device error, a merging hook's error) may have left
    // part of itself in every cache of the batch: those requests end with that error.
    bool more = false;
    if (logits.ok()) {
      more = Advance(*jobs[i], (*logits)[i]);
    } else {
      jobs[i]->output->Finish(logits.status(), "error");
    }
    if (more) continue;
    for (auto& job : active) {
      if (job.get() == jobs[i]) drop(job);
    }
  }
}

void DecodeScheduler::Loop() {
  std::vector<std::unique_ptr<Job>> active;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]()
                          ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !incoming_.empty(); };
      if (active.empty()) mu_.AwaitWithTimeout(absl::Condition(&has_work), kIdleWait);
      if (stop_) break;
      while (!incoming_.empty()) {
        active.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
    }
    StepAll(active);
    active.erase(std::remove(active.begin(), active.end(), nullptr), active.end());
  }
  for (auto& job : active)
    job->output->Finish(absl::CancelledError("decode node stopping"), "cancelled");
  absl::MutexLock lock(&mu_);
  for (auto& job : incoming_)
    job->output->Finish(absl::CancelledError("decode node stopping"), "cancelled");
}

}  // namespace kvwire::decode
