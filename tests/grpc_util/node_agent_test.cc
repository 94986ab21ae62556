#include "proto/node_agent.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/grpc_util.h"

namespace kvwire::grpc_util {
namespace {

// Counts Register / Heartbeat calls; answers known=false while `forget` is set.
class FakeControlPlane final : public kvwire::v1::ControlPlane::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const kvwire::v1::RegisterRequest* request,
                        kvwire::v1::RegisterResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++registers_;
    last_node_id_ = request->node().node_id();
    response->set_lease_ms(150);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const kvwire::v1::HeartbeatRequest*,
                         kvwire::v1::HeartbeatResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++heartbeats_;
    response->set_lease_ms(150);
    response->set_known(!forget_);
    if (forget_) forget_ = false;
    return grpc::Status::OK;
  }

  // Waits (bounded) until the counters reach the given values.
  bool AwaitCounts(int registers, int heartbeats) {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return registers_ >= registers && heartbeats_ >= heartbeats;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(20));
  }
  void Forget() {
    absl::MutexLock lock(&mu_);
    forget_ = true;
  }
  int registers() {
    absl::MutexLock lock(&mu_);
    return registers_;
  }
  std::string last_node_id() {
    absl::MutexLock lock(&mu_);
    return last_node_id_;
  }

 private:
  absl::Mutex mu_;
  int registers_ ABSL_GUARDED_BY(mu_) = 0;
  int heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  bool forget_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_node_id_ ABSL_GUARDED_BY(mu_);
};

kvwire::v1::NodeInfo Info() {
  kvwire::v1::NodeInfo info;
  info.set_node_id("decode-test");
  info.set_role(kvwire::v1::NODE_ROLE_DECODE);
  return info;
}

TEST(NodeAgent, RegistersHeartbeatsAndRegistersAgainWhenForgotten) {
  FakeControlPlane fake;
  auto running = StartServer("127.0.0.1:0", grpc::InsecureServerCredentials(), {&fake});
  ASSERT_TRUE(running.ok()) << running.status();
  NodeAgent agent(grpc::CreateChannel(absl::StrCat("127.0.0.1:", running->port),
                                      grpc::InsecureChannelCredentials()),
                  Info);
  ASSERT_TRUE(fake.AwaitCounts(1, 2));
  EXPECT_EQ(fake.last_node_id(), "decode-test");
  EXPECT_TRUE(agent.registered());
  fake.Forget();
  EXPECT_TRUE(fake.AwaitCounts(2, 3));
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

TEST(NodeAgent, KeepsRetryingUntilTheControlPlaneComesUp) {
  // Find a free port, then leave it empty while the agent starts.
  FakeControlPlane probe;
  auto first = StartServer("127.0.0.1:0", grpc::InsecureServerCredentials(), {&probe});
  ASSERT_TRUE(first.ok());
  const int port = first->port;
  first->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  first->server.reset();
  NodeAgent agent(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()),
      Info);
  EXPECT_FALSE(agent.registered());
  FakeControlPlane fake;
  auto running =
      StartServer(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(), {&fake});
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_TRUE(fake.AwaitCounts(1, 1));
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace kvwire::grpc_util
