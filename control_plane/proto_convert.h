// control_plane/proto_convert.h — conversions between kvwire.v1 messages and the gRPC-free
// control-plane types. Lossless for every field both sides have. Thread-safety: pure functions.
// Errors: BudgetFromProto returns nullopt for an unset oneof.
#ifndef KVWIRE_CONTROL_PLANE_PROTO_CONVERT_H_
#define KVWIRE_CONTROL_PLANE_PROTO_CONVERT_H_

#include <optional>

#include "control_plane/budget_policy.h"
#include "control_plane/node_registry.h"
#include "control_plane/request_stats.h"
#include "control_plane/request_validation.h"
#include "kvwire/v1/control_plane.pb.h"

namespace kvwire::control_plane {

std::optional<Budget> BudgetFromProto(const v1::Budget& budget);
v1::Budget BudgetToProto(const Budget& budget);

// A policy without a default budget gets a kept fraction of 0 so validation rejects it.
BudgetPolicy PolicyFromProto(const v1::BudgetPolicy& policy);
v1::BudgetPolicy PolicyToProto(const BudgetPolicy& policy);

NodeDescription NodeFromProto(const v1::NodeInfo& node);
v1::NodeInfo NodeToProto(const NodeDescription& node);

RequestRecord RecordFromProto(const v1::RequestStats& stats);
v1::RequestStats RecordToProto(const RequestRecord& record);

GenerateInput InputFromProto(const v1::GenerateRequest& request);

}  // namespace kvwire::control_plane

#endif  // KVWIRE_CONTROL_PLANE_PROTO_CONVERT_H_
