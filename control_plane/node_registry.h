// control_plane/node_registry.h — soft-state membership of prefill and decode nodes, and routing.
//
// Nodes Register, then Heartbeat within their lease; a node whose lease ran out is out of
// rotation (and dropped from listings) until it registers or heartbeats again. The registry is
// rebuilt from heartbeats after a control-plane restart: a heartbeat from an unknown node answers
// `known = false` so the node registers again.
//
// Routing: the prefill node with the lowest in_flight / capacity; a decode node with free
// capacity (in_flight < capacity), lowest load first, then most free KV bytes. Callers pass the
// nodes that already failed this request so retries land elsewhere. The registry also counts the
// requests it routed (AddInFlight) so load is current between heartbeats.
//
// Thread-safety: thread-safe. Error codes: INVALID_ARGUMENT for a malformed node description;
// UNAVAILABLE when no live node of the role is left to route to; RESOURCE_EXHAUSTED when every
// live decode node is at capacity.
#ifndef KVWIRE_CONTROL_PLANE_NODE_REGISTRY_H_
#define KVWIRE_CONTROL_PLANE_NODE_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvwire::control_plane {

enum class NodeRole { kUnspecified = 0, kPrefill = 1, kDecode = 2 };

// Mirrors kvwire.v1.NodeInfo without protobuf.
struct NodeDescription {
  std::string node_id;
  NodeRole role = NodeRole::kUnspecified;
  std::string grpc_address;  // "host:port"
  std::string model_fingerprint;
  std::string model_name;
  int transport = 0;  // kvwire.v1.TransportKind value
  uint32_t capacity = 0;
  uint32_t in_flight = 0;
  uint64_t free_kv_bytes = 0;
  double link_gbps = 0;
};

using NodeExclusions = absl::flat_hash_set<std::string>;

class NodeRegistry {
 public:
  using Clock = std::function<absl::Time()>;

  explicit NodeRegistry(
      absl::Duration lease, Clock clock = [] { return absl::Now(); })
      : lease_(lease), clock_(std::move(clock)) {}

  // Adds or replaces a node; returns the lease the node must heartbeat within.
  absl::StatusOr<absl::Duration> Register(const NodeDescription& node);
  // Refreshes a known node's lease and load; false when the node is unknown (register again).
  bool Heartbeat(const NodeDescription& node);

  // Live nodes, prefill first, then by id. Expired nodes are dropped.
  std::vector<NodeDescription> List();

  // `model` empty matches every node; otherwise the node's model_name must equal it (or be empty).
  absl::StatusOr<NodeDescription> PickPrefill(const std::string& model,
                                              const NodeExclusions& excluded);
  absl::StatusOr<NodeDescription> PickDecode(const std::string& model,
                                             const NodeExclusions& excluded);

  // Adjusts the locally known load of a node (+1 when routed, -1 when done); unknown ids ignored.
  void AddInFlight(const std::string& node_id, int delta);

  absl::Duration lease() const { return lease_; }

 private:
  struct Entry {
    NodeDescription node;
    absl::Time expires;
  };
  void DropExpiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<const Entry*> CandidatesLocked(NodeRole role, const std::string& model,
                                             const NodeExclusions& excluded)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration lease_;
  const Clock clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> nodes_ ABSL_GUARDED_BY(mu_);
};

// 0 for an idle node, 1 for a full one; a node without declared capacity counts as full.
double LoadOf(const NodeDescription& node);

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_NODE_REGISTRY_H_
