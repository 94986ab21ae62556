#include "control_plane/proto_convert.h"

namespace kvwire::control_plane {

std::optional<Budget> BudgetFromProto(const v1::Budget& b) {
  switch (b.kind_case()) {
    case v1::Budget::kKeptFraction:
      return Budget::KeptFraction(b.kept_fraction());
    case v1::Budget::kBytesPerToken:
      return Budget::BytesPerToken(b.bytes_per_token());
    case v1::Budget::kAutoBudget: {
      const float min = b.auto_budget().min_kept_fraction();
      return Budget::Auto(b.auto_budget().ttft_target_ms(), min == 0 ? 0.05f : min);
    }
    case v1::Budget::KIND_NOT_SET:
      break;
  }
  return std::nullopt;
}

v1::Budget BudgetToProto(const Budget& b) {
  v1::Budget out;
  switch (b.kind) {
    case BudgetKind::kKeptFraction:
      out.set_kept_fraction(b.kept_fraction);
      break;
    case BudgetKind::kBytesPerToken:
      out.set_bytes_per_token(b.bytes_per_token);
      break;
    case BudgetKind::kAuto:
      out.mutable_auto_budget()->set_ttft_target_ms(b.auto_ttft_ms);
      out.mutable_auto_budget()->set_min_kept_fraction(b.auto_min_kept_fraction);
      break;
  }
  return out;
}

BudgetPolicy PolicyFromProto(const v1::BudgetPolicy& p) {
  BudgetPolicy out;
  out.tenant = p.tenant();
  out.model = p.model();
  out.default_budget = BudgetFromProto(p.default_budget()).value_or(Budget::KeptFraction(0));
  out.min_kept_fraction = p.min_kept_fraction();
  // An unset maximum means "no cap" rather than "keep nothing".
  out.max_kept_fraction = p.max_kept_fraction() == 0 ? 1.0f : p.max_kept_fraction();
  out.method = p.compression().method();
  out.kv_dtype = p.compression().kv_dtype();
  return out;
}

v1::BudgetPolicy PolicyToProto(const BudgetPolicy& p) {
  v1::BudgetPolicy out;
  out.set_tenant(p.tenant);
  out.set_model(p.model);
  *out.mutable_default_budget() = BudgetToProto(p.default_budget);
  out.set_min_kept_fraction(p.min_kept_fraction);
  out.set_max_kept_fraction(p.max_kept_fraction);
  out.mutable_compression()->set_method(p.method);
  out.mutable_compression()->set_kv_dtype(p.kv_dtype);
  return out;
}

NodeDescription NodeFromProto(const v1::NodeInfo& n) {
  NodeDescription out;
  out.node_id = n.node_id();
  out.role = static_cast<NodeRole>(n.role());
  out.grpc_address = n.grpc_address();
  out.model_fingerprint = n.model_fingerprint();
  out.model_name = n.model_name();
  out.transport = n.transport();
  out.capacity = n.capacity();
  out.in_flight = n.in_flight();
  out.free_kv_bytes = n.free_kv_bytes();
  out.link_gbps = n.link_gbps();
  return out;
}

v1::NodeInfo NodeToProto(const NodeDescription& n) {
  v1::NodeInfo out;
  out.set_node_id(n.node_id);
  out.set_role(static_cast<v1::NodeRole>(n.role));
  out.set_grpc_address(n.grpc_address);
  out.set_model_fingerprint(n.model_fingerprint);
  out.set_model_name(n.model_name);
  out.set_transport(static_cast<v1::TransportKind>(n.transport));
  out.set_capacity(n.capacity);
  out.set_in_flight(n.in_flight);
  out.set_free_kv_bytes(n.free_kv_bytes);
  out.set_link_gbps(n.link_gbps);
  return out;
}

RequestRecord RecordFromProto(const v1::RequestStats& s) {
  RequestRecord r;
  r.request_id = s.request_id();
  r.prompt_tokens = s.prompt_tokens();
  r.generated_tokens = s.generated_tokens();
  r.budget_kept_fraction = s.budget_kept_fraction();
  r.method = s.method();
  r.raw_kv_bytes = s.raw_kv_bytes();
  r.wire_bytes = s.wire_bytes();
  r.kept_entries = s.kept_entries();
  r.prefill_ms = s.prefill_ms();
  r.compress_ms = s.compress_ms();
  r.transfer_ms = s.transfer_ms();
  r.install_ms = s.install_ms();
  r.pack_ms = s.pack_ms();
  r.queue_ms = s.queue_ms();
  r.ttft_ms = s.ttft_ms();
  r.decode_tokens_per_s = s.decode_tokens_per_s();
  r.prefill_node_id = s.prefill_node_id();
  r.decode_node_id = s.decode_node_id();
  r.finish_reason = s.finish_reason();
  return r;
}

v1::RequestStats RecordToProto(const RequestRecord& r) {
  v1::RequestStats s;
  s.set_request_id(r.request_id);
  s.set_prompt_tokens(r.prompt_tokens);
  s.set_generated_tokens(r.generated_tokens);
  s.set_budget_kept_fraction(r.budget_kept_fraction);
  s.set_method(r.method);
  s.set_raw_kv_bytes(r.raw_kv_bytes);
  s.set_wire_bytes(r.wire_bytes);
  s.set_kept_entries(r.kept_entries);
  s.set_prefill_ms(r.prefill_ms);
  s.set_compress_ms(r.compress_ms);
  s.set_transfer_ms(r.transfer_ms);
  s.set_install_ms(r.install_ms);
  s.set_pack_ms(r.pack_ms);
  s.set_queue_ms(r.queue_ms);
  s.set_ttft_ms(r.ttft_ms);
  s.set_decode_tokens_per_s(r.decode_tokens_per_s);
  s.set_prefill_node_id(r.prefill_node_id);
  s.set_decode_node_id(r.decode_node_id);
  s.set_finish_reason(r.finish_reason);
  return s;
}

GenerateInput InputFromProto(const v1::GenerateRequest& req) {
  GenerateInput in;
  in.tenant = req.tenant();
  in.model = req.model();
  in.is_chat = req.has_chat();
  in.prompt = req.prompt();
  for (const v1::ChatMessage& m : req.chat().messages())
    in.messages.push_back({m.role(), m.content()});
  in.max_tokens = req.sampling().max_tokens();
  in.temperature = req.sampling().temperature();
  in.top_p = req.sampling().top_p();
  in.budget = BudgetFromProto(req.budget());
  in.method = req.compression().method();
  in.kv_dtype = req.compression().kv_dtype();
  return in;
}

}  // namespace kvwire::control_plane
