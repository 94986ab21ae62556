#include "proto/grpc_util.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace kvwire::grpc_util {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::string> ReadFile(absl::string_view path) {
  std::ifstream in{std::string(path), std::ios::binary};
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read file '", path, "'"));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> LoadServerCredentials(
    const TlsFiles& files) {
  if (files.cert_path.empty() && files.key_path.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_path.empty() || files.key_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("TLS needs both a certificate and a key (cert='",
                                                   files.cert_path, "', key='", files.key_path,
                                                   "')"));
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto cert = ReadFile(files.cert_path);
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(files.key_path);
  if (!key.ok()) return key.status();
  pair.cert_chain = *std::move(cert);
  pair.private_key = *std::move(key);
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!files.ca_path.empty()) {
    auto roots = ReadFile(files.ca_path);
    if (!roots.ok()) return roots.status();
    options.pem_root_certs = *std::move(roots);
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> LoadChannelCredentials(
    const TlsFiles& files, bool use_tls) {
  if (!use_tls && files.ca_path.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!files.ca_path.empty()) {
    auto roots = ReadFile(files.ca_path);
    if (!roots.ok()) return roots.status();
    options.pem_root_certs = *std::move(roots);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<RunningServer> StartServer(absl::string_view address,
                                          std::shared_ptr<grpc::ServerCredentials> credentials,
                                          const std::vector<grpc::Service*>& services) {
  // Both are process-wide switches read by ServerBuilder; setting them again is harmless.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  RunningServer running;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(std::string(address), std::move(credentials), &running.port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  running.server = builder.BuildAndStart();
  if (running.server == nullptr || running.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on '", address, "'"));
  }
  running.server->GetHealthCheckService()->SetServingStatus(true);
  return running;
}

}  // namespace kvwire::grpc_util
