#include "control_plane/node_registry.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace kvwire::control_plane {
namespace {

class FakeClock {
 public:
  absl::Time Now() const { return now_; }
  void Advance(absl::Duration d) { now_ += d; }

 private:
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

NodeDescription Node(const std::string& id, NodeRole role, uint32_t in_flight = 0,
                     uint32_t capacity = 4) {
  NodeDescription n;
  n.node_id = id;
  n.role = role;
  n.grpc_address = "127.0.0.1:1";
  n.capacity = capacity;
  n.in_flight = in_flight;
  n.model_name = "smollm";
  return n;
}

class NodeRegistryTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  NodeRegistry registry_{absl::Seconds(10), [this] { return clock_.Now(); }};
};

TEST_F(NodeRegistryTest, RejectsMalformedNodes) {
  NodeDescription n = Node("", NodeRole::kPrefill);
  EXPECT_EQ(registry_.Register(n).status().code(), absl::StatusCode::kInvalidArgument);
  n = Node("p", NodeRole::kUnspecified);
  EXPECT_TRUE(absl::StrContains(registry_.Register(n).status().message(), "role"));
  n = Node("p", NodeRole::kPrefill);
  n.grpc_address.clear();
  EXPECT_TRUE(absl::StrContains(registry_.Register(n).status().message(), "grpc_address"));
  n = Node("p", NodeRole::kPrefill, 0, 0);
  EXPECT_TRUE(absl::StrContains(registry_.Register(n).status().message(), "capacity"));
}

TEST_F(NodeRegistryTest, NodeThatMissesItsLeaseLeavesRotation) {
  ASSERT_EQ(*registry_.Register(Node("d1", NodeRole::kDecode)), absl::Seconds(10));
  ASSERT_TRUE(registry_.Register(Node("d2", NodeRole::kDecode)).ok());
  clock_.Advance(absl::Seconds(6));
  EXPECT_TRUE(registry_.Heartbeat(Node("d2", NodeRole::kDecode)));
  clock_.Advance(absl::Seconds(6));  // d1 expired at t+10, d2 lives until t+16
  std::vector<NodeDescription> nodes = registry_.List();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].node_id, "d2");
  EXPECT_EQ(registry_.PickDecode("", {})->node_id, "d2");
  EXPECT_FALSE(registry_.Heartbeat(Node("d1", NodeRole::kDecode))) << "must register again";
  ASSERT_TRUE(registry_.Register(Node("d1", NodeRole::kDecode)).ok());
  EXPECT_EQ(registry_.List().size(), 2u);
}

TEST_F(NodeRegistryTest, HeartbeatFromUnknownNodeAsksToRegister) {
  EXPECT_FALSE(registry_.Heartbeat(Node("x", NodeRole::kPrefill)));
  EXPECT_TRUE(registry_.List().empty());
}

TEST_F(NodeRegistryTest, PicksLeastLoadedPrefillNode) {
  ASSERT_TRUE(registry_.Register(Node("p1", NodeRole::kPrefill, 3, 4)).ok());
  ASSERT_TRUE(registry_.Register(Node("p2", NodeRole::kPrefill, 1, 4)).ok());
  ASSERT_TRUE(registry_.Register(Node("p3", NodeRole::kPrefill, 1, 2)).ok());
  EXPECT_EQ(registry_.PickPrefill("", {})->node_id, "p2");
  EXPECT_EQ(registry_.PickPrefill("", {"p2"})->node_id, "p3");
  registry_.AddInFlight("p2", 2);  // 3/4 now, p3 (1/2) is lighter
  EXPECT_EQ(registry_.PickPrefill("", {})->node_id, "p3");
  auto none = registry_.PickPrefill("", {"p1", "p2", "p3"});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(none.status().message(), "no prefill node available");
}

TEST_F(NodeRegistryTest, DecodeNeedsFreeCapacity) {
  EXPECT_EQ(registry_.PickDecode("", {}).status().message(), "no decode node available");
  ASSERT_TRUE(registry_.Register(Node("d1", NodeRole::kDecode, 2, 2)).ok());
  EXPECT_EQ(registry_.PickDecode("", {}).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(registry_.Register(Node("d2", NodeRole::kDecode, 1, 2)).ok());
  EXPECT_EQ(registry_.PickDecode("", {})->node_id, "d2");
  registry_.AddInFlight("d2", 1);
  EXPECT_EQ(registry_.PickDecode("", {}).status().code(), absl::StatusCode::kResourceExhausted);
  registry_.AddInFlight("d2", -1);
  registry_.AddInFlight("unknown", 1);
  EXPECT_EQ(registry_.PickDecode("", {})->node_id, "d2");
}

TEST_F(NodeRegistryTest, DecodeTieBreaksOnFreeKvBytes) {
  NodeDescription a = Node("a", NodeRole::kDecode), b = Node("b", NodeRole::kDecode);
  a.free_kv_bytes = 100;
  b.free_kv_bytes = 200;
  ASSERT_TRUE(registry_.Register(a).ok());
  ASSERT_TRUE(registry_.Register(b).ok());
  EXPECT_EQ(registry_.PickDecode("", {})->node_id, "b");
}

TEST_F(NodeRegistryTest, RoutesOnlyToNodesServingTheModel) {
  NodeDescription other = Node("p-other", NodeRole::kPrefill);
  other.model_name = "llama";
  ASSERT_TRUE(registry_.Register(other).ok());
  EXPECT_EQ(registry_.PickPrefill("smollm", {}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(registry_.PickPrefill("llama", {})->node_id, "p-other");
  EXPECT_EQ(registry_.PickPrefill("", {})->node_id, "p-other");
}

TEST_F(NodeRegistryTest, ListsPrefillBeforeDecodeSortedById) {
  ASSERT_TRUE(registry_.Register(Node("d", NodeRole::kDecode)).ok());
  ASSERT_TRUE(registry_.Register(Node("p2", NodeRole::kPrefill)).ok());
  ASSERT_TRUE(registry_.Register(Node("p1", NodeRole::kPrefill)).ok());
  std::vector<NodeDescription> nodes = registry_.List();
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0].node_id, "p1");
  EXPECT_EQ(nodes[1].node_id, "p2");
  EXPECT_EQ(nodes[2].node_id, "d");
}

}  // namespace
}  // namespace kvwire::control_plane
