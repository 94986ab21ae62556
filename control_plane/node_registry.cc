#include "control_plane/node_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvwire/base/log.h"

namespace kvwire::control_plane {
namespace {

absl::Status ValidateNode(const NodeDescription& node) {
  if (node.node_id.empty()) return absl::InvalidArgumentError("node_id is empty");
  if (node.role != NodeRole::kPrefill && node.role != NodeRole::kDecode) {
    return absl::InvalidArgumentError(absl::StrCat("node ", node.node_id,
                                                   ": role must be prefill or decode, got ",
                                                   static_cast<int>(node.role)));
  }
  if (node.grpc_address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", node.node_id, ": grpc_address is empty"));
  }
  if (node.capacity == 0) {
    return absl::InvalidArgumentError(absl::StrCat("node ", node.node_id, ": capacity is 0"));
  }
  return absl::OkStatus();
}

const char* RoleName(NodeRole role) { return role == NodeRole::kPrefill ? "prefill" : "decode"; }

}  // namespace

double LoadOf(const NodeDescription& node) {
  if (node.capacity == 0) return 1.0;
  return static_cast<double>(node.in_flight) / node.capacity;
}

absl::StatusOr<absl::Duration> NodeRegistry::Register(const NodeDescription& node) {
  if (absl::Status s = ValidateNode(node); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const bool known = nodes_.contains(node.node_id);
  nodes_[node.node_id] = Entry{node, clock_() + lease_};
  KVWIRE_LOG(INFO) << (known ? "re-registered " : "registered ") << RoleName(node.role) << " node "
                   << node.node_id << " at " << node.grpc_address;
  return lease_;
}

bool NodeRegistry::Heartbeat(const NodeDescription& node) {
  absl::MutexLock lock(&mu_);
  DropExpiredLocked();
  auto it = nodes_.find(node.node_id);
  if (it == nodes_.end() || ValidateNode(node).ok() == false) return false;
  it->second = Entry{node, clock_() + lease_};
  return true;
}

void NodeRegistry::DropExpiredLocked() {
  const absl::Time now = clock_();
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (it->second.expires <= now) {
      KVWIRE_LOG(WARNING) << RoleName(it->second.node.role) << " node " << it->first
                          << " missed its lease; out of rotation";
      nodes_.erase(it++);
    } else {
      ++it;
    }
  }
}

std::vector<NodeDescription> NodeRegistry::List() {
  absl::MutexLock lock(&mu_);
  DropExpiredLocked();
  std::vector<NodeDescription> out;
  for (const auto& [id, entry] : nodes_) out.push_back(entry.node);
  std::sort(out.begin(), out.end(), [](const NodeDescription& a, const NodeDescription& b) {
    return std::pair(a.role, a.node_id) < std::pair(b.role, b.node_id);
  });
  return out;
}

std::vector<const NodeRegistry::Entry*> NodeRegistry::CandidatesLocked(
    NodeRole role, const std::string& model, const NodeExclusions& excluded) {
  DropExpiredLocked();
  std::vector<const Entry*> out;
  for (const auto& [id, entry] : nodes_) {
    const NodeDescription& n = entry.node;
    if (n.role != role || excluded.contains(id)) continue;
    if (!model.empty() && !n.model_name.empty() && n.model_name != model) continue;
    out.push_back(&entry);
  }
  // Deterministic tie-break by id keeps routing reproducible in tests and logs.
  std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) {
    const double la = LoadOf(a->node), lb = LoadOf(b->node);
    if (la != lb) return la < lb;
    if (a->node.free_kv_bytes != b->node.free_kv_bytes) {
      return a->node.free_kv_bytes > b->node.free_kv_bytes;
    }
    return a->node.node_id < b->node.node_id;
  });
  return out;
}

absl::StatusOr<NodeDescription> NodeRegistry::PickPrefill(const std::string& model,
                                                          const NodeExclusions& excluded) {
  absl::MutexLock lock(&mu_);
  std::vector<const Entry*> c = CandidatesLocked(NodeRole::kPrefill, model, excluded);
  if (c.empty()) return absl::UnavailableError("no prefill node available");
  return c.front()->node;
}

absl::StatusOr<NodeDescription> NodeRegistry::PickDecode(const std::string& model,
                                                         const NodeExclusions& excluded) {
  absl::MutexLock lock(&mu_);
  std::vector<const Entry*> c = CandidatesLocked(NodeRole::kDecode, model, excluded);
  if (c.empty()) return absl::UnavailableError("no decode node available");
  const Entry* best = c.front();
  if (best->node.in_flight >= best->node.capacity) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", c.size(), " decode nodes are at capacity"));
  }
  return best->node;
}

void NodeRegistry::AddInFlight(const std::string& node_id, int delta) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  uint32_t& in_flight = it->second.node.in_flight;
  in_flight = delta < 0 && static_cast<uint32_t>(-delta) > in_flight ? 0 : in_flight + delta;
}

}  // namespace kvwire::control_plane
