// control_plane/control_service.h — the kvwire.v1.ControlPlane gRPC service.
//
// Generate: validate -> tokenize (chat template for chat input) -> resolve the budget -> pick a
// decode node and Reserve a slot -> pick a prefill node and Prefill with the grant -> relay the
// Decode stream's text as text deltas (the decode node streams every generated token, the
// prefill node's first one included) -> final RequestStats (prefill and decode stats merged;
// TTFT measured here, from request arrival to the first Decode event). Reserve (after
// UNAVAILABLE or RESOURCE_EXHAUSTED) and Prefill (after UNAVAILABLE: nothing was streamed, the
// grant is unused) are retried on another node, up to max_attempts; a reserved slot is Released
// whenever the request fails after Reserve. Every outbound RPC carries a deadline and inherits
// the client's cancellation and deadline (ClientContext::FromServerContext).
//
// SetBudgetPolicy requires the admin token when one is configured: UNAUTHENTICATED without a
// token, PERMISSION_DENIED with a wrong one.
//
// Error codes: validation -> INVALID_ARGUMENT; no tokenizer -> FAILED_PRECONDITION; no live node
// -> UNAVAILABLE ("no decode node available"); every decode node full -> RESOURCE_EXHAUSTED;
// node errors are passed on, prefixed with the step and node ("Prefill on prefill node p1: ...").
//
// Thread-safety: all methods may run concurrently (gRPC's sync server calls them from its pool).
#ifndef KVWIRE_CONTROL_PLANE_CONTROL_SERVICE_H_
#define KVWIRE_CONTROL_PLANE_CONTROL_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "control_plane/budget_policy.h"
#include "control_plane/node_registry.h"
#include "control_plane/request_stats.h"
#include "control_plane/request_validation.h"
#include "kvwire/control/metrics.h"
#include "kvwire/v1/control_plane.grpc.pb.h"
#include "kvwire/v1/decode.grpc.pb.h"
#include "kvwire/v1/prefill.grpc.pb.h"
#include "runtime/tokenizer.h"

namespace kvwire::control_plane {

struct ControlOptions {
  std::string admin_token;  // empty: SetBudgetPolicy is open
  RequestLimits limits;
  double raw_bytes_per_token = 0;  // uncompressed wire bytes per prompt token; 0 = unknown
  std::string model_fingerprint;   // passed to Reserve; empty = any
  absl::Duration reserve_timeout = absl::Seconds(5);
  absl::Duration prefill_timeout = absl::Seconds(120);
  absl::Duration decode_timeout = absl::Seconds(600);
  absl::Duration release_timeout = absl::Seconds(2);
  int max_attempts = 3;                                        // per step, each on a different node
  std::shared_ptr<grpc::ChannelCredentials> node_credentials;  // null = plaintext
};

class ControlService final : public v1::ControlPlane::Service {
 public:
  // `tokenizer` may be null (Generate then answers FAILED_PRECONDITION); `metrics` may be null.
  // Every pointer must outlive the service.
  ControlService(ControlOptions options, PolicyStore* policies, NodeRegistry* registry,
                 BandwidthEstimator* bandwidth, const runtime::Tokenizer* tokenizer,
                 control::MetricsRegistry* metrics);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status SetBudgetPolicy(grpc::ServerContext* context,
                               const v1::SetBudgetPolicyRequest* request,
                               v1::SetBudgetPolicyResponse* response) override;
  grpc::Status GetBudgetPolicy(grpc::ServerContext* context,
                               const v1::GetBudgetPolicyRequest* request,
                               v1::GetBudgetPolicyResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::GetStatsResponse* response) override;
  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;

 private:
  struct Plan;
  struct Reservation;
  struct Metrics {
    control::Counter* requests = nullptr;
    control::Counter* failures = nullptr;
    control::Gauge* in_flight = nullptr;
    control::Counter* raw_bytes = nullptr;
    control::Counter* wire_bytes = nullptr;
    control::Histogram* ttft_ms = nullptr;
    control::Counter* retries = nullptr;
  };

  absl::Status RunGenerate(grpc::ServerContext* context, const v1::GenerateRequest& request,
                           grpc::ServerWriter<v1::GenerateResponse>* writer, RequestRecord* record);
  absl::StatusOr<Plan> Prepare(const v1::GenerateRequest& request, uint64_t request_id);
  absl::StatusOr<Reservation> Reserve(grpc::ServerContext* context, const Plan& plan);
  absl::StatusOr<v1::PrefillResponse> Prefill(grpc::ServerContext* context, const Plan& plan,
                                              const Reservation& reservation);
  absl::Status RelayDecode(grpc::ServerContext* context, const Plan& plan,
                           const Reservation& reservation, const v1::PrefillResponse& prefill,
                           grpc::ServerWriter<v1::GenerateResponse>* writer, RequestRecord* record);
  void Release(const Reservation& reservation);
  absl::Status CheckAdmin(const std::string& token) const;
  void RecordOutcome(const absl::Status& status, const RequestRecord& record);
  std::shared_ptr<grpc::Channel> ChannelFor(const std::string& address);
  std::unique_ptr<grpc::ClientContext> Outbound(grpc::ServerContext* server,
                                                absl::Duration timeout) const;
  void InitMetrics(control::MetricsRegistry* metrics);

  const ControlOptions options_;
  PolicyStore* const policies_;
  NodeRegistry* const registry_;
  BandwidthEstimator* const bandwidth_;
  const runtime::Tokenizer* const tokenizer_;
  RequestStatsCollector stats_;
  Metrics metrics_;
  absl::Mutex channels_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<grpc::Channel>> channels_
      ABSL_GUARDED_BY(channels_mu_);
};

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_CONTROL_SERVICE_H_
