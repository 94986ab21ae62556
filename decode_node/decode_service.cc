#include "decode_node/decode_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/control/kv_budget.h"
#include "proto/grpc_util.h"

namespace kvwire::decode {

using grpc_util::ToGrpc;

namespace {

constexpr absl::Duration kPollInterval = absl::Milliseconds(100);
constexpr absl::Duration kCancelWait = absl::Seconds(5);
constexpr uint32_t kDefaultMaxTokens = 128;

// Deadline for a server-side wait: the earlier of the client's deadline and `limit` from now.
Deadline ServerDeadline(const grpc::ServerContext& context, absl::Duration limit) {
  const absl::Duration client_left = absl::FromChrono(context.deadline()) - absl::Now();
  return Deadline::In(std::min(limit, client_left));
}

}  // namespace

struct DecodeServiceImpl::Slot {
  control::GrantInfo grant;
  absl::Duration lease;  // the stream must start within it
  absl::Time reserved_at;
  absl::Notification installed;  // the receive ended, successfully or not
  absl::StatusOr<cache::KvCache> cache = absl::UnknownError("not received");
  control::ReceiverStats stats;
  std::string method;        // compression method named by the stream's manifest
  absl::Time decode_called;  // guarded by the service's mu_ until claimed, then the decoder's
  absl::Time installed_at;
  bool claimed = false;  // guarded by the service's mu_
  std::thread receiver;
};

DecodeServiceImpl::DecodeServiceImpl(const runtime::Model& model,
                                     const runtime::Tokenizer& tokenizer,
                                     transport::Transport* transport,
                                     control::MetricsRegistry* metrics, DecodeNodeOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      transport_(transport),
      options_(std::move(options)),
      kv_shape_(options_.synthetic_kv ? options_.synthetic_kv->shape
                                      : model.config().cache_shape()),
      fingerprint_(
          options_.synthetic_kv
              ? control::SyntheticFingerprint(*options_.synthetic_kv, model.config().vocab_size)
              : control::ModelFingerprint(kv_shape_, model.config().n_heads,
                                          model.config().vocab_size)),
      grants_(control::GrantTableOptions{.capacity = options_.capacity}),
      scheduler_(model, options_.threads, options_.device) {
  auto counter = [&](absl::string_view name, absl::string_view help) {
    return metrics->CounterOrDetached(name, help);
  };
  auto gauge = [&](absl::string_view name, absl::string_view help) {
    return metrics->GaugeOrDetached(name, help);
  };
  auto histogram = [&](absl::string_view name, absl::string_view help) {
    return metrics->HistogramOrDetached(name, help, control::ExponentialBuckets(0.25, 2, 16));
  };
  metrics_ = Metrics{
      counter("kvwire_decode_reserves_total", "Reserve calls that returned a grant."),
      counter("kvwire_decode_requests_total", "Decode calls."),
      counter("kvwire_decode_errors_total", "Reserve and Decode calls that failed."),
      counter("kvwire_decode_wire_bytes_total", "Compressed KV bytes received."),
      counter("kvwire_decode_tokens_total", "Tokens streamed to clients."),
      gauge("kvwire_decode_live_grants", "Grants (slots) alive now."),
      gauge("kvwire_decode_active_generations", "Requests generating now (decode queue)."),
      histogram("kvwire_decode_install_ms", "First frame to committed cache, milliseconds."),
      histogram("kvwire_decode_inter_token_ms", "Time between streamed tokens, milliseconds."),
      histogram("kvwire_decode_first_token_ms",
                "Decode call to first streamed token (install wait included), milliseconds."),
  };
  transport_->SetAcceptor(grants_.MakeAcceptor());
  janitor_ = std::thread([this] { Janitor(); });
}

DecodeServiceImpl::~DecodeServiceImpl() {
  // The transport outlives the service: stop it from calling into the grant table first.
  transport_->SetAcceptor([](const transport::FrameInfo&,
                             absl::Span<const uint8_t>) -> absl::StatusOr<transport::Destination> {
    return absl::UnavailableError("decode node is stopping");
  });
  stop_.Notify();
  janitor_.join();
  std::vector<std::pair<RequestId, uint64_t>> left;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, slot] : slots_) left.emplace_back(id, slot->grant.slot_id);
  }
  for (const auto& [id, slot_id] : left) Free(id, slot_id);
}

