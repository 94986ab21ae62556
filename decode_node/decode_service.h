// decode_node/decode_service.h — the DecodeService: grants slots, receives compressed caches over
// the data plane and generates tokens over them.
//
// Reserve validates the request, sizes the grant (control::EstimateWireBytes at f16, or the
// caller's max_wire_bytes when larger, capped by max_slot_bytes), takes a slot in the GrantTable
// and starts a receiver thread for the request. The transport's Acceptor is the GrantTable, so
// frames without a live grant and its token never land. Decode waits (bounded) for the cache to
// commit, then streams TokenDelta events from the DecodeScheduler and ends with RequestStats; it
// frees the slot when it returns. Release frees a slot early. Slots whose lease lapsed, or that
// nobody claimed, are reaped by a janitor thread.
//
// Thread-safety: gRPC calls it from many threads; all state is behind one mutex per table.
// Error codes (as gRPC statuses): INVALID_ARGUMENT (bad request fields), FAILED_PRECONDITION
// (model fingerprint mismatch, a slot already being decoded), RESOURCE_EXHAUSTED (no free slot),
// NOT_FOUND (unknown request/slot), and the receive's status (DATA_LOSS, UNAVAILABLE,
// DEADLINE_EXCEEDED, the sender's abort code).
#ifndef KVWIRE_DECODE_NODE_DECODE_SERVICE_H_
#define KVWIRE_DECODE_NODE_DECODE_SERVICE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "decode_node/decode_scheduler.h"
#include "kvwire/control/grant_table.h"
#include "kvwire/control/kv_stream.h"
#include "kvwire/control/metrics.h"
#include "kvwire/control/synthetic_kv.h"
#include "kvwire/transport/transport.h"
#include "kvwire/v1/decode.grpc.pb.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace kvwire::decode {

struct DecodeNodeOptions {
  std::string node_id = "decode-0";
  std::string grpc_address;  // advertised to the control plane
  std::string model_name;
  kvwire::v1::TransportKind transport_kind = kvwire::v1::TRANSPORT_KIND_UCX;
  uint32_t capacity = 8;
  absl::Duration lease = absl::Seconds(10);       // stream must start within it ...
  absl::Duration max_lease = absl::Seconds(600);  // ... or within what Reserve asks, up to this
  absl::Duration transfer_timeout = absl::Seconds(60);  // stream must commit within lease + this
  absl::Duration claim_timeout = absl::Seconds(60);     // a committed cache waits this for Decode
  absl::Duration token_timeout = absl::Seconds(60);     // longest wait for one token
  uint64_t max_slot_bytes = uint64_t{4} << 30;
  uint32_t max_tokens_limit = 4096;
  int threads = 2;
  // Benchmarks: accept synthetic KV of this shape and answer with a fixed text instead of
  // generating (kvwire/control/synthetic_kv.h).
  std::optional<control::SyntheticKv> synthetic_kv;
  // Learned gates for decode-time compaction of gate/... requests (must outlive the service).
  const compress::GateModel* gates = nullptr;
  // The CUDA device that decodes (kvwire-decode --gpu; must outlive the service); null = CPU.
  DeviceDecoder* device = nullptr;
};

class DecodeServiceImpl final : public kvwire::v1::DecodeService::Service {
 public:
  // `model`, `tokenizer`, `transport` and `metrics` must outlive the service. Installs the
  // grant table as the transport's Acceptor.
  DecodeServiceImpl(const runtime::Model& model, const runtime::Tokenizer& tokenizer,
                    transport::Transport* transport, control::MetricsRegistry* metrics,
                    DecodeNodeOptions options);
  ~DecodeServiceImpl() override;

  grpc::Status Reserve(grpc::ServerContext* context, const kvwire::v1::ReserveRequest* request,
                       kvwire::v1::Grant* grant) override;
  grpc::Status Decode(grpc::ServerContext* context, const kvwire::v1::DecodeRequest* request,
                      grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer) override;
  grpc::Status Release(grpc::ServerContext* context, const kvwire::v1::ReleaseRequest* request,
                       kvwire::v1::ReleaseResponse* response) override;

  kvwire::v1::NodeInfo Info();
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  struct Slot;
  struct Metrics {
    control::Counter* reserves;
    control::Counter* requests;
    control::Counter* errors;
    control::Counter* wire_bytes;
    control::Counter* tokens;
    control::Gauge* live_grants;
    control::Gauge* active;
    control::Histogram* install_ms;
    control::Histogram* inter_token_ms;
    control::Histogram* first_token_ms;
  };
  absl::StatusOr<kvwire::v1::Grant> DoReserve(const kvwire::v1::ReserveRequest& request);
  absl::Status DoDecode(grpc::ServerContext* context, const kvwire::v1::DecodeRequest& request,
                        grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer);
  absl::StatusOr<std::shared_ptr<Slot>> Claim(RequestId request_id, uint64_t slot_id);
  absl::StatusOr<cache::KvCache> AwaitInstall(grpc::ServerContext* context, Slot& slot);
  absl::Status Stream(grpc::ServerContext* context, const kvwire::v1::DecodeRequest& request,
                      cache::KvCache cache, Slot& slot,
                      grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer);
  void ReceiveInto(std::shared_ptr<Slot> slot);
  // Synthetic KV: streams the fixed answer's tokens (at most max_tokens in all) through `emit`.
  absl::Status EmitFixedAnswer(uint32_t max_tokens,
                               const std::function<absl::Status(int32_t)>& emit,
                               std::string* finish) const;
  absl::Status SetDecodeBudget(float fraction, const Slot& slot, GenerationRequest* job) const;
  absl::Status CheckManifest(const format::Manifest& manifest) const;
  // Frees the slot: cancels its receive if still running, joins its thread, drops the grant.
  bool Free(RequestId request_id, uint64_t slot_id);
  void Janitor();
  void UpdateGauges();

  const runtime::Model& model_;
  const runtime::Tokenizer& tokenizer_;
  transport::Transport* transport_;
  const DecodeNodeOptions options_;
  const cache::CacheShape kv_shape_;  // the model's, or the synthetic one
  const uint64_t fingerprint_;
  Metrics metrics_;
  control::GrantTable grants_;
  DecodeScheduler scheduler_;
  absl::Mutex mu_;
  absl::flat_hash_map<RequestId, std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread janitor_;
};

}  // namespace kvwire::decode

#endif  // KVWIRE_DECODE_NODE_DECODE_SERVICE_H_
