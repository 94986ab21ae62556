#include "proto/node_agent.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

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

int shutdown_pipe[2] = {-1, -1};

void OnShutdownSignal(int signal) {
  const unsigned char byte = static_cast<unsigned char>(signal);
  // Async-signal-safe; a full pipe means a signal is already pending, which is enough.
  [[maybe_unused]] const ssize_t n = write(shutdown_pipe[1], &byte, 1);
}

}  // namespace

void InstallShutdownHandlers() {
  if (pipe2(shutdown_pipe, O_CLOEXEC) != 0) {
    KVWIRE_LOG(ERROR) << "cannot create the shutdown pipe; signals end the process at once";
    return;
  }
  struct sigaction action = {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int WaitForShutdownSignal() {
  unsigned char byte = 0;
  while (true) {
    const ssize_t n = read(shutdown_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    pause();  // no pipe (see InstallShutdownHandlers): the default action ends the process
  }
}

}  // namespace kvwire::grpc_util
