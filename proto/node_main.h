// proto/node_main.h — the composition-root pieces both node binaries share: common flags, the
// data-plane transport they pick, credentials, the metrics endpoint and the control-plane agent.
//
// Thread-safety: call from main. Errors: INVALID_ARGUMENT for bad flag values, the transport's
// and the metrics server's start errors.
#ifndef KVWIRE_PROTO_NODE_MAIN_H_
#define KVWIRE_PROTO_NODE_MAIN_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "kvwire/control/metrics.h"
#include "kvwire/control/synthetic_kv.h"
#include "kvwire/transport/transport.h"
#include "kvwire/v1/common.pb.h"
#include "proto/grpc_util.h"
#include "proto/node_agent.h"

namespace kvwire::grpc_util {

struct NodeFlags {
  std::string listen = "127.0.0.1:0";
  std::string advertise;  // address given to the control plane (default: the bound listen address)
  std::string control;    // control plane host:port; empty = run without one
  std::string model;
  std::string model_name;  // announced to the control plane (default: file name without .gguf)
  std::string metrics;     // host:port of the /metrics endpoint; empty = none
  std::string transport = "ucx";
  std::string ucx_tls;  // UCX_TLS for the data plane; empty = UCX's default
  std::string node_id;
  std::string log_level;
  int threads = 2;
  TlsFiles tls;
  bool control_tls = false;
  std::string synthetic_kv;  // benchmarks: LxHxD[xQ] pseudo-random KV instead of the model
  int gpu = -1;              // CUDA device that runs the model; -1 = the CPU
};

void AddNodeFlags(CLI::App& app, NodeFlags* flags);

// The data-plane transport named by --transport ("ucx" or "loopback").
absl::StatusOr<std::unique_ptr<transport::Transport>> MakeNodeTransport(const NodeFlags& flags);
kvwire::v1::TransportKind TransportKindOf(const NodeFlags& flags);

// Starts the /metrics endpoint when --metrics is set (nullptr otherwise).
absl::StatusOr<std::unique_ptr<control::MetricsHttpServer>> StartMetrics(
    const NodeFlags& flags, const control::MetricsRegistry* registry);

// Starts registration with the control plane when --control is set (nullptr otherwise).
absl::StatusOr<std::unique_ptr<NodeAgent>> StartAgent(const NodeFlags& flags,
                                                      NodeAgent::InfoFn info);

// INVALID_ARGUMENT when --gpu is combined with what it cannot serve (--synthetic-kv: no model).
absl::Status CheckGpuFlags(const NodeFlags& flags);

// --model-name, or the model file's name without directory and ".gguf".
std::string ModelName(const NodeFlags& flags);

// --synthetic-kv parsed (nullopt when unset); unless --model-name is given, `model_name` becomes
// the name the synthetic shape announces. INVALID_ARGUMENT for a malformed shape.
absl::Status ApplySyntheticKv(const NodeFlags& flags, std::optional<control::SyntheticKv>* kv,
                              std::string* model_name);

// "host:port" actually bound: the listen host with the bound port.
std::string BoundAddress(const std::string& listen, int port);

// What a running node tells the shared serve loop.
struct ServingNode {
  std::string role;     // "decode" or "prefill": default node id "<role>-<port>"
  std::string details;  // appended to the start-up log line
  std::function<kvwire::v1::NodeInfo()> info;
  std::function<void()> begin_drain;  // optional: refuse new work before the server drains
  int drain_seconds = 30;
};

// With `server` up: logs and prints "listening HOST:PORT" (stdout, for launchers), starts the
// metrics endpoint and the control-plane agent, waits for SIGINT/SIGTERM, then drains: stops
// new work, leaves the control plane, shuts the server down (in-flight calls get drain_seconds,
// then are cancelled) and returns.
absl::Status ServeUntilSignal(const NodeFlags& flags, RunningServer& server,
                              const control::MetricsRegistry* registry, const ServingNode& node);

// Applies --log-level, runs `serve`, prints a failure as "<name>: <status>"; the exit code.
int FinishMain(absl::string_view name, const NodeFlags& flags,
               const std::function<absl::Status()>& serve);

}  // namespace kvwire::grpc_util

#endif  // KVWIRE_PROTO_NODE_MAIN_H_
