// control_plane/budget_policy.h — per-tenant, per-model compression budgets: the policy types,
// the persistent store and the resolution of one request's budget.
//
// A policy applies to (tenant, model); either may be "*". Lookup order: exact, (tenant, "*"),
// ("*", model), ("*", "*"). A policy's default budget is a kept fraction, a byte budget per
// prompt token (converted with the model's raw KV bytes per token) or `auto`: the largest kept
// fraction whose predicted transfer time fits a TTFT target at the measured link bandwidth
// (BandwidthEstimator). Per-request overrides must resolve inside [min_kept_fraction,
// max_kept_fraction].
//
// Persistence: PolicyStore keeps the policies in a YAML file (format in policy_yaml.h), rewritten
// atomically (temp file + rename) on every change. A missing file means the embedded default
// (one "*"/"*" policy); a malformed file is rejected and the policies in force stay unchanged.
//
// Thread-safety: PolicyStore and BandwidthEstimator are thread-safe; the plain structs are
// value types. Error codes: INVALID_ARGUMENT for an invalid policy, a malformed policy file, an
// override outside the limits or an unknown tenant/model; INTERNAL when the file cannot be
// written (the change is then not applied).
#ifndef KVWIRE_CONTROL_PLANE_BUDGET_POLICY_H_
#define KVWIRE_CONTROL_PLANE_BUDGET_POLICY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace kvwire::control_plane {

inline constexpr char kWildcard[] = "*";

enum class BudgetKind { kKeptFraction, kBytesPerToken, kAuto };

struct Budget {
  BudgetKind kind = BudgetKind::kKeptFraction;
  float kept_fraction = 1.0f;            // kKeptFraction: (0, 1]
  uint32_t bytes_per_token = 0;          // kBytesPerToken: wire bytes per prompt token, > 0
  uint32_t auto_ttft_ms = 0;             // kAuto: TTFT target, > 0
  float auto_min_kept_fraction = 0.05f;  // kAuto: never below this, (0, 1]

  static Budget KeptFraction(float f);
  static Budget BytesPerToken(uint32_t bytes);
  static Budget Auto(uint32_t ttft_ms, float min_kept_fraction = 0.05f);
  std::string ToString() const;
  bool operator==(const Budget&) const = default;
};

struct BudgetPolicy {
  std::string tenant = kWildcard;
  std::string model = kWildcard;
  Budget default_budget;
  float min_kept_fraction = 0.01f;  // overrides must resolve to >= this
  float max_kept_fraction = 1.0f;   // ... and <= this
  std::string method;    // compression spec (compress/spec.h grammar); empty = node default
  std::string kv_dtype;  // "", "f16", "bf16", "f32" or "i8"
  bool operator==(const BudgetPolicy&) const = default;
};

// INVALID_ARGUMENT naming the first bad field and its value.
absl::Status ValidateBudget(const Budget& budget, absl::string_view what);
absl::Status ValidatePolicy(const BudgetPolicy& policy);

// The policy in force when no file exists: every tenant and model, kept fraction 0.2, overrides
// within [0.01, 1], method compress::kDefaultMethod.
BudgetPolicy EmbeddedDefaultPolicy();

// Learns the prefill -> decode link bandwidth from completed transfers (exponentially weighted
// mean of wire_bytes / transfer_ms); starts from a configured assumption.
class BandwidthEstimator {
 public:
  explicit BandwidthEstimator(double default_bytes_per_ms, double weight = 0.2)
      : bytes_per_ms_(default_bytes_per_ms), weight_(weight) {}
  // Ignores samples that carry no information (no bytes or no time).
  void Observe(uint64_t wire_bytes, double transfer_ms);
  double bytes_per_ms() const;
  uint64_t samples() const;

 private:
  mutable absl::Mutex mu_;
  double bytes_per_ms_ ABSL_GUARDED_BY(mu_);
  uint64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  const double weight_;
};

// What a request needs to turn a budget into a kept fraction.
struct BudgetContext {
  uint32_t prompt_tokens = 0;
  // Wire bytes of one prompt token's KV with nothing evicted (all layers and KV heads, keys,
  // values and per-entry metadata).
  double raw_bytes_per_token = 0;
  double link_bytes_per_ms = 0;
};

// A kept fraction in (0, 1] for `budget`, before policy limits.
float KeptFractionFor(const Budget& budget, const BudgetContext& context);

struct ResolvedBudget {
  float kept_fraction = 1.0f;
  std::string method;
  std::string kv_dtype;
  std::string policy_key;  // "tenant/model" of the policy that applied
};

// Thread-safe policy table backed by a YAML file.
class PolicyStore {
 public:
  // Loads `path`, or the embedded default when it does not exist. INVALID_ARGUMENT when it
  // exists but is malformed.
  static absl::StatusOr<std::unique_ptr<PolicyStore>> Open(std::string path);

  // Re-reads the file (e.g. after an operator or a ConfigMap replaced it). A malformed file
  // returns INVALID_ARGUMENT and leaves the policies in force unchanged; a missing file keeps
  // them too (NOT_FOUND).
  absl::Status Reload();
  // Reloads only when the file's modification time, size or inode changed since the last read
  // or write; OK when nothing changed.
  absl::Status ReloadIfChanged();

  // Validates, inserts or replaces the policy for (tenant, model) and rewrites the file. On any
  // error nothing changes.
  absl::StatusOr<BudgetPolicy> Set(const BudgetPolicy& policy);
  // The policy that applies to (tenant, model). INVALID_ARGUMENT for an unknown tenant/model.
  absl::StatusOr<BudgetPolicy> Lookup(absl::string_view tenant, absl::string_view model) const;
  std::vector<BudgetPolicy> All() const;

  // The request's budget: the override (if any, validated against the limits) or the policy
  // default (clamped into the limits), plus method (override or policy) and dtype.
  absl::StatusOr<ResolvedBudget> Resolve(absl::string_view tenant, absl::string_view model,
                                         const std::optional<Budget>& override_budget,
                                         absl::string_view override_method,
                                         const BudgetContext& context) const;

  const std::string& path() const { return path_; }

 private:
  struct FileStamp {
    int64_t mtime_ns = -1;
    int64_t size = -1;
    uint64_t inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  explicit PolicyStore(std::string path) : path_(std::move(path)) {}
  static FileStamp StampOf(const std::string& path);
  static const BudgetPolicy* Find(const std::vector<BudgetPolicy>& policies,
                                  absl::string_view tenant, absl::string_view model);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::vector<BudgetPolicy> policies_ ABSL_GUARDED_BY(mu_);
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_BUDGET_POLICY_H_
