// proto/grpc_util.h — the small gRPC adapter shared by the node and control-plane servers.
//
// Status translation between absl and gRPC (the two code sets are numerically identical, so the
// mapping is total and lossless), a server builder that always serves the gRPC health service and
// reflection, and TLS-or-insecure credentials from file paths.
//
// Thread-safety: free functions are thread-safe. Error codes: LoadServerCredentials /
// LoadChannelCredentials return INVALID_ARGUMENT when only one of cert/key is given and
// NOT_FOUND when a file cannot be read; StartServer returns UNAVAILABLE when the address cannot
// be bound.
#ifndef KVWIRE_PROTO_GRPC_UTIL_H_
#define KVWIRE_PROTO_GRPC_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvwire::grpc_util {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

// TLS material given on a command line; all paths empty = plaintext.
struct TlsFiles {
  std::string cert_path;  // PEM certificate chain of this server
  std::string key_path;   // PEM private key of this server
  std::string ca_path;    // PEM roots: clients verify servers with it (empty = system roots)
};

// SslServerCredentials when cert and key are given, InsecureServerCredentials when both are empty.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> LoadServerCredentials(
    const TlsFiles& files);
// SslCredentials (roots from ca_path, or the system's) when ca_path is set or `use_tls` is true,
// InsecureChannelCredentials otherwise.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> LoadChannelCredentials(
    const TlsFiles& files, bool use_tls);

// A running server and the port it bound (useful when the address asked for port 0).
struct RunningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Builds and starts a server listening on `address` ("host:port") with `services`, the standard
// health service (every service reported SERVING) and server reflection.
absl::StatusOr<RunningServer> StartServer(absl::string_view address,
                                          std::shared_ptr<grpc::ServerCredentials> credentials,
                                          const std::vector<grpc::Service*>& services);

// Reads a whole file (for PEM material). NOT_FOUND when it cannot be opened.
absl::StatusOr<std::string> ReadFile(absl::string_view path);

}  // namespace kvwire::grpc_util

#endif  // KVWIRE_PROTO_GRPC_UTIL_H_
