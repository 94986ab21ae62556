// proto/node_agent.h — what every node process does beside serving: keep itself registered with
// the control plane, and wait for a shutdown signal.
//
// NodeAgent runs one thread: Register, then Heartbeat at a third of the granted lease; when the
// control plane answers known=false it registers again; when it is unreachable the agent keeps
// retrying with exponential backoff (100 ms .. 5 s) and logs once per outage. It never fails the
// process. The NodeInfo it sends comes from a callback, so load figures are current.
//
// Thread-safety: NodeAgent's public methods are thread-safe; the info callback runs on the
// agent's thread. Errors: none surface (failures are logged and retried).
#ifndef KVWIRE_PROTO_NODE_AGENT_H_
#define KVWIRE_PROTO_NODE_AGENT_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kvwire/v1/control_plane.grpc.pb.h"

namespace kvwire::grpc_util {

class NodeAgent {
 public:
  using InfoFn = std::function<kvwire::v1::NodeInfo()>;

  // Starts registering with the control plane at `control_address` through `channel`.
  NodeAgent(std::shared_ptr<grpc::Channel> channel, InfoFn info);
  ~NodeAgent();  // stops the thread (bounded by one RPC deadline)
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  bool registered() const;

 private:
  void Loop();
  // One Register or Heartbeat; returns the lease to wait before the next one, or an error.
  absl::StatusOr<absl::Duration> Step();

  std::unique_ptr<kvwire::v1::ControlPlane::Stub> stub_;
  InfoFn info_;
  absl::Notification stop_;
  mutable absl::Mutex mu_;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Installs SIGINT and SIGTERM handlers that only record the signal (libraries may own threads
// started before main, so blocking the signals in main's threads would not be enough). Call
// first thing in main.
void InstallShutdownHandlers();
// Waits until SIGINT or SIGTERM has arrived (a process-lifetime wait: the signal is its only
// end) and returns its number.
int WaitForShutdownSignal();

}  // namespace kvwire::grpc_util

#endif  // KVWIRE_PROTO_NODE_AGENT_H_
