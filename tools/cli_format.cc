#include "tools/cli_format.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwire::cli {

std::string FormatBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.2f %s", value, units[unit]);
}

std::string FormatRequestStats(const v1::RequestStats& s) {
  const double ratio =
      s.wire_bytes() > 0 ? static_cast<double>(s.raw_kv_bytes()) / s.wire_bytes() : 0;
  std::string out;
  absl::StrAppendFormat(&out, "request    %016x (prefill %s, decode %s)\n", s.request_id(),
                        s.prefill_node_id(), s.decode_node_id());
  absl::StrAppendFormat(&out, "budget     kept fraction %.3f, method %s\n",
                        s.budget_kept_fraction(),
                        s.method().empty() ? "(node default)" : s.method());
  absl::StrAppendFormat(&out, "kv bytes   %s raw -> %s wire (%.2fx), %u entries kept\n",
                        FormatBytes(s.raw_kv_bytes()), FormatBytes(s.wire_bytes()), ratio,
                        s.kept_entries());
  absl::StrAppendFormat(&out,
                        "timing     prefill %.1f ms, compress %.1f ms, transfer %.1f ms, "
                        "install %.1f ms\n",
                        s.prefill_ms(), s.compress_ms(), s.transfer_ms(), s.install_ms());
  absl::StrAppendFormat(&out, "ttft       %.1f ms\n", s.ttft_ms());
  absl::StrAppendFormat(&out, "tokens     %u prompt, %u generated, %.1f tokens/s (%s)\n",
                        s.prompt_tokens(), s.generated_tokens(), s.decode_tokens_per_s(),
                        s.finish_reason());
  return out;
}

std::string FormatBudget(const v1::Budget& b) {
  switch (b.kind_case()) {
    case v1::Budget::kKeptFraction:
      return absl::StrFormat("kept_fraction %g", b.kept_fraction());
    case v1::Budget::kBytesPerToken:
      return absl::StrCat("bytes_per_token ", b.bytes_per_token());
    case v1::Budget::kAutoBudget:
      return absl::StrFormat("auto (ttft %u ms, min kept %g)", b.auto_budget().ttft_target_ms(),
                             b.auto_budget().min_kept_fraction());
    case v1::Budget::KIND_NOT_SET:
      break;
  }
  return "(unset)";
}

std::string FormatPolicy(const v1::BudgetPolicy& p) {
  return absl::StrFormat(
      "tenant %-12s model %-12s %s, limits [%g, %g], method %s%s", p.tenant(), p.model(),
      FormatBudget(p.default_budget()), p.min_kept_fraction(), p.max_kept_fraction(),
      p.compression().method().empty() ? "(node default)" : p.compression().method(),
      p.compression().kv_dtype().empty() ? ""
                                         : absl::StrCat(", kv_dtype ", p.compression().kv_dtype()));
}

std::string FormatNodes(const v1::ListNodesResponse& r) {
  if (r.nodes().empty()) return "no live nodes\n";
  std::string out = absl::StrFormat("%-20s %-8s %-22s %-12s %9s %12s\n", "NODE", "ROLE", "ADDRESS",
                                    "MODEL", "LOAD", "FREE KV");
  for (const v1::NodeInfo& n : r.nodes()) {
    absl::StrAppendFormat(&out, "%-20s %-8s %-22s %-12s %4u/%-4u %12s\n", n.node_id(),
                          n.role() == v1::NODE_ROLE_PREFILL ? "prefill" : "decode",
                          n.grpc_address(), n.model_name(), n.in_flight(), n.capacity(),
                          FormatBytes(n.free_kv_bytes()));
  }
  return out;
}

std::string FormatStats(const v1::GetStatsResponse& s) {
  std::string out;
  absl::StrAppendFormat(&out, "requests   %u total, %u failed, %u in flight\n", s.requests_total(),
                        s.requests_failed(), s.requests_in_flight());
  absl::StrAppendFormat(&out, "kv bytes   %s raw -> %s wire\n", FormatBytes(s.raw_kv_bytes_total()),
                        FormatBytes(s.wire_bytes_total()));
  absl::StrAppendFormat(&out, "ttft       p50 %.1f ms, p99 %.1f ms\n", s.ttft_p50_ms(),
                        s.ttft_p99_ms());
  for (const v1::RequestStats& r : s.recent()) {
    absl::StrAppendFormat(&out, "  %016x  %u+%u tokens  kept %.3f  %s -> %s  ttft %.1f ms\n",
                          r.request_id(), r.prompt_tokens(), r.generated_tokens(),
                          r.budget_kept_fraction(), FormatBytes(r.raw_kv_bytes()),
                          FormatBytes(r.wire_bytes()), r.ttft_ms());
  }
  return out;
}

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  // Printing a well-formed in-memory message cannot fail; an empty string would show if it did.
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

}  // namespace kvwire::cli
