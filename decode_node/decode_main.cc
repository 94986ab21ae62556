// kvwire-decode — the decode node: DecodeService over gRPC, compressed caches in over the data
// plane, tokens out.
//
//   kvwire-decode --listen HOST:PORT --model M.gguf [--control HOST:PORT] [--metrics HOST:PORT]
//                 [--transport ucx|loopback] [--capacity N] [--tls-cert F --tls-key F]
//                 [--synthetic-kv LxHxD[xQ]]
//                 [--gates GATES]  (learned gates: decode-time compaction of gate/... requests)
//                 [--gpu DEVICE]   (the model and every request's cache on a CUDA device)
#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "decode_node/decode_service.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "proto/node_main.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::decode {
namespace {

struct DecodeFlags {
  grpc_util::NodeFlags node;
  uint32_t capacity = 8;
  uint32_t lease_ms = 10000;
  uint32_t max_lease_ms = 600000;
  std::string gates;
};

absl::Status Serve(const DecodeFlags& f) {
  KVWIRE_RETURN_IF_ERROR(grpc_util::CheckGpuFlags(f.node));
  KVWIRE_ASSIGN_OR_RETURN(auto model, runtime::Model::Load(f.node.model));
  std::unique_ptr<DeviceDecoder> device;
  if (f.node.gpu >= 0) {
    KVWIRE_ASSIGN_OR_RETURN(device, DeviceDecoder::Create(*model, f.node.gpu));
  }
  KVWIRE_ASSIGN_OR_RETURN(auto tokenizer, runtime::LoadTokenizer(model->gguf()));
  compress::GateModel gates;
  if (!f.gates.empty()) {
    const runtime::ModelConfig& c = model->config();
    KVWIRE_ASSIGN_OR_RETURN(gates, compress::GateModel::LoadFor(f.gates, c.n_layers, c.hidden,
                                                                c.n_heads, c.n_kv_heads));
  }
  KVWIRE_ASSIGN_OR_RETURN(auto transport, grpc_util::MakeNodeTransport(f.node));
  KVWIRE_ASSIGN_OR_RETURN(auto credentials, grpc_util::LoadServerCredentials(f.node.tls));
  control::MetricsRegistry registry;
  DecodeNodeOptions options;
  options.capacity = f.capacity;
  options.lease = absl::Milliseconds(f.lease_ms);
  options.max_lease = absl::Milliseconds(std::max(f.lease_ms, f.max_lease_ms));
  options.threads = f.node.threads;
  options.transport_kind = grpc_util::TransportKindOf(f.node);
  options.model_name = grpc_util::ModelName(f.node);
  KVWIRE_RETURN_IF_ERROR(
      grpc_util::ApplySyntheticKv(f.node, &options.synthetic_kv, &options.model_name));
  options.gates = f.gates.empty() ? nullptr : &gates;
  options.device = device.get();
  auto service =
      std::make_unique<DecodeServiceImpl>(*model, *tokenizer, transport.get(), &registry, options);
  KVWIRE_ASSIGN_OR_RETURN(grpc_util::RunningServer server,
                          grpc_util::StartServer(f.node.listen, credentials, {service.get()}));
  grpc_util::ServingNode node{
      .role = "decode",
      .details = absl::StrCat("capacity ", f.capacity, ", model on ",
                              device != nullptr ? device->description() : "cpu"),
      .info = [&] { return service->Info(); },
  };
  KVWIRE_RETURN_IF_ERROR(grpc_util::ServeUntilSignal(f.node, server, &registry, node));
  service.reset();  // frees slots still held, after the server stopped calling in
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvwire::decode

int main(int argc, char** argv) {
  kvwire::grpc_util::InstallShutdownHandlers();
  kvwire::decode::DecodeFlags f;
  CLI::App app{"kvwire decode node"};
  kvwire::grpc_util::AddNodeFlags(app, &f.node);
  app.add_option("--capacity", f.capacity, "concurrent requests (slots)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--lease-ms", f.lease_ms, "a grant lapses if its stream has not started by then")
      ->check(CLI::Range(1, 600000));
  app.add_option("--max-lease-ms", f.max_lease_ms,
                 "longest lease a Reserve may ask for (a requester whose prefill queues)");
  app.add_option("--gates", f.gates,
                 "learned gate file (kvwire-train-gates) for gate/... requests");
  CLI11_PARSE(app, argc, argv);
  return kvwire::grpc_util::FinishMain("kvwire-decode", f.node,
                                       [&] { return kvwire::decode::Serve(f); });
}
