// kvwire-control: the ControlPlane server (composition root).
//
//   kvwire-control --listen 0.0.0.0:7000 --policy-file budgets.yaml --model smollm2.gguf
//       [--metrics 0.0.0.0:9100] [--tls-cert c.pem --tls-key k.pem] [--admin-token-file t]
//
// Prints "kvwire-control listening on HOST:PORT" on stdout once serving. SIGHUP re-reads the
// policy file (it is also polled for changes, e.g. a ConfigMap update); a malformed file is
// logged and the policies in force stay. SIGINT/SIGTERM shut down gracefully: in-flight calls get
// --shutdown-grace-ms to finish, then are cancelled.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "control_plane/budget_policy.h"
#include "control_plane/control_service.h"
#include "control_plane/node_registry.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/control/metrics.h"
#include "proto/grpc_util.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::control_plane {
namespace {

struct Flags {
  std::string listen;
  std::string policy_file;
  std::string model;
  std::string metrics;
  grpc_util::TlsFiles tls;
  std::string node_tls_ca;
  std::string admin_token_file;
  uint32_t max_tokens_limit = 1024;
  uint32_t lease_ms = 10000;
  double default_link_gbps = 10;
  double kv_bytes_per_token = 0;
  uint32_t reserve_timeout_ms = 5000;
  uint32_t prefill_timeout_ms = 120000;
  uint32_t decode_timeout_ms = 600000;
  uint32_t policy_poll_ms = 2000;
  uint32_t shutdown_grace_ms = 5000;
};

// Per prompt token, all layers and KV heads: f16 key and value rows plus an int32 position and an
// fp32 log-vote per entry (format v1 defaults).
double RawBytesPerToken(const runtime::ModelConfig& c) {
  return static_cast<double>(c.n_layers) * c.n_kv_heads * (2.0 * c.head_dim * 2 + 8);
}

struct Model {
  std::unique_ptr<runtime::GgufFile> gguf;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  runtime::ModelConfig config;
};

absl::StatusOr<Model> LoadModel(const std::string& path) {
  Model m;
  KVWIRE_ASSIGN_OR_RETURN(m.gguf, runtime::GgufFile::Open(path));
  KVWIRE_ASSIGN_OR_RETURN(m.tokenizer, runtime::LoadTokenizer(*m.gguf));
  KVWIRE_ASSIGN_OR_RETURN(m.config, runtime::ReadModelConfig(*m.gguf));
  return m;
}

absl::StatusOr<std::string> ReadAdminToken(const std::string& path) {
  KVWIRE_ASSIGN_OR_RETURN(std::string text, grpc_util::ReadFile(path));
  std::string token(absl::StripAsciiWhitespace(text));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("admin token file ", path, " is empty"));
  return token;
}

absl::StatusOr<ControlOptions> MakeOptions(const Flags& f, const Model* model) {
  ControlOptions o;
  o.limits.max_tokens_limit = f.max_tokens_limit;
  if (model != nullptr) {
    o.limits.context_length = static_cast<uint32_t>(model->config.context_length);
    o.raw_bytes_per_token = RawBytesPerToken(model->config);
  }
  if (f.kv_bytes_per_token > 0) o.raw_bytes_per_token = f.kv_bytes_per_token;
  o.reserve_timeout = absl::Milliseconds(f.reserve_timeout_ms);
  o.prefill_timeout = absl::Milliseconds(f.prefill_timeout_ms);
  o.decode_timeout = absl::Milliseconds(f.decode_timeout_ms);
  if (!f.admin_token_file.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(o.admin_token, ReadAdminToken(f.admin_token_file));
  }
  if (!f.node_tls_ca.empty()) {
    grpc_util::TlsFiles node_tls;
    node_tls.ca_path = f.node_tls_ca;
    KVWIRE_ASSIGN_OR_RETURN(o.node_credentials, grpc_util::LoadChannelCredentials(node_tls, true));
  }
  return o;
}

// Waits for signals on the main thread (they are blocked everywhere else) and polls the policy
// file between them. Returns when asked to stop.
void WaitForShutdown(PolicyStore& policies, absl::Duration poll) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  const timespec timeout{static_cast<time_t>(absl::ToInt64Seconds(poll)),
                         static_cast<long>(absl::ToInt64Nanoseconds(poll) % 1000000000)};
  while (true) {
    const int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig == SIGINT || sig == SIGTERM) return;
    absl::Status reloaded = sig == SIGHUP ? policies.Reload() : policies.ReloadIfChanged();
    if (!reloaded.ok()) {
      KVWIRE_LOG(ERROR) << "policy file not reloaded, the previous policies stay in force: "
                        << reloaded;
    } else if (sig == SIGHUP) {
      KVWIRE_LOG(INFO) << "policy file " << policies.path() << " reloaded";
    }
  }
}

