#include "prefill_node/prefill_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/compress/spec.h"
#include "kvwire/control/kv_budget.h"
#include "kvwire/control/kv_stream.h"
#include "prefill_node/compressing_prefill.h"
#include "prefill_node/synthetic_prefill.h"
#include "proto/grpc_util.h"
#include "runtime/sampling.h"

namespace kvwire::prefill {
namespace {

Deadline CallDeadline(const grpc::ServerContext& context, absl::Duration fallback) {
  const absl::Duration client_left = absl::FromChrono(context.deadline()) - absl::Now();
  return Deadline::In(std::min(fallback, client_left));
}

absl::StatusOr<format::DType> ParseKvDtype(const std::string& text) {
  if (text.empty()) return format::DType::kF16;
  format::DType dtype;
  if (!format::ParseDType(text, &dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_dtype '", text, "' is not one of f16, bf16, f32, i8"));
  }
  return dtype;
}

absl::StatusOr<Token> GrantToken(const kvwire::v1::Grant& grant) {
  Token token;
  if (grant.token().size() != token.bytes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("grant token has ", grant.token().size(), " bytes, expected 16"));
  }
  std::copy(grant.token().begin(), grant.token().end(), token.bytes.begin());
  return token;
}

}  // namespace

PrefillServiceImpl::PrefillServiceImpl(const runtime::Model& model, transport::Transport* transport,
                                       control::MetricsRegistry* metrics,
                                       PrefillNodeOptions options,
                                       std::vector<std::unique_ptr<DevicePrefill>> devices)
    : model_(model),
      transport_(transport),
      options_(std::move(options)),
      kv_shape_(options_.synthetic_kv ? options_.synthetic_kv->shape
                                      : model.config().cache_shape()),
      n_query_heads_(options_.synthetic_kv ? options_.synthetic_kv->n_query_heads
                                           : model.config().n_heads),
      fingerprint_(
          options_.synthetic_kv
              ? control::SyntheticFingerprint(*options_.synthetic_kv, model.config().vocab_size)
              : control::ModelFingerprint(kv_shape_, n_query_heads_, model.config().vocab_size)) {
  const auto ms_buckets = control::ExponentialBuckets(0.25, 2, 18);
  metrics_ = Metrics{
      metrics->CounterOrDetached("kvwire_prefill_requests_total", "Prefill calls."),
      metrics->CounterOrDetached("kvwire_prefill_errors_total", "Prefill calls that failed."),
      metrics->CounterOrDetached("kvwire_prefill_raw_kv_bytes_total",
                                 "Uncompressed KV bytes at fp16 of served prompts."),
      metrics->CounterOrDetached("kvwire_prefill_wire_bytes_total",
                                 "Compressed KV bytes put on the wire."),
      metrics->GaugeOrDetached("kvwire_prefill_compression_ratio",
                               "raw_kv_bytes_total / wire_bytes_total."),
      metrics->GaugeOrDetached("kvwire_prefill_queue_depth", "Calls waiting for a worker."),
      metrics->GaugeOrDetached("kvwire_prefill_in_flight", "Calls running on a worker."),
      metrics->HistogramOrDetached("kvwire_prefill_compute_ms", "Model prefill time, ms.",
                                   ms_buckets),
      metrics->HistogramOrDetached("kvwire_prefill_transfer_ms",
                                   "Time blocked on the data plane per request, ms.", ms_buckets),
  };
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < options_.workers; ++i) {
    auto worker = std::make_unique<Worker>();
    worker->runner = std::make_unique<runtime::Runner>(model_, options_.threads);
    if (static_cast<size_t>(i) < devices.size()) worker->device = std::move(devices[i]);
    idle_.push_back(std::move(worker));
  }
}

kvwire::v1::NodeInfo PrefillServiceImpl::Info() {
  kvwire::v1::NodeInfo info;
  info.set_node_id(options_.node_id);
  info.set_role(kvwire::v1::NODE_ROLE_PREFILL);
  info.set_model_fingerprint(absl::StrFormat("%016x", fingerprint_));
  info.set_model_name(options_.model_name);
  info.set_transport(options_.transport_kind);
  info.set_capacity(static_cast<uint32_t>(options_.workers));
  absl::MutexLock lock(&mu_);
  info.set_in_flight(static_cast<uint32_t>(in_flight_ + waiting_));
  return info;
}

