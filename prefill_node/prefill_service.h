// prefill_node/prefill_service.h — the PrefillService: runs the model over a prompt, compresses
// each layer as it finishes and streams it to the granted decode node.
//
// A Prefill call validates its request, waits (bounded by the call's deadline) for one of
// `workers` model runners — at most `queue_limit` calls wait, more are RESOURCE_EXHAUSTED —
// connects to the grant's data-plane address and runs CompressingPrefill with a sink that puts
// each compressed layer on the wire at once (control::KvStreamSender), then commits and returns
// the first token (greedy over the last logits: PrefillRequest carries no sampling parameters)
// and RequestStats. A failure after the stream started sends an Abort frame. BeginShutdown()
// makes new calls UNAVAILABLE; calls in flight finish, or stop with an Abort when the server
// cancels them.
//
// Thread-safety: gRPC calls it from many threads. Error codes (as gRPC statuses):
// INVALID_ARGUMENT (empty prompt, token outside the vocabulary, prompt past the context, kept
// fraction outside (0, 1], bad compression spec or kv dtype, malformed grant), FAILED_PRECONDITION
// (the grant names another transport kind; a gate method on a node started without gates),
// RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (shutting down; decode node unreachable or gone),
// DEADLINE_EXCEEDED, PERMISSION_DENIED / RESOURCE_EXHAUSTED from the decode node's admission,
// CANCELLED.
#ifndef KVWIRE_PREFILL_NODE_PREFILL_SERVICE_H_
#define KVWIRE_PREFILL_NODE_PREFILL_SERVICE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "kvwire/compress/gate.h"
#include "kvwire/compress/spec.h"
#include "kvwire/control/metrics.h"
#include "kvwire/control/synthetic_kv.h"
#include "kvwire/transport/transport.h"
#include "kvwire/v1/prefill.grpc.pb.h"
#include "prefill_node/device_prefill.h"
#include "runtime/model.h"
#include "runtime/runner.h"

namespace kvwire::prefill {

struct PrefillNodeOptions {
  std::string node_id = "prefill-0";
  std::string model_name;
  kvwire::v1::TransportKind transport_kind = kvwire::v1::TRANSPORT_KIND_UCX;
  int workers = 1;       // concurrent prefills (one Runner each)
  int queue_limit = 16;  // calls allowed to wait for a worker
  int threads = 2;       // CPU threads per Runner
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration send_timeout = absl::Seconds(30);       // per frame
  absl::Duration default_deadline = absl::Seconds(120);  // when the caller set none
  std::string default_method = compress::kDefaultMethod;
  // Benchmarks: stream synthetic KV of this shape instead of running the model
  // (synthetic_prefill.h).
  std::optional<control::SyntheticKv> synthetic_kv;
  // Learned gates for `gate/...` methods (must outlive the service and match the model); without
  // them such requests are FAILED_PRECONDITION.
  const compress::GateModel* gates = nullptr;
};

class PrefillServiceImpl final : public kvwire::v1::PrefillService::Service {
 public:
  // `model`, `transport` and `metrics` must outlive the service. `devices`: empty (the model runs
  // on the CPU) or one CUDA worker per options.workers (DevicePrefill::CreateWorkers).
  PrefillServiceImpl(const runtime::Model& model, transport::Transport* transport,
                     control::MetricsRegistry* metrics, PrefillNodeOptions options,
                     std::vector<std::unique_ptr<DevicePrefill>> devices = {});

  grpc::Status Prefill(grpc::ServerContext* context, const kvwire::v1::PrefillRequest* request,
                       kvwire::v1::PrefillResponse* response) override;

  void BeginShutdown() { shutting_down_.store(true); }
  kvwire::v1::NodeInfo Info();

 private:
  struct Metrics {
    control::Counter* requests;
    control::Counter* errors;
    control::Counter* raw_bytes;
    control::Counter* wire_bytes;
    control::Gauge* compression_ratio;
    control::Gauge* queue_depth;
    control::Gauge* in_flight;
    control::Histogram* prefill_ms;
    control::Histogram* transfer_ms;
  };

  // One worker: a CPU runner (thread pool, recon passes, the model itself without a device) and
  // optionally the CUDA device that runs the forward pass.
  struct Worker {
    std::unique_ptr<runtime::Runner> runner;
    std::unique_ptr<DevicePrefill> device;
  };
  absl::Status Validate(const kvwire::v1::PrefillRequest& request) const;
  absl::StatusOr<std::unique_ptr<Worker>> AcquireWorker(Deadline deadline);
  void ReturnWorker(std::unique_ptr<Worker> worker);
  absl::StatusOr<kvwire::v1::PrefillResponse> DoPrefill(grpc::ServerContext* context,
                                                        const kvwire::v1::PrefillRequest& request);
  absl::StatusOr<kvwire::v1::PrefillResponse> RunAndStream(
      grpc::ServerContext* context, const kvwire::v1::PrefillRequest& request, Worker* worker,
      Deadline deadline);
  void Record(const kvwire::v1::RequestStats& stats);

  const runtime::Model& model_;
  transport::Transport* transport_;
  const PrefillNodeOptions options_;
  const cache::CacheShape kv_shape_;  // the model's, or the synthetic one
  const int n_query_heads_;
  const uint64_t fingerprint_;
  Metrics metrics_;
  std::atomic<bool> shutting_down_{false};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Worker>> idle_ ABSL_GUARDED_BY(mu_);
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvwire::prefill

#endif  // KVWIRE_PREFILL_NODE_PREFILL_SERVICE_H_
