// kvwire-prefill — the prefill node: PrefillService over gRPC, compressed layers out over the data
// plane.
//
//   kvwire-prefill --listen HOST:PORT --model M.gguf [--control HOST:PORT] [--metrics HOST:PORT]
//                  [--transport ucx|loopback] [--workers N] [--queue N] [--tls-cert F --tls-key F]
//                  [--synthetic-kv LxHxD[xQ]]
//                  [--gates GATES]  (learned gates for gate/... methods, kvwire-train-gates)
//                  [--gpu DEVICE]   (the model and, where it can, the compression on a CUDA device)
#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "prefill_node/prefill_service.h"
#include "proto/node_main.h"

namespace kvwire::prefill {
namespace {

struct PrefillFlags {
  grpc_util::NodeFlags node;
  int workers = 1;
  int queue = 16;
  int drain_seconds = 30;
  std::string gates;
};

absl::Status Serve(const PrefillFlags& f) {
  KVWIRE_RETURN_IF_ERROR(grpc_util::CheckGpuFlags(f.node));
  KVWIRE_ASSIGN_OR_RETURN(auto model, runtime::Model::Load(f.node.model));
  std::vector<std::unique_ptr<DevicePrefill>> devices;
  if (f.node.gpu >= 0) {
    KVWIRE_ASSIGN_OR_RETURN(devices, DevicePrefill::CreateWorkers(*model, f.node.gpu, f.workers));
  }
  const std::string where = devices.empty() ? "cpu" : devices.front()->description();
  compress::GateModel gates;
  if (!f.gates.empty()) {
    const runtime::ModelConfig& c = model->config();
    KVWIRE_ASSIGN_OR_RETURN(gates, compress::GateModel::LoadFor(f.gates, c.n_layers, c.hidden,
                                                                c.n_heads, c.n_kv_heads));
  }
  KVWIRE_ASSIGN_OR_RETURN(auto transport, grpc_util::MakeNodeTransport(f.node));
  KVWIRE_ASSIGN_OR_RETURN(auto credentials, grpc_util::LoadServerCredentials(f.node.tls));
  control::MetricsRegistry registry;
  PrefillNodeOptions options;
  options.workers = f.workers;
  options.queue_limit = f.queue;
  options.threads = f.node.threads;
  options.transport_kind = grpc_util::TransportKindOf(f.node);
  options.model_name = grpc_util::ModelName(f.node);
  KVWIRE_RETURN_IF_ERROR(
      grpc_util::ApplySyntheticKv(f.node, &options.synthetic_kv, &options.model_name));
  options.gates = f.gates.empty() ? nullptr : &gates;
  auto service = std::make_unique<PrefillServiceImpl>(*model, transport.get(), &registry, options,
                                                      std::move(devices));
  KVWIRE_ASSIGN_OR_RETURN(grpc_util::RunningServer server,
                          grpc_util::StartServer(f.node.listen, credentials, {service.get()}));
  grpc_util::ServingNode node{
      .role = "prefill",
      .details = absl::StrCat("workers ", f.workers, ", queue ", f.queue, ", model on ", where),
      .info = [&] { return service->Info(); },
      .begin_drain = [&] { service->BeginShutdown(); },
      .drain_seconds = f.drain_seconds,
  };
  return grpc_util::ServeUntilSignal(f.node, server, &registry, node);
}

}  // namespace
}  // namespace kvwire::prefill

int main(int argc, char** argv) {
  kvwire::grpc_util::InstallShutdownHandlers();
  kvwire::prefill::PrefillFlags f;
  CLI::App app{"kvwire prefill node"};
  kvwire::grpc_util::AddNodeFlags(app, &f.node);
  app.add_option("--workers", f.workers, "concurrent prefills (a model runner each)")
      ->check(CLI::Range(1, 256));
  app.add_option("--queue", f.queue, "calls allowed to wait for a worker")
      ->check(CLI::Range(0, 100000));
  app.add_option("--drain-seconds", f.drain_seconds, "graceful-shutdown budget")
      ->check(CLI::Range(0, 3600));
  app.add_option("--gates", f.gates, "learned gate file for gate/... methods (kvwire-train-gates)");
  CLI11_PARSE(app, argc, argv);
  return kvwire::grpc_util::FinishMain("kvwire-prefill", f.node,
                                       [&] { return kvwire::prefill::Serve(f); });
}