absl::Status PrefillServiceImpl::Validate(const kvwire::v1::PrefillRequest& request) const {
  const auto& config = model_.config();
  const auto& ids = request.prompt_token_ids();
  if (ids.empty()) return absl::InvalidArgumentError("prompt_token_ids is empty");
  if (ids.size() > config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", ids.size(), " tokens exceeds the context of ", config.context_length));
  }
  for (int i = 0; i < static_cast<int>(ids.size()); ++i) {
    if (ids[i] >= static_cast<uint32_t>(config.vocab_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token ", i, " is ", ids[i], ", outside the vocabulary of ", config.vocab_size));
    }
  }
  if (!(request.kept_fraction() > 0.0f && request.kept_fraction() <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept_fraction ", request.kept_fraction(), " outside (0, 1]"));
  }
  const kvwire::v1::Grant& grant = request.grant();
  if (grant.data_plane_address().empty()) {
    return absl::InvalidArgumentError("grant has no data_plane_address");
  }
  if (grant.request_id() != request.request_id()) {
    return absl::InvalidArgumentError(
        absl::StrCat("grant is for request ", grant.request_id(), ", not ", request.request_id()));
  }
  if (!grant.model_fingerprint().empty() &&
      grant.model_fingerprint() != absl::StrFormat("%016x", fingerprint_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the granted decode node takes KV ", grant.kv_shape(), " (model ",
                     grant.model_fingerprint(), "), this node streams ",
                     control::DescribeKv(kv_shape_, options_.synthetic_kv.has_value())));
  }
  if (grant.transport() != kvwire::v1::TRANSPORT_KIND_UNSPECIFIED &&
      grant.transport() != options_.transport_kind) {
    return absl::FailedPreconditionError(absl::StrCat(
        "grant is for transport ", kvwire::v1::TransportKind_Name(grant.transport()),
        ", this node sends over ", kvwire::v1::TransportKind_Name(options_.transport_kind)));
  }
  return GrantToken(grant).status();
}

absl::StatusOr<std::unique_ptr<PrefillServiceImpl::Worker>> PrefillServiceImpl::AcquireWorker(
    Deadline deadline) {
  absl::MutexLock lock(&mu_);
  if (idle_.empty() && waiting_ >= options_.queue_limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("prefill queue is full (", waiting_, " waiting)"));
  }
  ++waiting_;
  metrics_.queue_depth->Set(waiting_);
  auto available = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !idle_.empty(); };
  const bool got = mu_.AwaitWithDeadline(absl::Condition(&available), deadline.ToAbslTime());
  --waiting_;
  metrics_.queue_depth->Set(waiting_);
  if (!got) return absl::DeadlineExceededError("no prefill worker became free in time");
  std::unique_ptr<Worker> worker = std::move(idle_.back());
  idle_.pop_back();
  metrics_.in_flight->Set(++in_flight_);
  return worker;
}

void PrefillServiceImpl::ReturnWorker(std::unique_ptr<Worker> worker) {
  absl::MutexLock lock(&mu_);
  idle_.push_back(std::move(worker));
  metrics_.in_flight->Set(--in_flight_);
}

grpc::Status PrefillServiceImpl::Prefill(grpc::ServerContext* context,
                                         const kvwire::v1::PrefillRequest* request,
                                         kvwire::v1::PrefillResponse* response) {
  metrics_.requests->Increment();
  absl::StatusOr<kvwire::v1::PrefillResponse> result = DoPrefill(context, *request);
  if (!result.ok()) {
    metrics_.errors->Increment();
    KVWIRE_LOG(DEBUG) << "prefill " << request->request_id() << " failed: " << result.status();
    return grpc_util::ToGrpc(result.status());
  }
  *response = *std::move(result);
  Record(response->stats());
  KVWIRE_LOG(DEBUG) << "prefill " << request->request_id() << ": "
                    << response->stats().prompt_tokens() << " tokens, "
                    << response->stats().wire_bytes() << " wire bytes";
  return grpc::Status::OK;
}

void PrefillServiceImpl::Record(const kvwire::v1::RequestStats& stats) {
  metrics_.raw_bytes->Increment(static_cast<double>(stats.raw_kv_bytes()));
  metrics_.wire_bytes->Increment(static_cast<double>(stats.wire_bytes()));
  if (metrics_.wire_bytes->value() > 0) {
    metrics_.compression_ratio->Set(metrics_.raw_bytes->value() / metrics_.wire_bytes->value());
  }
  metrics_.prefill_ms->Observe(stats.prefill_ms());
  metrics_.transfer_ms->Observe(stats.transfer_ms());
}

absl::StatusOr<kvwire::v1::PrefillResponse> PrefillServiceImpl::DoPrefill(
    grpc::ServerContext* context, const kvwire::v1::PrefillRequest& request) {
  if (shutting_down_.load()) return absl::UnavailableError("prefill node is shutting down");
  KVWIRE_RETURN_IF_ERROR(Validate(request));
  const Deadline deadline = CallDeadline(*context, options_.default_deadline);
  const absl::Time queued = absl::Now();
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<Worker> worker, AcquireWorker(deadline));
  const absl::Duration queue_time = absl::Now() - queued;
  absl::StatusOr<kvwire::v1::PrefillResponse> result =
      RunAndStream(context, request, worker.get(), deadline);
  ReturnWorker(std::move(worker));
  if (result.ok()) result->mutable_stats()->set_queue_ms(absl::ToDoubleMilliseconds(queue_time));
  return result;
}

