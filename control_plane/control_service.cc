#include "control_plane/control_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "control_plane/proto_convert.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "proto/grpc_util.h"

namespace kvwire::control_plane {
namespace {

using grpc_util::FromGrpc;
using grpc_util::ToGrpc;

// Constant-time in the token's contents so the comparison leaks nothing but the length.
bool SecretsEqual(absl::string_view given, absl::string_view expected) {
  if (expected.empty()) return false;
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= given[i] ^ expected[i % expected.size()];
  return diff == 0;
}

// Steps worth repeating on another node: that node is gone, or it is full while others may not be.
bool RetryElsewhere(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsResourceExhausted(status);
}

double MillisSince(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

}  // namespace

struct ControlService::Plan {
  uint64_t request_id = 0;
  absl::Time start;
  GenerateInput input;
  v1::SamplingParams sampling;
  std::vector<int32_t> prompt_ids;
  ResolvedBudget budget;
};

struct ControlService::Reservation {
  NodeDescription decode;
  v1::Grant grant;
};

ControlService::ControlService(ControlOptions options, PolicyStore* policies,
                               NodeRegistry* registry, BandwidthEstimator* bandwidth,
                               const runtime::Tokenizer* tokenizer,
                               control::MetricsRegistry* metrics)
    : options_(std::move(options)),
      policies_(policies),
      registry_(registry),
      bandwidth_(bandwidth),
      tokenizer_(tokenizer) {
  if (metrics != nullptr) InitMetrics(metrics);
}

void ControlService::InitMetrics(control::MetricsRegistry* m) {
  metrics_.requests = m->CounterOrDetached("kvwire_control_requests_total", "Generate requests");
  metrics_.failures =
      m->CounterOrDetached("kvwire_control_requests_failed_total", "Generate requests failed");
  metrics_.in_flight =
      m->GaugeOrDetached("kvwire_control_requests_in_flight", "Generate requests in progress");
  metrics_.raw_bytes = m->CounterOrDetached("kvwire_control_raw_kv_bytes_total",
                                            "Uncompressed KV bytes of completed requests");
  metrics_.wire_bytes = m->CounterOrDetached(
      "kvwire_control_wire_bytes_total", "KV bytes sent over the data plane by completed requests");
  metrics_.ttft_ms = m->HistogramOrDetached("kvwire_control_ttft_ms", "Time to first token (ms)",
                                            control::ExponentialBuckets(5, 2, 14));
  metrics_.retries = m->CounterOrDetached("kvwire_control_retries_total",
                                          "Reserve/Prefill attempts repeated on another node");
}

std::shared_ptr<grpc::Channel> ControlService::ChannelFor(const std::string& address) {
  absl::MutexLock lock(&channels_mu_);
  std::shared_ptr<grpc::Channel>& channel = channels_[address];
  if (channel == nullptr) {
    channel = grpc::CreateChannel(address, options_.node_credentials != nullptr
                                               ? options_.node_credentials
                                               : grpc::InsecureChannelCredentials());
  }
  return channel;
}

std::unique_ptr<grpc::ClientContext> ControlService::Outbound(grpc::ServerContext* server,
                                                              absl::Duration timeout) const {
  // Inheriting from the server call propagates the client's cancellation and deadline.
  std::unique_ptr<grpc::ClientContext> ctx = server != nullptr
                                                 ? grpc::ClientContext::FromServerContext(*server)
                                                 : std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

grpc::Status ControlService::Generate(grpc::ServerContext* context,
                                      const v1::GenerateRequest* request,
                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  stats_.Started();
  if (metrics_.requests != nullptr) {
    metrics_.requests->Increment();
    metrics_.in_flight->Add(1);
  }
  RequestRecord record;
  record.request_id = NewRequestId();
  absl::Status status = RunGenerate(context, *request, writer, &record);
  if (!status.ok() && context->IsCancelled()) {
    status = absl::CancelledError("the client cancelled the request");
  }
  RecordOutcome(status, record);
  return ToGrpc(status);
}

void ControlService::RecordOutcome(const absl::Status& status, const RequestRecord& record) {
  if (metrics_.in_flight != nullptr) metrics_.in_flight->Add(-1);
  if (!status.ok()) {
    KVWIRE_LOG(INFO) << "request " << record.request_id << " failed: " << status;
    stats_.Failed();
    if (metrics_.failures != nullptr) metrics_.failures->Increment();
    return;
  }
  stats_.Succeeded(record);
  bandwidth_->Observe(record.wire_bytes, record.transfer_ms);
  if (metrics_.raw_bytes != nullptr) {
    metrics_.raw_bytes->Increment(static_cast<double>(record.raw_kv_bytes));
    metrics_.wire_bytes->Increment(static_cast<double>(record.wire_bytes));
    metrics_.ttft_ms->Observe(record.ttft_ms);
  }
}

absl::Status ControlService::RunGenerate(grpc::ServerContext* context,
                                         const v1::GenerateRequest& request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer,
                                         RequestRecord* record) {
  KVWIRE_ASSIGN_OR_RETURN(Plan plan, Prepare(request, record->request_id));
  KVWIRE_ASSIGN_OR_RETURN(Reservation reservation, Reserve(context, plan));
  registry_->AddInFlight(reservation.decode.node_id, 1);
  absl::StatusOr<v1::PrefillResponse> prefill = Prefill(context, plan, reservation);
  absl::Status status = prefill.status();
  if (status.ok()) status = RelayDecode(context, plan, reservation, *prefill, writer, record);
  registry_->AddInFlight(reservation.decode.node_id, -1);
  if (!status.ok()) Release(reservation);
  return status;
}

absl::StatusOr<ControlService::Plan> ControlService::Prepare(const v1::GenerateRequest& request,
                                                             uint64_t request_id) {
  Plan plan;
  plan.start = absl::Now();
  plan.request_id = request_id;
  plan.input = InputFromProto(request);
  plan.sampling = request.sampling();
  KVWIRE_RETURN_IF_ERROR(ValidateRequest(plan.input, options_.limits));
  if (tokenizer_ == nullptr) {
    return absl::FailedPreconditionError(
        "the control plane has no tokenizer; start kvwire-control with --model");
  }
  KVWIRE_ASSIGN_OR_RETURN(plan.prompt_ids, TokenizeInput(*tokenizer_, plan.input));
  KVWIRE_RETURN_IF_ERROR(
      ValidatePromptLength(plan.prompt_ids.size(), plan.input.max_tokens, options_.limits));
  BudgetContext budget_context;
  budget_context.prompt_tokens = static_cast<uint32_t>(plan.prompt_ids.size());
  budget_context.raw_bytes_per_token = options_.raw_bytes_per_token;
  budget_context.link_bytes_per_ms = bandwidth_->bytes_per_ms();
  KVWIRE_ASSIGN_OR_RETURN(plan.budget,
                          policies_->Resolve(plan.input.tenant, plan.input.model, plan.input.budget,
                                             plan.input.method, budget_context));
  if (!plan.input.kv_dtype.empty()) plan.budget.kv_dtype = plan.input.kv_dtype;
  return plan;
}

absl::StatusOr<ControlService::Reservation> ControlService::Reserve(grpc::ServerContext* context,
                                                                    const Plan& plan) {
  v1::ReserveRequest req;
  req.set_request_id(plan.request_id);
  req.set_prompt_tokens(static_cast<uint32_t>(plan.prompt_ids.size()));
  req.set_kept_fraction(plan.budget.kept_fraction);
  req.set_max_new_tokens(plan.input.max_tokens);
  req.set_model_fingerprint(options_.model_fingerprint);
  // The prefill may queue behind others before it streams: the slot must outlive that wait,
  // which this plane bounds by its prefill timeout and the client's deadline.
  absl::Duration wait = options_.prefill_timeout;
  if (context != nullptr && context->deadline() != std::chrono::system_clock::time_point::max()) {
    wait = std::min(wait, absl::FromChrono(context->deadline()) - absl::Now());
  }
  req.set_lease_ms(static_cast<uint32_t>(std::max<int64_t>(0, absl::ToInt64Milliseconds(wait))));
  NodeExclusions excluded;
  absl::Status last = absl::UnavailableError("no decode node available");
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    absl::StatusOr<NodeDescription> node = registry_->PickDecode(plan.input.model, excluded);
    if (!node.ok()) return attempt == 0 ? node.status() : last;
    Reservation r{*node, {}};
    auto ctx = Outbound(context, options_.reserve_timeout);
    last = Annotate(FromGrpc(v1::DecodeService::NewStub(ChannelFor(node->grpc_address))
                                 ->Reserve(ctx.get(), req, &r.grant)),
                    absl::StrCat("Reserve on decode node ", node->node_id));
    if (last.ok()) {
      if (r.grant.decode_node_id().empty()) r.grant.set_decode_node_id(node->node_id);
      return r;
    }
    if (!RetryElsewhere(last) || context->IsCancelled()) return last;
    excluded.insert(node->node_id);
    if (metrics_.retries != nullptr) metrics_.retries->Increment();
  }
  return last;
}

absl::StatusOr<v1::PrefillResponse> ControlService::Prefill(grpc::ServerContext* context,
                                                            const Plan& plan,
                                                            const Reservation& reservation) {
  v1::PrefillRequest req;
  req.set_request_id(plan.request_id);
  for (int32_t id : plan.prompt_ids) req.add_prompt_token_ids(static_cast<uint32_t>(id));
  req.set_kept_fraction(plan.budget.kept_fraction);
  req.mutable_compression()->set_method(plan.budget.method);
  req.mutable_compression()->set_kv_dtype(plan.budget.kv_dtype);
  *req.mutable_grant() = reservation.grant;
  NodeExclusions excluded;
  absl::Status last = absl::UnavailableError("no prefill node available");
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    absl::StatusOr<NodeDescription> node = registry_->PickPrefill(plan.input.model, excluded);
    if (!node.ok()) return attempt == 0 ? node.status() : last;
    v1::PrefillResponse response;
    registry_->AddInFlight(node->node_id, 1);
    auto ctx = Outbound(context, options_.prefill_timeout);
    last = Annotate(FromGrpc(v1::PrefillService::NewStub(ChannelFor(node->grpc_address))
                                 ->Prefill(ctx.get(), req, &response)),
                    absl::StrCat("Prefill on prefill node ", node->node_id));
    registry_->AddInFlight(node->node_id, -1);
    if (last.ok()) {
      response.mutable_stats()->set_prefill_node_id(node->node_id);
      return response;
    }
    // Only UNAVAILABLE means nothing reached the decode slot, so the grant is still unused.
    if (!absl::IsUnavailable(last) || context->IsCancelled()) return last;
    excluded.insert(node->node_id);
    if (metrics_.retries != nullptr) metrics_.retries->Increment();
  }
  return last;
}

void ControlService::Release(const Reservation& reservation) {
  v1::ReleaseRequest req;
  req.set_request_id(reservation.grant.request_id());
  req.set_slot_id(reservation.grant.slot_id());
  v1::ReleaseResponse response;
  // A fresh context: the slot must be given back even when the client is already gone.
  auto ctx = Outbound(nullptr, options_.release_timeout);
  absl::Status s = FromGrpc(v1::DecodeService::NewStub(ChannelFor(reservation.decode.grpc_address))
                                ->Release(ctx.get(), req, &response));
  if (!s.ok()) {
    KVWIRE_LOG(WARNING) << "Release of slot " << reservation.grant.slot_id() << " on "
                        << reservation.decode.node_id << " failed: " << s;
  }
}

namespace {

bool WriteText(grpc::ServerWriter<v1::GenerateResponse>* writer, const std::string& text) {
  if (text.empty()) return true;
  v1::GenerateResponse response;
  response.set_text_delta(text);
  return writer->Write(response);
}

// Prefill measured the prompt side, decode the generation side; the control plane measured TTFT.
RequestRecord MergeStats(const v1::PrefillResponse& prefill, const v1::RequestStats& decode) {
  RequestRecord r = RecordFromProto(prefill.stats());
  r.generated_tokens = decode.generated_tokens();
  r.install_ms = decode.install_ms();
  r.decode_tokens_per_s = decode.decode_tokens_per_s();
  r.finish_reason = decode.finish_reason();
  r.decode_node_id = decode.decode_node_id();
  if (r.raw_kv_bytes == 0) r.raw_kv_bytes = decode.raw_kv_bytes();
  if (r.wire_bytes == 0) r.wire_bytes = decode.wire_bytes();
  if (r.transfer_ms == 0) r.transfer_ms = decode.transfer_ms();
  if (r.kept_entries == 0) r.kept_entries = decode.kept_entries();
  return r;
}

}  // namespace

absl::Status ControlService::RelayDecode(grpc::ServerContext* context, const Plan& plan,
                                         const Reservation& reservation,
                                         const v1::PrefillResponse& prefill,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer,
                                         RequestRecord* record) {
  v1::DecodeRequest req;
  req.set_request_id(plan.request_id);
  req.set_slot_id(reservation.grant.slot_id());
  req.set_first_token_id(prefill.first_token_id());
  *req.mutable_sampling() = plan.sampling;
  auto ctx = Outbound(context, options_.decode_timeout);
  auto stub = v1::DecodeService::NewStub(ChannelFor(reservation.decode.grpc_address));
  std::unique_ptr<grpc::ClientReader<v1::DecodeResponse>> reader = stub->Decode(ctx.get(), req);
  // The decode node streams every generated token, the prefill node's first one included, with
  // its text already cut at UTF-8 character boundaries; it is relayed as is.
  v1::DecodeResponse event;
  v1::RequestStats decode_stats;
  bool finished = false;
  double ttft_ms = -1;
  uint32_t tokens = 0;
  while (reader->Read(&event)) {
    if (ttft_ms < 0) ttft_ms = MillisSince(plan.start);
    if (event.has_final_stats()) {
      decode_stats = event.final_stats();
      finished = true;
      continue;
    }
    ++tokens;
    if (!WriteText(writer, event.token().text())) ctx->TryCancel();  // the client went away
  }
  const std::string where = absl::StrCat("Decode on decode node ", reservation.decode.node_id);
  KVWIRE_RETURN_IF_ERROR(Annotate(FromGrpc(reader->Finish()), where));
  if (!finished)
    return absl::DataLossError(absl::StrCat(where, ": stream ended without final stats"));
  *record = MergeStats(prefill, decode_stats);
  record->request_id = plan.request_id;
  record->prompt_tokens = static_cast<uint32_t>(plan.prompt_ids.size());
  record->ttft_ms = ttft_ms;
  if (record->budget_kept_fraction == 0) record->budget_kept_fraction = plan.budget.kept_fraction;
  if (record->method.empty()) record->method = plan.budget.method;
  // Name nodes as the registry does, whatever ids the nodes put in their own stats.
  record->decode_node_id = reservation.decode.node_id;
  if (record->generated_tokens == 0) record->generated_tokens = tokens;
  v1::GenerateResponse final_event;
  *final_event.mutable_final_stats() = RecordToProto(*record);
  if (!writer->Write(final_event)) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

absl::Status ControlService::CheckAdmin(const std::string& token) const {
  if (options_.admin_token.empty()) return absl::OkStatus();
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "SetBudgetPolicy requires the admin token (admin_token is empty)");
  }
  if (!SecretsEqual(token, options_.admin_token)) {
    return absl::PermissionDeniedError("the admin token is not valid");
  }
  return absl::OkStatus();
}

