// decode_node/decode_scheduler.h — one thread that generates tokens for every active request.
//
// Submit() hands over a request's installed (possibly compressed) cache and the token sampled by
// the prefill node. Each turn the scheduler thread advances every active request by one token in
// a single batched decode step (Runner::DecodeBatch: the weights are read once for all requests,
// attention runs per request over its own cache). Each produced token
// is queued on the request's Generation; the RPC thread drains it with Next(). A request ends at
// an end-of-sequence token ("stop"), at max_tokens ("length"), on Cancel(), or on a runtime error.
// Decode positions continue from the cache's original prompt length (runtime::DecodePosition).
// On a --gpu node the caches live on the device and the batched step runs there
// (device_decoder.h).
//
// Thread-safety: Submit/Cancel/Next are thread-safe. Errors: Next returns the runtime's error,
// CANCELLED after Cancel, DEADLINE_EXCEEDED when no token came in time.
#ifndef KVWIRE_DECODE_NODE_DECODE_SCHEDULER_H_
#define KVWIRE_DECODE_NODE_DECODE_SCHEDULER_H_

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "decode_node/device_decoder.h"
#include "kvwire/base/deadline.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/decode_compactor.h"
#include "kvwire/compress/spec.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"

namespace kvwire::decode {

struct GenerationRequest {
  cache::KvCache cache;
  int32_t first_token = 0;  // sampled by the prefill node; already counted as generated
  int max_tokens = 1;       // including first_token
  runtime::SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;  // end-of-sequence ids (not emitted)
  // Continuous merging while decoding: when > 0, each head is kept within
  // max(HeadBudget(decode_kept_fraction, original_length), protected entries + 1) entries with
  // `spec`'s merge rule (compress::DecodeCompactor). 0 = the cache grows by one entry per token.
  float decode_kept_fraction = 0;
  compress::CompressionSpec spec;
  // With a gate spec and decode_kept_fraction > 0: generated entries are also thinned to that
  // fraction by these learned gates (DecodeCompactor::UseGates). Must outlive the request.
  const compress::GateModel* gates = nullptr;
};

// One request's output queue.
class Generation {
 public:
  // The next token, or nullopt when generation ended (then finish_reason() says why).
  absl::StatusOr<std::optional<int32_t>> Next(Deadline deadline);
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  std::string finish_reason();
  int generated();

 private:
  friend class DecodeScheduler;
  void Push(int32_t token);
  void Finish(absl::Status status, std::string reason);

  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  std::deque<int32_t> tokens_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::string finish_reason_ ABSL_GUARDED_BY(mu_);
  int generated_ ABSL_GUARDED_BY(mu_) = 0;
};

class DecodeScheduler {
 public:
  // With `device` (must outlive the scheduler) every request's cache is uploaded at Submit and
  // all decoding runs there (DeviceDecoder::DecodeBatch); with a decode budget the compactor
  // merges a host copy kept in step with it (mirror_step.h).
  DecodeScheduler(const runtime::Model& model, int n_threads, DeviceDecoder* device = nullptr);
  ~DecodeScheduler();  // cancels what is still running and joins the thread
  DecodeScheduler(const DecodeScheduler&) = delete;
  DecodeScheduler& operator=(const DecodeScheduler&) = delete;

  std::shared_ptr<Generation> Submit(GenerationRequest request);
  size_t active();

 private:
  struct Job {
    GenerationRequest request;
    std::shared_ptr<Generation> output;
    std::unique_ptr<runtime::Sampler> sampler;
    std::unique_ptr<compress::DecodeCompactor> compactor;  // null without decode_kept_fraction
    std::unique_ptr<DeviceDecoder::Sequence> on_device;    // the cache, on a --gpu node
    runtime::ForwardOptions options;
    int32_t next_token = 0;  // fed at the next step
    int generated = 1;       // tokens sampled so far, first_token included
  };
  void Loop();
  void AttachCompactor(Job& job);
  // One token for every active request, in one batched decode step; finished jobs are reset.
  // Steps the runner would refuse end only their own request; a batch that fails after
  // validation ends every request in it.
  void StepAll(std::vector<std::unique_ptr<Job>>& active);
  // `job`'s next step on the device (with its mirror and compaction hook when it merges).
  DeviceDecoder::Step DeviceStep(Job& job, int32_t position);
  // Samples the next token of `job` from `logits` and streams it; false when the job is over.
  bool Advance(Job& job, absl::Span<const float> logits);

  runtime::Runner runner_;  // used only by the scheduler thread
  DeviceDecoder* device_;   // null: the runner decodes
  absl::Mutex mu_;
  std::deque<std::unique_ptr<Job>> incoming_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<size_t> active_{0};
  std::thread thread_;
};

}  // namespace kvwire::decode

#endif  // KVWIRE_DECODE_NODE_DECODE_SCHEDULER_H_
