#include "control_plane/budget_policy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "control_plane/policy_yaml.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/spec.h"

namespace kvwire::control_plane {
namespace {

bool InUnitInterval(float f) { return std::isfinite(f) && f > 0.0f && f <= 1.0f; }

absl::Status ValidateKvDtype(absl::string_view dtype) {
  if (dtype.empty() || dtype == "f16" || dtype == "bf16" || dtype == "f32" || dtype == "i8") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("kv_dtype '", dtype, "' is not one of f16, bf16, f32, i8"));
}

absl::Status ValidateMethod(absl::string_view method) {
  if (method.empty()) return absl::OkStatus();
  return Annotate(compress::CompressionSpec::Parse(method).status(),
                  absl::StrCat("method '", method, "'"));
}

std::string Key(absl::string_view tenant, absl::string_view model) {
  return absl::StrCat(tenant, "/", model);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Budget Budget::KeptFraction(float f) {
  Budget b;
  b.kind = BudgetKind::kKeptFraction;
  b.kept_fraction = f;
  return b;
}

Budget Budget::BytesPerToken(uint32_t bytes) {
  Budget b;
  b.kind = BudgetKind::kBytesPerToken;
  b.bytes_per_token = bytes;
  return b;
}

Budget Budget::Auto(uint32_t ttft_ms, float min_kept_fraction) {
  Budget b;
  b.kind = BudgetKind::kAuto;
  b.auto_ttft_ms = ttft_ms;
  b.auto_min_kept_fraction = min_kept_fraction;
  return b;
}

std::string Budget::ToString() const {
  switch (kind) {
    case BudgetKind::kKeptFraction:
      return absl::StrFormat("kept_fraction=%g", kept_fraction);
    case BudgetKind::kBytesPerToken:
      return absl::StrCat("bytes_per_token=", bytes_per_token);
    case BudgetKind::kAuto:
      return absl::StrFormat("auto(ttft_ms=%u, min_kept_fraction=%g)", auto_ttft_ms,
                             auto_min_kept_fraction);
  }
  return "?";
}

absl::Status ValidateBudget(const Budget& budget, absl::string_view what) {
  switch (budget.kind) {
    case BudgetKind::kKeptFraction:
      if (InUnitInterval(budget.kept_fraction)) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s kept_fraction must be in (0, 1], got %g", what, budget.kept_fraction));
    case BudgetKind::kBytesPerToken:
      if (budget.bytes_per_token > 0) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(what, " bytes_per_token must be > 0"));
    case BudgetKind::kAuto:
      if (budget.auto_ttft_ms == 0) {
        return absl::InvalidArgumentError(absl::StrCat(what, " auto ttft_ms must be > 0"));
      }
      if (!InUnitInterval(budget.auto_min_kept_fraction)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s auto min_kept_fraction must be in (0, 1], got %g", what,
                            budget.auto_min_kept_fraction));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " has an unknown kind"));
}

absl::Status ValidatePolicy(const BudgetPolicy& p) {
  if (p.tenant.empty()) return absl::InvalidArgumentError("policy tenant is empty (use \"*\")");
  if (p.model.empty()) return absl::InvalidArgumentError("policy model is empty (use \"*\")");
  KVWIRE_RETURN_IF_ERROR(ValidateBudget(p.default_budget, "default budget"));
  if (!InUnitInterval(p.min_kept_fraction) || !InUnitInterval(p.max_kept_fraction) ||
      p.min_kept_fraction > p.max_kept_fraction) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "limits must satisfy 0 < min_kept_fraction <= max_kept_fraction <= 1, got [%g, %g]",
        p.min_kept_fraction, p.max_kept_fraction));
  }
  const Budget& b = p.default_budget;
  if (b.kind == BudgetKind::kKeptFraction &&
      (b.kept_fraction < p.min_kept_fraction || b.kept_fraction > p.max_kept_fraction)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("default kept_fraction %g is outside the policy limits [%g, %g]",
                        b.kept_fraction, p.min_kept_fraction, p.max_kept_fraction));
  }
  KVWIRE_RETURN_IF_ERROR(ValidateMethod(p.method));
  return ValidateKvDtype(p.kv_dtype);
}

BudgetPolicy EmbeddedDefaultPolicy() {
  BudgetPolicy p;
  p.default_budget = Budget::KeptFraction(0.2f);
  p.min_kept_fraction = 0.01f;
  p.max_kept_fraction = 1.0f;
  p.method = compress::kDefaultMethod;
  return p;
}

void BandwidthEstimator::Observe(uint64_t wire_bytes, double transfer_ms) {
  if (wire_bytes == 0 || !(transfer_ms > 0) || !std::isfinite(transfer_ms)) return;
  const double sample = static_cast<double>(wire_bytes) / transfer_ms;
  absl::MutexLock lock(&mu_);
  bytes_per_ms_ = samples_ == 0 ? sample : (1 - weight_) * bytes_per_ms_ + weight_ * sample;
  ++samples_;
}

double BandwidthEstimator::bytes_per_ms() const {
  absl::MutexLock lock(&mu_);
  return bytes_per_ms_;
}

uint64_t BandwidthEstimator::samples() const {
  absl::MutexLock lock(&mu_);
  return samples_;
}