absl::Status Run(const Flags& f) {
  // Block the signals before any thread starts so every thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<PolicyStore> policies, PolicyStore::Open(f.policy_file));
  std::unique_ptr<Model> model;
  if (!f.model.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(Model loaded, LoadModel(f.model));
    model = std::make_unique<Model>(std::move(loaded));
  } else {
    KVWIRE_LOG(WARNING) << "no --model: Generate answers FAILED_PRECONDITION (no tokenizer)";
  }
  KVWIRE_ASSIGN_OR_RETURN(ControlOptions options, MakeOptions(f, model.get()));
  NodeRegistry registry(absl::Milliseconds(f.lease_ms));
  BandwidthEstimator bandwidth(f.default_link_gbps * 1e9 / 8 / 1000);
  control::MetricsRegistry metrics;
  ControlService service(std::move(options), policies.get(), &registry, &bandwidth,
                         model ? model->tokenizer.get() : nullptr, &metrics);
  std::unique_ptr<control::MetricsHttpServer> metrics_server;
  if (!f.metrics.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(metrics_server, control::MetricsHttpServer::Start(f.metrics, &metrics));
  }
  KVWIRE_ASSIGN_OR_RETURN(auto credentials, grpc_util::LoadServerCredentials(f.tls));
  KVWIRE_ASSIGN_OR_RETURN(grpc_util::RunningServer server,
                          grpc_util::StartServer(f.listen, credentials, {&service}));
  KVWIRE_ASSIGN_OR_RETURN(auto host_port, control::SplitHostPort(f.listen));
  std::cout << "kvwire-control listening on " << host_port.first << ":" << server.port
            << (metrics_server ? absl::StrCat(" metrics on port ", metrics_server->port()) : "")
            << std::endl;
  WaitForShutdown(*policies, absl::Milliseconds(f.policy_poll_ms));
  KVWIRE_LOG(INFO) << "shutting down";
  server.server->Shutdown(
      absl::ToChronoTime(absl::Now() + absl::Milliseconds(f.shutdown_grace_ms)));
  server.server->Wait();
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvwire::control_plane

int main(int argc, char** argv) {
  kvwire::control_plane::Flags f;
  CLI::App app{"kvwire control plane: routing, budgets, node registry"};
  app.add_option("--listen", f.listen, "gRPC address HOST:PORT (port 0 picks one)")->required();
  app.add_option("--policy-file", f.policy_file, "budget policy YAML (created on first change)")
      ->required();
  app.add_option("--model", f.model, "model GGUF: tokenizer, chat template and context length");
  app.add_option("--metrics", f.metrics, "Prometheus /metrics HTTP address HOST:PORT");
  app.add_option("--tls-cert", f.tls.cert_path, "PEM certificate chain (enables TLS)");
  app.add_option("--tls-key", f.tls.key_path, "PEM private key");
  app.add_option("--node-tls-ca", f.node_tls_ca, "PEM roots for TLS to the nodes");
  app.add_option("--admin-token-file", f.admin_token_file, "file holding the admin token");
  app.add_option("--max-tokens-limit", f.max_tokens_limit, "largest max_tokens a request may ask");
  app.add_option("--lease-ms", f.lease_ms, "node heartbeat lease");
  app.add_option("--default-link-gbps", f.default_link_gbps,
                 "assumed prefill->decode bandwidth until transfers are measured");
  app.add_option("--kv-bytes-per-token", f.kv_bytes_per_token,
                 "uncompressed KV wire bytes per prompt token (default: from --model)");
  app.add_option("--reserve-timeout-ms", f.reserve_timeout_ms, "deadline of Reserve");
  app.add_option("--prefill-timeout-ms", f.prefill_timeout_ms, "deadline of Prefill");
  app.add_option("--decode-timeout-ms", f.decode_timeout_ms, "deadline of the Decode stream");
  app.add_option("--policy-poll-ms", f.policy_poll_ms, "how often the policy file is checked");
  app.add_option("--shutdown-grace-ms", f.shutdown_grace_ms, "time in-flight calls get on exit");
  CLI11_PARSE(app, argc, argv);
  absl::Status status = kvwire::control_plane::Run(f);
  if (!status.ok()) {
    std::cerr << "kvwire-control: " << status << std::endl;
    return 1;
  }
  return 0;
}
