// tools/cli_format.h — human-readable renderings of ControlPlane replies for the `kvwire` CLI.
// Thread-safety: pure functions. No error codes.
#ifndef KVWIRE_TOOLS_CLI_FORMAT_H_
#define KVWIRE_TOOLS_CLI_FORMAT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "kvwire/v1/control_plane.pb.h"

namespace kvwire::cli {

// "1.50 MiB" style sizes.
std::string FormatBytes(uint64_t bytes);
// The stats block printed after a generation: budget, raw -> wire bytes, transfer, TTFT, tokens/s.
std::string FormatRequestStats(const v1::RequestStats& stats);
std::string FormatBudget(const v1::Budget& budget);
std::string FormatPolicy(const v1::BudgetPolicy& policy);
std::string FormatNodes(const v1::ListNodesResponse& nodes);
std::string FormatStats(const v1::GetStatsResponse& stats);
// `text` as a JSON string literal (quotes, backslashes and control characters escaped).
std::string JsonQuote(absl::string_view text);
// Compact JSON of any message (proto3 JSON mapping, field names as in the .proto).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace kvwire::cli

#endif  // KVWIRE_TOOLS_CLI_FORMAT_H_