grpc::Status ControlService::SetBudgetPolicy(grpc::ServerContext*,
                                             const v1::SetBudgetPolicyRequest* request,
                                             v1::SetBudgetPolicyResponse* response) {
  if (absl::Status s = CheckAdmin(request->admin_token()); !s.ok()) return ToGrpc(s);
  if (!request->has_policy()) return ToGrpc(absl::InvalidArgumentError("policy is missing"));
  if (!request->policy().has_default_budget()) {
    return ToGrpc(absl::InvalidArgumentError(
        "policy has no default budget (kept_fraction, bytes_per_token or auto)"));
  }
  absl::StatusOr<BudgetPolicy> stored = policies_->Set(PolicyFromProto(request->policy()));
  if (!stored.ok()) return ToGrpc(stored.status());
  KVWIRE_LOG(INFO) << "budget policy for tenant '" << stored->tenant << "' model '" << stored->model
                   << "' set to " << stored->default_budget.ToString();
  *response->mutable_policy() = PolicyToProto(*stored);
  return grpc::Status::OK;
}

grpc::Status ControlService::GetBudgetPolicy(grpc::ServerContext*,
                                             const v1::GetBudgetPolicyRequest* request,
                                             v1::GetBudgetPolicyResponse* response) {
  const std::string tenant = request->tenant().empty() ? kWildcard : request->tenant();
  const std::string model = request->model().empty() ? kWildcard : request->model();
  absl::StatusOr<BudgetPolicy> applies = policies_->Lookup(tenant, model);
  // Asking for everything is not an error even when no "*" policy exists.
  if (!applies.ok() && (!request->tenant().empty() || !request->model().empty())) {
    return ToGrpc(applies.status());
  }
  if (applies.ok()) *response->mutable_policy() = PolicyToProto(*applies);
  for (const BudgetPolicy& p : policies_->All()) *response->add_all() = PolicyToProto(p);
  return grpc::Status::OK;
}