kvwire::v1::NodeInfo DecodeServiceImpl::Info() {
  kvwire::v1::NodeInfo info;
  info.set_node_id(options_.node_id);
  info.set_role(kvwire::v1::NODE_ROLE_DECODE);
  info.set_grpc_address(options_.grpc_address);
  info.set_model_fingerprint(absl::StrFormat("%016x", fingerprint_));
  info.set_model_name(options_.model_name);
  info.set_transport(options_.transport_kind);
  info.set_capacity(options_.capacity);
  info.set_in_flight(static_cast<uint32_t>(grants_.live_grants()));
  const uint64_t free_slots =
      options_.capacity - std::min<uint64_t>(options_.capacity, grants_.live_grants());
  info.set_free_kv_bytes(free_slots * options_.max_slot_bytes);
  return info;
}

void DecodeServiceImpl::UpdateGauges() {
  metrics_.live_grants->Set(static_cast<double>(grants_.live_grants()));
  metrics_.active->Set(static_cast<double>(scheduler_.active()));
}

// --- Reserve ----------------------------------------------------------------------------------

grpc::Status DecodeServiceImpl::Reserve(grpc::ServerContext*,
                                        const kvwire::v1::ReserveRequest* request,
                                        kvwire::v1::Grant* grant) {
  absl::StatusOr<kvwire::v1::Grant> result = DoReserve(*request);
  UpdateGauges();
  if (!result.ok()) {
    metrics_.errors->Increment();
    KVWIRE_LOG(DEBUG) << "reserve " << request->request_id() << " failed: " << result.status();
    return ToGrpc(result.status());
  }
  metrics_.reserves->Increment();
  *grant = *std::move(result);
  return grpc::Status::OK;
}

absl::StatusOr<kvwire::v1::Grant> DecodeServiceImpl::DoReserve(
    const kvwire::v1::ReserveRequest& request) {
  const auto& config = model_.config();
  if (request.request_id() == 0) return absl::InvalidArgumentError("request_id must be non-zero");
  if (request.prompt_tokens() == 0 ||
      request.prompt_tokens() > static_cast<uint32_t>(config.context_length)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_tokens ", request.prompt_tokens(),
                                                   " outside [1, ", config.context_length, "]"));
  }
  if (!(request.kept_fraction() > 0.0f && request.kept_fraction() <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept_fraction ", request.kept_fraction(), " outside (0, 1]"));
  }
  const std::string own = absl::StrFormat("%016x", fingerprint_);
  if (!request.model_fingerprint().empty() && request.model_fingerprint() != own) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model fingerprint ", request.model_fingerprint(), " is not this node's ", own));
  }
  const uint64_t estimate = control::EstimateWireBytes(
      kv_shape_, request.prompt_tokens(), request.kept_fraction(), format::DType::kF16);
  const uint64_t max_bytes =
      std::min(std::max<uint64_t>(estimate, request.max_wire_bytes()), options_.max_slot_bytes);
  const absl::Duration lease = std::max(
      options_.lease, std::min(absl::Milliseconds(request.lease_ms()), options_.max_lease));
  KVWIRE_ASSIGN_OR_RETURN(control::GrantInfo info,
                          grants_.Reserve(request.request_id(), max_bytes, lease));
  auto slot = std::make_shared<Slot>();
  slot->grant = info;
  slot->lease = lease;
  slot->reserved_at = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    slots_[info.request_id] = slot;
  }
  slot->receiver = std::thread([this, slot] { ReceiveInto(slot); });
  kvwire::v1::Grant grant;
  grant.set_request_id(info.request_id);
  grant.set_slot_id(info.slot_id);
  grant.set_token(std::string(info.token.bytes.begin(), info.token.bytes.end()));
  grant.set_transport(options_.transport_kind);
  grant.set_data_plane_address(transport_->LocalAddress());
  grant.set_max_bytes(max_bytes);
  grant.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(lease)));
  grant.set_decode_node_id(options_.node_id);
  grant.set_model_fingerprint(absl::StrFormat("%016x", fingerprint_));
  grant.set_kv_shape(control::DescribeKv(kv_shape_, options_.synthetic_kv.has_value()));
  KVWIRE_LOG(DEBUG) << "reserve " << info.request_id << ": slot " << info.slot_id << ", "
                    << max_bytes << " bytes";
  return grant;
}

