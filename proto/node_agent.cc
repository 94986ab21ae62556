#include "proto/node_agent.h"

#include <signal.h>

#include <algorithm>

#include "kvwire/base/log.h"
#include "proto/grpc_util.h"

namespace kvwire::grpc_util {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(2);
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
constexpr absl::Duration kDefaultLease = absl::Seconds(3);

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
}

absl::Duration LeaseOf(uint32_t lease_ms) {
  return lease_ms == 0 ? kDefaultLease : absl::Milliseconds(lease_ms);
}

}  // namespace

NodeAgent::NodeAgent(std::shared_ptr<grpc::Channel> channel, InfoFn info)
    : stub_(kvwire::v1::ControlPlane::NewStub(std::move(channel))),
      info_(std::move(info)),
      thread_([this] { Loop(); }) {}

NodeAgent::~NodeAgent() {
  stop_.Notify();
  thread_.join();
}

bool NodeAgent::registered() const {
  absl::MutexLock lock(&mu_);
  return registered_;
}

absl::StatusOr<absl::Duration> NodeAgent::Step() {
  grpc::ClientContext context;
  SetDeadline(&context);
  if (!registered()) {
    kvwire::v1::RegisterRequest request;
    *request.mutable_node() = info_();
    kvwire::v1::RegisterResponse response;
    absl::Status status = FromGrpc(stub_->Register(&context, request, &response));
    if (!status.ok()) return status;
    absl::MutexLock lock(&mu_);
    registered_ = true;
    KVWIRE_LOG(INFO) << "registered with the control plane as " << request.node().node_id();
    return LeaseOf(response.lease_ms()) / 3;
  }
  kvwire::v1::HeartbeatRequest request;
  *request.mutable_node() = info_();
  kvwire::v1::HeartbeatResponse response;
  absl::Status status = FromGrpc(stub_->Heartbeat(&context, request, &response));
  if (!status.ok()) return status;
  if (!response.known()) {
    absl::MutexLock lock(&mu_);
    registered_ = false;
    KVWIRE_LOG(INFO) << "control plane forgot this node; registering again";
    return absl::ZeroDuration();
  }
  return LeaseOf(response.lease_ms()) / 3;
}

void NodeAgent::Loop() {
  absl::Duration backoff = kFirstBackoff;
  bool failing = false;
  while (!stop_.HasBeenNotified()) {
    absl::StatusOr<absl::Duration> next = Step();
    if (next.ok()) {
      if (failing) KVWIRE_LOG(INFO) << "control plane reachable again";
      failing = false;
      backoff = kFirstBackoff;
      stop_.WaitForNotificationWithTimeout(*next);
      continue;
    }
    if (!failing) KVWIRE_LOG(WARNING) << "control plane unreachable, retrying: " << next.status();
    failing = true;
    {
      absl::MutexLock lock(&mu_);
      registered_ = false;
    }
    stop_.WaitForNotificationWithTimeout(backoff);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

namespace {
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int signal = 0;
  sigwait(&set, &signal);
  return signal;
}

}  // namespace kvwire::grpc_util