grpc::Status ControlService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                                       v1::ListNodesResponse* response) {
  for (const NodeDescription& n : registry_->List()) *response->add_nodes() = NodeToProto(n);
  return grpc::Status::OK;
}

grpc::Status ControlService::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                      v1::GetStatsResponse* response) {
  const StatsSnapshot s = stats_.Snapshot();
  response->set_requests_total(s.requests_total);
  response->set_requests_failed(s.requests_failed);
  response->set_requests_in_flight(s.requests_in_flight);
  response->set_raw_kv_bytes_total(s.raw_kv_bytes_total);
  response->set_wire_bytes_total(s.wire_bytes_total);
  response->set_ttft_p50_ms(s.ttft_p50_ms);
  response->set_ttft_p99_ms(s.ttft_p99_ms);
  for (const RequestRecord& r : s.recent) *response->add_recent() = RecordToProto(r);
  return grpc::Status::OK;
}

grpc::Status ControlService::Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                                      v1::RegisterResponse* response) {
  absl::StatusOr<absl::Duration> lease = registry_->Register(NodeFromProto(request->node()));
  if (!lease.ok()) return ToGrpc(lease.status());
  response->set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(*lease)));
  return grpc::Status::OK;
}

grpc::Status ControlService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                       v1::HeartbeatResponse* response) {
  response->set_known(registry_->Heartbeat(NodeFromProto(request->node())));
  response->set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(registry_->lease())));
  return grpc::Status::OK;
}

}  // namespace kvwire::control_plane
