#include "kvwire/compress/spec.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kvwire/base/status.h"

namespace kvwire::compress {
namespace {

absl::Status Bad(absl::string_view spec, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "compression spec '", spec, "': ", why,
      " (expected SCORER[+critical][+recent[=SHARE]]/ALLOCATOR[/merge[:zip|:guarded]] with SCORER "
      "in window|h2o|snapkv|defensive|recon|gate and ALLOCATOR in uniform|adaptive|global)"));
}

bool ParseScorer(absl::string_view s, ScorerKind* out) {
  if (s == "window") *out = ScorerKind::kWindow;
  else if (s == "h2o") *out = ScorerKind::kH2O;
  else if (s == "snapkv") *out = ScorerKind::kSnapKV;
  else if (s == "defensive") *out = ScorerKind::kDefensive;
  else if (s == "recon") *out = ScorerKind::kRecon;
  else if (s == "gate") *out = ScorerKind::kGate;
  else return false;
  return true;
}

bool ParseAllocator(absl::string_view s, AllocatorKind* out) {
  if (s == "uniform") *out = AllocatorKind::kUniform;
  else if (s == "adaptive") *out = AllocatorKind::kAdaptive;
  else if (s == "global") *out = AllocatorKind::kGlobal;
  else return false;
  return true;
}

const char* ScorerName(ScorerKind k) {
  switch (k) {
    case ScorerKind::kWindow: return "window";
    case ScorerKind::kH2O: return "h2o";
    case ScorerKind::kSnapKV: return "snapkv";
    case ScorerKind::kDefensive: return "defensive";
    case ScorerKind::kRecon: return "recon";
    case ScorerKind::kGate: return "gate";
  }
  return "?";
}

const char* AllocatorName(AllocatorKind k) {
  switch (k) {
    case AllocatorKind::kUniform: return "uniform";
    case AllocatorKind::kAdaptive: return "adaptive";
    case AllocatorKind::kGlobal: return "global";
  }
  return "?";
}

// "+critical", "+recent" (share by budget) or "+recent=SHARE", each at most once.
absl::Status ParseModifier(absl::string_view text, absl::string_view word, CompressionSpec* spec) {
  if (word == "critical" && !spec->critical) {
    spec->critical = true;
    return absl::OkStatus();
  }
  absl::string_view rest = word;
  if (absl::ConsumePrefix(&rest, "recent") && spec->recent_share == 0.0f &&
      !spec->recent_by_budget) {
    if (rest.empty()) {
      spec->recent_by_budget = true;
      return absl::OkStatus();
    }
    float share = 0;
    if (!absl::ConsumePrefix(&rest, "=") || !absl::SimpleAtof(rest, &share) ||
        !(share > 0.0f && share <= 1.0f)) {
      return Bad(text, "'+recent=SHARE' needs a share in (0, 1]");
    }
    spec->recent_share = share;
    return absl::OkStatus();
  }
  return Bad(text, absl::StrCat("unknown or repeated scorer modifier '+", word,
                                "' (modifiers: +critical, +recent[=SHARE])"));
}

}  // namespace

absl::StatusOr<CompressionSpec> CompressionSpec::Parse(absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  if (parts.size() < 2 || parts.size() > 3) return Bad(text, "needs 2 or 3 '/'-separated parts");
  CompressionSpec spec;
  const std::vector<absl::string_view> scorer = absl::StrSplit(parts[0], '+');
  if (!ParseScorer(scorer[0], &spec.scorer)) return Bad(text, absl::StrCat("unknown scorer '", scorer[0], "'"));
  for (size_t i = 1; i < scorer.size(); ++i) {
    KVWIRE_RETURN_IF_ERROR(ParseModifier(text, scorer[i], &spec));
  }
  if (!ParseAllocator(parts[1], &spec.allocator)) {
    return Bad(text, absl::StrCat("unknown allocator '", parts[1], "'"));
  }
  if (parts.size() == 3) {
    if (parts[2] == "merge" || parts[2] == "merge:guarded") spec.merge = MergeMode::kGuarded;
    else if (parts[2] == "merge:zip") spec.merge = MergeMode::kZip;
    else return Bad(text, absl::StrCat("unknown third part '", parts[2], "'"));
  }
  return spec;
}

std::string CompressionSpec::ToString() const {
  std::string s = absl::StrCat(ScorerName(scorer), critical ? "+critical" : "");
  if (recent_by_budget) absl::StrAppend(&s, "+recent");
  else if (recent_share > 0) absl::StrAppend(&s, "+recent=", recent_share);
  absl::StrAppend(&s, "/", AllocatorName(allocator));
  if (merge == MergeMode::kGuarded) absl::StrAppend(&s, "/merge");
  if (merge == MergeMode::kZip) absl::StrAppend(&s, "/merge:zip");
  return s;
}

int64_t CompressionSpec::QueryRows(int64_t prompt_length) const {
  if (scorer == ScorerKind::kH2O) return prompt_length;
  return std::min<int64_t>(window, prompt_length);
}

float CompressionSpec::RecentShareFor(double kept_fraction) const {
  if (!recent_by_budget) return recent_share;
  return static_cast<float>(std::clamp(1.2 - 3.0 * kept_fraction, 0.5, 0.9));
}

absl::Status CompressionSpec::Validate() const {
  if (sinks < 0 || window < 1) return absl::InvalidArgumentError("sinks must be >= 0, window >= 1");
  if (!(recent_share >= 0 && recent_share <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("recent_share must be in [0, 1], got ", recent_share));
  }
  if (pool_kernel < 1 || pool_kernel % 2 == 0) return absl::InvalidArgumentError("pool_kernel must be odd");
  if (!(critical_alpha >= 0 && critical_alpha <= 1) || !(adaptive_floor >= 0 && adaptive_floor <= 1)) {
    return absl::InvalidArgumentError("critical_alpha and adaptive_floor must be in [0, 1]");
  }
  if (!(merge_threshold >= -1 && merge_threshold <= 1)) {
    return absl::InvalidArgumentError("merge_threshold must be in [-1, 1]");
  }
  return absl::OkStatus();
}

}  // namespace kvwire::compress
