#include "control_plane/policy_yaml.h"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/status.h"

namespace kvwire::control_plane {
namespace {

// yaml-cpp reports problems by throwing; every call into it stays inside this file's try blocks.
absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status CheckKeys(const YAML::Node& map, const std::set<std::string>& allowed,
                       absl::string_view where) {
  if (!map.IsMap()) return Bad(where, "expected a mapping");
  for (const auto& item : map) {
    const std::string key = item.first.as<std::string>();
    if (allowed.count(key) == 0) return Bad(where, absl::StrCat("unknown key '", key, "'"));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadScalar(const YAML::Node& map, const char* key, absl::string_view where, T* out) {
  const YAML::Node node = map[key];
  if (!node) return absl::OkStatus();
  if (!node.IsScalar()) return Bad(where, absl::StrCat("'", key, "' must be a scalar"));
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception&) {
    return Bad(where, absl::StrCat("'", key, "' has an invalid value '", node.Scalar(), "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Budget> ParseBudget(const YAML::Node& node, absl::string_view where) {
  KVWIRE_RETURN_IF_ERROR(CheckKeys(node, {"kept_fraction", "bytes_per_token", "auto"}, where));
  if (node.size() != 1) {
    return Bad(where, "'budget' needs exactly one of kept_fraction, bytes_per_token, auto");
  }
  Budget budget;
  if (node["kept_fraction"]) {
    budget.kind = BudgetKind::kKeptFraction;
    KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "kept_fraction", where, &budget.kept_fraction));
  } else if (node["bytes_per_token"]) {
    budget.kind = BudgetKind::kBytesPerToken;
    KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "bytes_per_token", where, &budget.bytes_per_token));
  } else {
    budget.kind = BudgetKind::kAuto;
    const YAML::Node a = node["auto"];
    const std::string auto_where = absl::StrCat(where, ".auto");
    KVWIRE_RETURN_IF_ERROR(CheckKeys(a, {"ttft_ms", "min_kept_fraction"}, auto_where));
    if (!a["ttft_ms"]) return Bad(auto_where, "missing 'ttft_ms'");
    KVWIRE_RETURN_IF_ERROR(ReadScalar(a, "ttft_ms", auto_where, &budget.auto_ttft_ms));
    KVWIRE_RETURN_IF_ERROR(
        ReadScalar(a, "min_kept_fraction", auto_where, &budget.auto_min_kept_fraction));
  }
  return budget;
}

absl::StatusOr<BudgetPolicy> ParsePolicy(const YAML::Node& node, absl::string_view where) {
  KVWIRE_RETURN_IF_ERROR(CheckKeys(
      node,
      {"tenant", "model", "budget", "min_kept_fraction", "max_kept_fraction", "method", "kv_dtype"},
      where));
  BudgetPolicy policy;
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "tenant", where, &policy.tenant));
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "model", where, &policy.model));
  if (!node["budget"]) return Bad(where, "missing 'budget'");
  KVWIRE_ASSIGN_OR_RETURN(policy.default_budget,
                          ParseBudget(node["budget"], absl::StrCat(where, ".budget")));
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "min_kept_fraction", where, &policy.min_kept_fraction));
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "max_kept_fraction", where, &policy.max_kept_fraction));
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "method", where, &policy.method));
  KVWIRE_RETURN_IF_ERROR(ReadScalar(node, "kv_dtype", where, &policy.kv_dtype));
  absl::Status valid = ValidatePolicy(policy);
  if (!valid.ok()) return Bad(where, valid.message());
  return policy;
}

absl::StatusOr<std::vector<BudgetPolicy>> ParseRoot(const YAML::Node& root,
                                                    absl::string_view source) {
  KVWIRE_RETURN_IF_ERROR(CheckKeys(root, {"policies"}, source));
  const YAML::Node list = root["policies"];
  if (!list || !list.IsSequence()) return Bad(source, "'policies' must be a list");
  std::vector<BudgetPolicy> policies;
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = absl::StrCat(source, ": policies[", i, "]");
    KVWIRE_ASSIGN_OR_RETURN(BudgetPolicy policy, ParsePolicy(list[i], where));
    if (!seen.insert({policy.tenant, policy.model}).second) {
      return Bad(where, absl::StrCat("duplicate policy for tenant '", policy.tenant,
                                     "' and model '", policy.model, "'"));
    }
    policies.push_back(std::move(policy));
  }
  return policies;
}

// Shortest text that reads back as the same float (yaml-cpp would print 0.01f as 0.00999999978).
std::string FloatText(float value) {
  char buffer[32];
  const std::to_chars_result r = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, r.ptr);
}

void EmitBudget(const Budget& budget, YAML::Emitter& out) {
  out << YAML::Key << "budget" << YAML::Value << YAML::BeginMap;
  switch (budget.kind) {
    case BudgetKind::kKeptFraction:
      out << YAML::Key << "kept_fraction" << YAML::Value << FloatText(budget.kept_fraction);
      break;
    case BudgetKind::kBytesPerToken:
      out << YAML::Key << "bytes_per_token" << YAML::Value << budget.bytes_per_token;
      break;
    case BudgetKind::kAuto:
      out << YAML::Key << "auto" << YAML::Value << YAML::BeginMap << YAML::Key << "ttft_ms"
          << YAML::Value << budget.auto_ttft_ms << YAML::Key << "min_kept_fraction" << YAML::Value
          << FloatText(budget.auto_min_kept_fraction) << YAML::EndMap;
      break;
  }
  out << YAML::EndMap;
}

}  // namespace

absl::StatusOr<std::vector<BudgetPolicy>> ParsePolicies(absl::string_view text,
                                                        absl::string_view source) {
  try {
    return ParseRoot(YAML::Load(std::string(text)), source);
  } catch (const YAML::Exception& e) {
    return Bad(source, absl::StrCat("not valid YAML: line ", e.mark.line + 1, ", column ",
                                    e.mark.column + 1, ": ", e.msg));
  }
}

std::string SerializePolicies(const std::vector<BudgetPolicy>& policies) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "policies" << YAML::Value << YAML::BeginSeq;
  for (const BudgetPolicy& p : policies) {
    out << YAML::BeginMap;
    out << YAML::Key << "tenant" << YAML::Value << YAML::DoubleQuoted << p.tenant;
    out << YAML::Key << "model" << YAML::Value << YAML::DoubleQuoted << p.model;
    EmitBudget(p.default_budget, out);
    out << YAML::Key << "min_kept_fraction" << YAML::Value << FloatText(p.min_kept_fraction);
    out << YAML::Key << "max_kept_fraction" << YAML::Value << FloatText(p.max_kept_fraction);
    if (!p.method.empty()) out << YAML::Key << "method" << YAML::Value << p.method;
    if (!p.kv_dtype.empty()) out << YAML::Key << "kv_dtype" << YAML::Value << p.kv_dtype;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return absl::StrCat("# kvwire budget policies (rewritten by kvwire-control on every change)\n",
                      out.c_str(), "\n");
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::string temp = absl::StrCat(path, ".tmp-", NewRequestId());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", temp, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  bool ok = true;
  while (ok && done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int saved = errno;
  ok = (::close(fd) == 0) && ok;
  if (ok && ::rename(temp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  const std::string reason = std::strerror(ok ? errno : saved);
  ::unlink(temp.c_str());
  return absl::InternalError(absl::StrCat("cannot write ", path, ": ", reason));
}

}  // namespace kvwire::control_plane