absl::Status DecodeServiceImpl::CheckManifest(const format::Manifest& manifest) const {
  const cache::CacheShape shape{static_cast<int>(manifest.n_layers), manifest.n_kv_heads,
                                manifest.head_dim};
  if (shape != kv_shape_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "stream carries KV of %dx%dx%d (layers x KV heads x dim), this node takes %dx%dx%d%s",
        shape.n_layers, shape.n_kv_heads, shape.head_dim, kv_shape_.n_layers, kv_shape_.n_kv_heads,
        kv_shape_.head_dim, options_.synthetic_kv ? " (--synthetic-kv)" : ""));
  }
  if (manifest.model_fingerprint != fingerprint_) {
    return absl::FailedPreconditionError(
        absl::StrFormat("stream is for model %016x, this node serves %016x",
                        manifest.model_fingerprint, fingerprint_));
  }
  if (manifest.original_length == 0 ||
      manifest.original_length > static_cast<uint32_t>(model_.config().context_length)) {
    return absl::DataLossError(
        absl::StrCat("manifest original_length ", manifest.original_length, " out of range"));
  }
  return absl::OkStatus();
}

void DecodeServiceImpl::ReceiveInto(std::shared_ptr<Slot> slot) {
  const RequestId id = slot->grant.request_id;
  control::ReceiverOptions options;
  options.check_manifest = [this](const format::Manifest& m) { return CheckManifest(m); };
  options.on_consumed = [this](const transport::ReceivedFrame& frame) {
    grants_.FreeFrame(frame.info.request_id, frame.payload.data());
  };
  control::KvStreamReceiver receiver(transport_, id, std::move(options));
  slot->cache = receiver.Run(Deadline::In(slot->lease + options_.transfer_timeout));
  (void)grants_.Finish(id);  // NOT_FOUND only when the slot is already being freed
  slot->stats = receiver.stats();
  if (receiver.manifest().has_value()) slot->method = receiver.manifest()->method;
  slot->installed_at = absl::Now();
  metrics_.wire_bytes->Increment(static_cast<double>(receiver.stats().wire_bytes));
  if (slot->cache.ok()) {
    metrics_.install_ms->Observe(
        absl::ToDoubleMilliseconds(slot->stats.committed - slot->stats.first_frame));
  }
  KVWIRE_LOG(DEBUG) << "request " << id << ": receive ended: " << slot->cache.status();
  slot->installed.Notify();
}

// --- Decode -----------------------------------------------------------------------------------

grpc::Status DecodeServiceImpl::Decode(grpc::ServerContext* context,
                                       const kvwire::v1::DecodeRequest* request,
                                       grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer) {
  metrics_.requests->Increment();
  absl::Status status = DoDecode(context, *request, writer);
  UpdateGauges();
  if (!status.ok()) {
    metrics_.errors->Increment();
    KVWIRE_LOG(DEBUG) << "decode " << request->request_id() << " failed: " << status;
  }
  return ToGrpc(status);
}

absl::StatusOr<std::shared_ptr<DecodeServiceImpl::Slot>> DecodeServiceImpl::Claim(
    RequestId request_id, uint64_t slot_id) {
  absl::MutexLock lock(&mu_);
  auto it = slots_.find(request_id);
  if (it == slots_.end() || it->second->grant.slot_id != slot_id) {
    return absl::NotFoundError(
        absl::StrCat("no slot ", slot_id, " for request ", request_id, " on this node"));
  }
  if (it->second->claimed) {
    return absl::FailedPreconditionError(
        absl::StrCat("request ", request_id, " is already being decoded"));
  }
  it->second->claimed = true;
  it->second->decode_called = absl::Now();
  return it->second;
}

absl::Status DecodeServiceImpl::DoDecode(grpc::ServerContext* context,
                                         const kvwire::v1::DecodeRequest& request,
                                         grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer) {
  KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<Slot> slot,
                          Claim(request.request_id(), request.slot_id()));
  absl::StatusOr<cache::KvCache> cache = AwaitInstall(context, *slot);
  absl::Status status = cache.status();
  if (cache.ok()) status = Stream(context, request, *std::move(cache), *slot, writer);
  Free(request.request_id(), request.slot_id());
  return status;
}

