#include "proto/node_main.h"

#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/ucx/ucx_transport.h"

namespace kvwire::grpc_util {

void AddNodeFlags(CLI::App& app, NodeFlags* f) {
  app.add_option("--listen", f->listen, "gRPC listen address host:port");
  app.add_option("--advertise", f->advertise, "address announced to the control plane");
  app.add_option("--control", f->control, "control plane host:port (optional)");
  app.add_option("--model", f->model, "GGUF model file")->required();
  app.add_option("--model-name", f->model_name, "model name for routing (default: file stem)");
  app.add_option("--metrics", f->metrics, "Prometheus /metrics listen address host:port");
  app.add_option("--transport", f->transport, "data-plane transport")
      ->check(CLI::IsMember({"ucx", "loopback"}));
  app.add_option("--ucx-tls", f->ucx_tls, "UCX transports, e.g. tcp or posix,cma,self");
  app.add_option("--node-id", f->node_id, "node id (default: role and port)");
  app.add_option("--threads", f->threads, "CPU threads per model runner")
      ->check(CLI::Range(1, 256));
  app.add_option("--tls-cert", f->tls.cert_path, "PEM certificate: serve gRPC over TLS");
  app.add_option("--tls-key", f->tls.key_path, "PEM private key for --tls-cert");
  app.add_option("--tls-ca", f->tls.ca_path, "PEM roots for calls to the control plane");
  app.add_flag("--control-tls", f->control_tls, "call the control plane over TLS");
  app.add_option("--log-level", f->log_level, "debug, info, warning or error");
  app.add_option("--synthetic-kv", f->synthetic_kv,
                 "benchmarks: pseudo-random KV of shape LAYERSxKVHEADSxDIM[xQUERYHEADS] instead of "
                 "the model (prefill streams it, decode installs it and answers a fixed text; "
                 "both nodes need the same shape)");
  app.add_option("--gpu", f->gpu,
                 "run the model on this CUDA device (CUDA builds; weights uploaded once, the KV "
                 "cache stays on the device)")
      ->check(CLI::Range(0, 63));
}

absl::Status CheckGpuFlags(const NodeFlags& flags) {
  if (flags.gpu >= 0 && !flags.synthetic_kv.empty()) {
    return absl::InvalidArgumentError(
        "--gpu runs the model; --synthetic-kv replaces it: use one of them");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<transport::Transport>> MakeNodeTransport(const NodeFlags& flags) {
  if (flags.transport == "loopback") return transport::MakeLoopbackTransport();
  return transport::MakeUcxTransport({.transports = flags.ucx_tls});
}

kvwire::v1::TransportKind TransportKindOf(const NodeFlags& flags) {
  return flags.transport == "loopback" ? kvwire::v1::TRANSPORT_KIND_LOOPBACK
                                       : kvwire::v1::TRANSPORT_KIND_UCX;
}

absl::StatusOr<std::unique_ptr<control::MetricsHttpServer>> StartMetrics(
    const NodeFlags& flags, const control::MetricsRegistry* registry) {
  if (flags.metrics.empty()) return nullptr;
  auto server = control::MetricsHttpServer::Start(flags.metrics, registry);
  if (!server.ok()) return server.status();
  const std::string bound = BoundAddress(flags.metrics, (*server)->port());
  KVWIRE_LOG(INFO) << "metrics on http://" << bound << "/metrics";
  std::cout << "metrics " << bound << std::endl;  // machine-readable, for launchers and tests
  return server;
}

absl::StatusOr<std::unique_ptr<NodeAgent>> StartAgent(const NodeFlags& flags,
                                                      NodeAgent::InfoFn info) {
  if (flags.control.empty()) {
    KVWIRE_LOG(INFO) << "no --control: not registering with a control plane";
    return nullptr;
  }
  auto credentials = LoadChannelCredentials(flags.tls, flags.control_tls);
  if (!credentials.ok()) return credentials.status();
  return std::make_unique<NodeAgent>(grpc::CreateChannel(flags.control, *credentials),
                                     std::move(info));
}

std::string ModelName(const NodeFlags& flags) {
  if (!flags.model_name.empty()) return flags.model_name;
  std::string name = flags.model.substr(flags.model.find_last_of('/') + 1);
  if (absl::EndsWith(name, ".gguf")) name.resize(name.size() - 5);
  return name;
}

absl::Status ApplySyntheticKv(const NodeFlags& flags, std::optional<control::SyntheticKv>* kv,
                              std::string* model_name) {
  if (flags.synthetic_kv.empty()) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(*kv, control::ParseSyntheticKv(flags.synthetic_kv));
  if (flags.model_name.empty()) *model_name = (*kv)->ModelName();
  return absl::OkStatus();
}

std::string BoundAddress(const std::string& listen, int port) {
  auto host_port = control::SplitHostPort(listen);
  std::string host = host_port.ok() ? host_port->first : "127.0.0.1";
  if (host.find(':') != std::string::npos) host = absl::StrCat("[", host, "]");
  return absl::StrCat(host, ":", port);
}

absl::Status ServeUntilSignal(const NodeFlags& flags, RunningServer& server,
                              const control::MetricsRegistry* registry, const ServingNode& node) {
  const std::string bound = BoundAddress(flags.listen, server.port);
  const std::string node_id =
      flags.node_id.empty() ? absl::StrCat(node.role, "-", server.port) : flags.node_id;
  const std::string advertise = flags.advertise.empty() ? bound : flags.advertise;
  KVWIRE_LOG(INFO) << "kvwire-" << node.role << " " << node_id << " listening on " << bound
                   << " (model " << flags.model << ", transport " << flags.transport
                   << (flags.ucx_tls.empty() ? "" : absl::StrCat(" ", flags.ucx_tls)) << ", "
                   << node.details << ")";
  std::cout << "listening " << bound << std::endl;
  auto metrics_server = StartMetrics(flags, registry);
  if (!metrics_server.ok()) return metrics_server.status();
  auto agent = StartAgent(flags, [&] {
    kvwire::v1::NodeInfo info = node.info();
    info.set_node_id(node_id);
    info.set_grpc_address(advertise);
    return info;
  });
  if (!agent.ok()) return agent.status();
  const int signal = WaitForShutdownSignal();
  KVWIRE_LOG(INFO) << "signal " << signal << ": draining for up to " << node.drain_seconds << " s";
  if (node.begin_drain) node.begin_drain();
  agent->reset();
  server.server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::seconds(node.drain_seconds));
  server.server->Wait();
  KVWIRE_LOG(INFO) << "stopped";
  return absl::OkStatus();
}

int FinishMain(absl::string_view name, const NodeFlags& flags,
               const std::function<absl::Status()>& serve) {
  LogLevel level;
  if (!flags.log_level.empty()) {
    if (!ParseLogLevel(flags.log_level, &level)) {
      std::cerr << name << ": bad --log-level '" << flags.log_level << "'\n";
      return 2;
    }
    SetLogLevel(level);
  }
  const absl::Status status = serve();
  if (!status.ok()) {
    std::cerr << name << ": " << status << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kvwire::grpc_util