float KeptFractionFor(const Budget& budget, const BudgetContext& c) {
  const double raw_bytes = static_cast<double>(c.prompt_tokens) * c.raw_bytes_per_token;
  double f = 1.0;
  switch (budget.kind) {
    case BudgetKind::kKeptFraction:
      f = budget.kept_fraction;
      break;
    case BudgetKind::kBytesPerToken:
      // Without a known token size nothing can be computed: send everything.
      if (c.raw_bytes_per_token > 0) f = budget.bytes_per_token / c.raw_bytes_per_token;
      break;
    case BudgetKind::kAuto:
      // Transfer time ~ kept bytes / bandwidth; keep the most that still fits the target.
      if (raw_bytes > 0 && c.link_bytes_per_ms > 0) {
        f = budget.auto_ttft_ms * c.link_bytes_per_ms / raw_bytes;
      }
      f = std::max<double>(f, budget.auto_min_kept_fraction);
      break;
  }
  return static_cast<float>(std::clamp(f, 1e-6, 1.0));
}

absl::StatusOr<std::unique_ptr<PolicyStore>> PolicyStore::Open(std::string path) {
  std::unique_ptr<PolicyStore> store(new PolicyStore(std::move(path)));
  absl::Status loaded = store->Reload();
  if (absl::IsNotFound(loaded)) {
    KVWIRE_LOG(INFO) << "policy file " << store->path_
                     << " does not exist; using the embedded default policy";
    absl::MutexLock lock(&store->mu_);
    store->policies_ = {EmbeddedDefaultPolicy()};
    return store;
  }
  KVWIRE_RETURN_IF_ERROR(loaded);
  return store;
}

PolicyStore::FileStamp PolicyStore::StampOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<int64_t>(st.st_size), static_cast<uint64_t>(st.st_ino)};
}

absl::Status PolicyStore::Reload() {
  const FileStamp stamp = StampOf(path_);
  KVWIRE_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path_));
  absl::StatusOr<std::vector<BudgetPolicy>> parsed = ParsePolicies(text, path_);
  absl::MutexLock lock(&mu_);
  // Remember the bad file too, so a poller does not re-report it until it changes again.
  stamp_ = stamp;
  if (!parsed.ok()) return parsed.status();
  if (parsed->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": 'policies' is empty"));
  }
  policies_ = *std::move(parsed);
  return absl::OkStatus();
}

absl::Status PolicyStore::ReloadIfChanged() {
  {
    absl::MutexLock lock(&mu_);
    if (StampOf(path_) == stamp_) return absl::OkStatus();
  }
  absl::Status status = Reload();
  return absl::IsNotFound(status) ? absl::OkStatus() : status;
}

absl::StatusOr<BudgetPolicy> PolicyStore::Set(const BudgetPolicy& policy) {
  KVWIRE_RETURN_IF_ERROR(ValidatePolicy(policy));
  absl::MutexLock lock(&mu_);
  std::vector<BudgetPolicy> next = policies_;
  auto it = std::find_if(next.begin(), next.end(), [&](const BudgetPolicy& p) {
    return p.tenant == policy.tenant && p.model == policy.model;
  });
  if (it != next.end()) {
    *it = policy;
  } else {
    next.push_back(policy);
  }
  KVWIRE_RETURN_IF_ERROR(WriteFileAtomically(path_, SerializePolicies(next)));
  policies_ = std::move(next);
  stamp_ = StampOf(path_);
  return policy;
}

const BudgetPolicy* PolicyStore::Find(const std::vector<BudgetPolicy>& policies,
                                      absl::string_view tenant, absl::string_view model) {
  const std::pair<absl::string_view, absl::string_view> order[] = {
      {tenant, model}, {tenant, kWildcard}, {kWildcard, model}, {kWildcard, kWildcard}};
  for (const auto& [t, m] : order) {
    for (const BudgetPolicy& p : policies) {
      if (p.tenant == t && p.model == m) return &p;
    }
  }
  return nullptr;
}

absl::StatusOr<BudgetPolicy> PolicyStore::Lookup(absl::string_view tenant,
                                                 absl::string_view model) const {
  absl::MutexLock lock(&mu_);
  const BudgetPolicy* p = Find(policies_, tenant, model);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown tenant '", tenant, "' for model '", model,
                     "': no budget policy matches it and there is no wildcard policy"));
  }
  return *p;
}

std::vector<BudgetPolicy> PolicyStore::All() const {
  absl::MutexLock lock(&mu_);
  return policies_;
}

absl::StatusOr<ResolvedBudget> PolicyStore::Resolve(absl::string_view tenant,
                                                    absl::string_view model,
                                                    const std::optional<Budget>& override_budget,
                                                    absl::string_view override_method,
                                                    const BudgetContext& context) const {
  KVWIRE_ASSIGN_OR_RETURN(BudgetPolicy policy, Lookup(tenant, model));
  ResolvedBudget out;
  out.policy_key = Key(policy.tenant, policy.model);
  out.kv_dtype = policy.kv_dtype;
  out.method = override_method.empty() ? policy.method : std::string(override_method);
  KVWIRE_RETURN_IF_ERROR(ValidateMethod(out.method));
  if (!override_budget.has_value()) {
    out.kept_fraction = std::clamp(KeptFractionFor(policy.default_budget, context),
                                   policy.min_kept_fraction, policy.max_kept_fraction);
    return out;
  }
  KVWIRE_RETURN_IF_ERROR(ValidateBudget(*override_budget, "budget override"));
  const float f = KeptFractionFor(*override_budget, context);
  if (override_budget->kind == BudgetKind::kAuto) {
    // An adaptive request asks for "as much as fits": the limits bound it instead of failing it.
    out.kept_fraction = std::clamp(f, policy.min_kept_fraction, policy.max_kept_fraction);
    return out;
  }
  if (f < policy.min_kept_fraction || f > policy.max_kept_fraction) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "budget override %s (kept fraction %g) is outside the limits [%g, %g] of policy %s",
        override_budget->ToString(), f, policy.min_kept_fraction, policy.max_kept_fraction,
        out.policy_key));
  }
  out.kept_fraction = f;
  return out;
}

}  // namespace kvwire::control_plane