absl::StatusOr<cache::KvCache> DecodeServiceImpl::AwaitInstall(grpc::ServerContext* context,
                                                               Slot& slot) {
  const Deadline deadline = ServerDeadline(*context, slot.lease + options_.transfer_timeout);
  while (!slot.installed.WaitForNotificationWithTimeout(kPollInterval)) {
    if (context->IsCancelled()) return absl::CancelledError("client cancelled the decode");
    if (deadline.Expired()) {
      return absl::DeadlineExceededError(
          absl::StrCat("cache of request ", slot.grant.request_id, " did not commit in time"));
    }
  }
  if (!slot.cache.ok()) return slot.cache.status();
  return std::move(slot.cache);
}

absl::Status DecodeServiceImpl::Stream(grpc::ServerContext* context,
                                       const kvwire::v1::DecodeRequest& request,
                                       cache::KvCache cache, Slot& slot,
                                       grpc::ServerWriter<kvwire::v1::DecodeResponse>* writer) {
  const int32_t first = static_cast<int32_t>(request.first_token_id());
  if (request.first_token_id() >= static_cast<uint32_t>(model_.config().vocab_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_token_id ", request.first_token_id(), " outside the vocabulary"));
  }
  const uint32_t max_tokens =
      request.sampling().max_tokens() == 0 ? kDefaultMaxTokens : request.sampling().max_tokens();
  if (max_tokens > options_.max_tokens_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens ", max_tokens, " over the limit ", options_.max_tokens_limit));
  }
  GenerationRequest job;
  for (int32_t id : {tokenizer_.eos_id(), tokenizer_.im_end_id()}) {
    if (id != runtime::kNoToken) job.stop_tokens.push_back(id);
  }
  kvwire::v1::RequestStats stats;
  stats.set_request_id(request.request_id());
  stats.set_prompt_tokens(static_cast<uint32_t>(cache.original_length));
  stats.set_wire_bytes(slot.stats.wire_bytes);
  stats.set_kept_entries(cache.TotalEntries());
  stats.set_install_ms(absl::ToDoubleMilliseconds(slot.stats.committed - slot.stats.first_frame));
  stats.set_decode_node_id(options_.node_id);

  runtime::StreamDecoder text(tokenizer_);
  const absl::Time start = absl::Now();
  absl::Time last = start;
  int emitted = 0;
  auto emit = [&](int32_t token) -> absl::Status {
    KVWIRE_ASSIGN_OR_RETURN(std::string piece, text.Push(token));
    kvwire::v1::DecodeResponse response;
    response.mutable_token()->set_token_id(static_cast<uint32_t>(token));
    response.mutable_token()->set_text(std::move(piece));
    if (!writer->Write(response)) return absl::CancelledError("client went away");
    const absl::Time now = absl::Now();
    metrics_.tokens->Increment();
    if (emitted++ == 0) {
      metrics_.first_token_ms->Observe(absl::ToDoubleMilliseconds(now - slot.decode_called));
    } else {
      metrics_.inter_token_ms->Observe(absl::ToDoubleMilliseconds(now - last));
    }
    last = now;
    return absl::OkStatus();
  };
  std::string finish = "length";
  if (std::find(job.stop_tokens.begin(), job.stop_tokens.end(), first) != job.stop_tokens.end()) {
    finish = "stop";
  } else {
    KVWIRE_RETURN_IF_ERROR(emit(first));
  }
  if (options_.synthetic_kv && finish != "stop") {
    KVWIRE_RETURN_IF_ERROR(EmitFixedAnswer(max_tokens, emit, &finish));
  } else if (finish != "stop" && max_tokens > 1) {
    job.cache = std::move(cache);
    job.first_token = first;
    job.max_tokens = static_cast<int>(max_tokens);
    job.sampling = runtime::SamplingOptions{request.sampling().temperature(),
                                            request.sampling().top_p(), request.sampling().seed()};
    KVWIRE_RETURN_IF_ERROR(SetDecodeBudget(request.decode_kept_fraction(), slot, &job));
    std::shared_ptr<Generation> generation = scheduler_.Submit(std::move(job));
    UpdateGauges();
    while (true) {
      if (context->IsCancelled()) {
        generation->Cancel();
        return absl::CancelledError("client cancelled the decode");
      }
      absl::StatusOr<std::optional<int32_t>> next = generation->Next(Deadline::In(kPollInterval));
      if (absl::IsDeadlineExceeded(next.status())) {
        if (absl::Now() - last > options_.token_timeout) {
          generation->Cancel();
          return absl::DeadlineExceededError("no token within the token timeout");
        }
        continue;
      }
      if (!next.ok()) return next.status();
      if (!next->has_value()) break;
      if (absl::Status s = emit(**next); !s.ok()) {
        generation->Cancel();
        return s;
      }
    }
    finish = generation->finish_reason();
  }
  const std::string tail = text.Finish();
  if (!tail.empty()) {
    kvwire::v1::DecodeResponse response;
    response.mutable_token()->set_text(tail);  // flushed bytes of an unfinished character
    writer->Write(response);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stats.set_generated_tokens(static_cast<uint32_t>(emitted));
  stats.set_decode_tokens_per_s(emitted > 1 && seconds > 0 ? (emitted - 1) / seconds : 0.0);
  stats.set_finish_reason(finish);
  kvwire::v1::DecodeResponse final_response;
  *final_response.mutable_final_stats() = stats;
  writer->Write(final_response);
  KVWIRE_LOG(DEBUG) << "decode " << request.request_id() << ": " << emitted << " tokens, "
                    << finish;
  return absl::OkStatus();
}

absl::Status DecodeServiceImpl::EmitFixedAnswer(uint32_t max_tokens,
                                                const std::function<absl::Status(int32_t)>& emit,
                                                std::string* finish) const {
  const std::vector<int32_t> answer = tokenizer_.Encode(" [synthetic KV cache installed]");
  uint32_t emitted = 1;  // the prefill node's token
  for (int32_t token : answer) {
    if (emitted++ >= max_tokens) return absl::OkStatus();  // finish stays "length"
    KVWIRE_RETURN_IF_ERROR(emit(token));
  }
  *finish = "stop";
  return absl::OkStatus();
}

absl::Status DecodeServiceImpl::SetDecodeBudget(float fraction, const Slot& slot,
                                                GenerationRequest* job) const {
  if (fraction == 0.0f || fraction >= 1.0f) return absl::OkStatus();
  if (!(fraction > 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode_kept_fraction ", fraction, " outside [0, 1]"));
  }
  job->decode_kept_fraction = fraction;
  // The merge rule of the method the prefill node applied, from the stream's manifest.
  absl::StatusOr<compress::CompressionSpec> spec = compress::CompressionSpec::Parse(slot.method);
  if (spec.ok()) job->spec = *spec;
  job->gates = options_.gates;
  return absl::OkStatus();
}

// --- Release and cleanup ----------------------------------------------------------------------

grpc::Status DecodeServiceImpl::Release(grpc::ServerContext*,
                                        const kvwire::v1::ReleaseRequest* request,
                                        kvwire::v1::ReleaseResponse* response) {
  response->set_released(Free(request->request_id(), request->slot_id()));
  UpdateGauges();
  return grpc::Status::OK;
}

bool DecodeServiceImpl::Free(RequestId request_id, uint64_t slot_id) {
  std::shared_ptr<Slot> slot;
  {
    absl::MutexLock lock(&mu_);
    auto it = slots_.find(request_id);
    if (it == slots_.end() || it->second->grant.slot_id != slot_id) return false;
    slot = it->second;
    slots_.erase(it);
  }
  if (!slot->installed.HasBeenNotified()) {
    absl::Status cancelled = transport_->CancelReceive(request_id, Deadline::In(kCancelWait));
    if (!cancelled.ok()) KVWIRE_LOG(WARNING) << "request " << request_id << ": " << cancelled;
  }
  if (slot->receiver.joinable()) slot->receiver.join();
  (void)grants_.Release(request_id, slot_id);  // NOT_FOUND when its lease already lapsed
  UpdateGauges();
  return true;
}

void DecodeServiceImpl::Janitor() {
  while (!stop_.WaitForNotificationWithTimeout(kPollInterval * 2)) {
    std::vector<std::pair<RequestId, uint64_t>> stale;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      for (const auto& [id, slot] : slots_) {
        if (slot->claimed) continue;
        const bool lapsed = !slot->installed.HasBeenNotified() && !grants_.Contains(id);
        const bool unclaimed =
            slot->installed.HasBeenNotified() && now - slot->installed_at > options_.claim_timeout;
        if (lapsed || unclaimed) stale.emplace_back(id, slot->grant.slot_id);
      }
    }
    for (const auto& [id, slot_id] : stale) {
      KVWIRE_LOG(DEBUG) << "request " << id << ": slot " << slot_id << " reaped";
      Free(id, slot_id);
    }
    UpdateGauges();
  }
}

}  // namespace kvwire::decode