absl::StatusOr<kvwire::v1::PrefillResponse> PrefillServiceImpl::RunAndStream(
    grpc::ServerContext* context, const kvwire::v1::PrefillRequest& request, Worker* worker,
    Deadline deadline) {
  runtime::Runner* runner = worker->runner.get();
  const std::string method = request.compression().method().empty()
                                 ? options_.default_method
                                 : request.compression().method();
  KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec,
                          compress::CompressionSpec::Parse(method));
  KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor compressor,
                          compress::Compressor::Create(spec, request.kept_fraction()));
  if (spec.scorer == compress::ScorerKind::kGate && options_.gates == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "method ", spec.ToString(), " needs learned gates; this prefill node has none (--gates)"));
  }
  KVWIRE_ASSIGN_OR_RETURN(const format::DType kv_dtype,
                          ParseKvDtype(request.compression().kv_dtype()));
  KVWIRE_ASSIGN_OR_RETURN(const Token token, GrantToken(request.grant()));
  const std::vector<int32_t> prompt(request.prompt_token_ids().begin(),
                                    request.prompt_token_ids().end());
  const Deadline connect_deadline =
      Deadline::Earliest(deadline, Deadline::In(options_.connect_timeout));
  KVWIRE_ASSIGN_OR_RETURN(
      std::unique_ptr<transport::Connection> connection,
      transport_->Connect(request.grant().data_plane_address(), connect_deadline));

  control::KvStreamSender sender(
      connection.get(), request.request_id(), token,
      control::StreamManifest(kv_shape_, n_query_heads_, fingerprint_,
                              static_cast<uint32_t>(prompt.size()), request.kept_fraction(),
                              kv_dtype, spec.ToString()),
      {.send_timeout = std::min(options_.send_timeout, deadline.Remaining())});
  KVWIRE_RETURN_IF_ERROR(sender.Start());
  const absl::Time start = absl::Now();
  CompressingPrefill prefill(runner);
  prefill.set_device(worker->device.get());
  if (options_.gates != nullptr) {
    // Scored inline from each layer's attention input as the layer finishes.
    auto gates = std::make_shared<compress::GateScorer>(options_.gates);
    prefill.set_gate_scorer([gates, runner](const runtime::PrefillLayer& pl) {
      std::vector<float> scores;
      gates->Score(pl.layer, pl.attn_input, pl.n_tokens, &scores, runner->pool());
      return absl::StatusOr<std::vector<float>>(std::move(scores));
    });
  }
  auto sink = [&](int layer, cache::LayerCache layer_cache,
                  const compress::LayerStats&) -> absl::Status {
    if (context->IsCancelled()) return absl::CancelledError("prefill call cancelled");
    KVWIRE_RETURN_IF_ERROR(deadline.Check("prefill"));
    return sender.SendLayer(static_cast<uint32_t>(layer), layer_cache);
  };
  absl::StatusOr<PrefillResult> result =
      options_.synthetic_kv
          ? RunSyntheticPrefill(*options_.synthetic_kv, prompt, compressor, runner->pool(), sink)
          : prefill.Run(prompt, compressor, sink);
  if (!result.ok()) {
    sender.Abort(result.status());
    return result.status();
  }
  // The sink packs each layer into a frame, then waits only when too many frames are in flight.
  const double pack_seconds =
      result->sink_seconds - absl::ToDoubleSeconds(sender.stats().wait_time);
  KVWIRE_RETURN_IF_ERROR(sender.Commit());
  const absl::Duration total = absl::Now() - start;

  kvwire::v1::PrefillResponse response;
  // Synthetic KV has no logits: the last prompt token stands in for the sampled one.
  response.set_first_token_id(static_cast<uint32_t>(
      options_.synthetic_kv ? prompt.back() : runtime::ArgMax(result->last_logits)));
  kvwire::v1::RequestStats& stats = *response.mutable_stats();
  stats.set_request_id(request.request_id());
  stats.set_prompt_tokens(static_cast<uint32_t>(prompt.size()));
  stats.set_budget_kept_fraction(request.kept_fraction());
  stats.set_method(spec.ToString());
  // K and V, every layer and KV head, fp16: what an uncompressed transfer would carry.
  stats.set_raw_kv_bytes(uint64_t{prompt.size()} * kv_shape_.n_layers * kv_shape_.n_kv_heads *
                         kv_shape_.head_dim * 2 * 2);
  stats.set_wire_bytes(sender.stats().wire_bytes);
  stats.set_kept_entries(static_cast<uint64_t>(result->kept_entries));
  stats.set_prefill_ms(result->prefill_seconds * 1e3);
  stats.set_compress_ms(result->compress_seconds * 1e3);
  stats.set_pack_ms(pack_seconds * 1e3);
  stats.set_transfer_ms(absl::ToDoubleMilliseconds(sender.stats().wait_time));
  stats.set_prefill_node_id(options_.node_id);
  stats.set_decode_node_id(request.grant().decode_node_id());
  KVWIRE_LOG(DEBUG) << "request " << request.request_id() << ": prefill+stream took "
                    << absl::FormatDuration(total);
  return response;
}

}  // namespace kvwire::prefill
