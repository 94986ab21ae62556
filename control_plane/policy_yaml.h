// control_plane/policy_yaml.h — the budget policy file format (YAML, yaml-cpp) and atomic file
// replacement.
//
//   policies:
//     - tenant: "*"                # "*" = any tenant
//       model: "*"                 # "*" = any model
//       budget: {kept_fraction: 0.5}   # or {bytes_per_token: 4096}
//                                      # or {auto: {ttft_ms: 200, min_kept_fraction: 0.05}}
//       min_kept_fraction: 0.01    # per-request overrides must stay within these
//       max_kept_fraction: 1.0
//       method: snapkv/adaptive    # optional, compress/spec.h grammar
//       kv_dtype: f16              # optional: f16, bf16, f32, i8
//
// Unknown keys, a missing budget, two budget kinds, duplicate (tenant, model) pairs and invalid
// values are INVALID_ARGUMENT naming the file, the policy index and the field. Thread-safety:
// pure functions (WriteFileAtomically is safe for distinct paths).
#ifndef KVWIRE_CONTROL_PLANE_POLICY_YAML_H_
#define KVWIRE_CONTROL_PLANE_POLICY_YAML_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "control_plane/budget_policy.h"

namespace kvwire::control_plane {

// `source` names the text in error messages (usually the file path).
absl::StatusOr<std::vector<BudgetPolicy>> ParsePolicies(absl::string_view text,
                                                        absl::string_view source);
std::string SerializePolicies(const std::vector<BudgetPolicy>& policies);

// Writes `contents` to a temporary file beside `path`, flushes it to disk and renames it over
// `path`, so readers see the old or the new file, never a partial one. INTERNAL on failure (the
// temporary file is removed).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_POLICY_YAML_H_
