#include "proto/grpc_util.h"

#include <grpcpp/health_check_service_interface.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwire/v1/decode.grpc.pb.h"

namespace kvwire::grpc_util {
namespace {

struct CodePair {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
};

constexpr CodePair kCodes[] = {
    {absl::StatusCode::kOk, grpc::StatusCode::OK},
    {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
    {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
    {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
    {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
    {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
    {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
    {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
    {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
    {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
    {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
    {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
    {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
    {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
    {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
    {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
    {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
};

TEST(GrpcStatus, TranslatesEveryCodeBothWaysWithMessage) {
  for (const CodePair& pair : kCodes) {
    const absl::Status a(pair.absl_code, pair.absl_code == absl::StatusCode::kOk ? "" : "why");
    const grpc::Status g = ToGrpc(a);
    EXPECT_EQ(g.error_code(), pair.grpc_code) << a;
    EXPECT_EQ(g.error_message(), std::string(a.message()));
    EXPECT_EQ(FromGrpc(g), a);
  }
}

TEST(Credentials, InsecureWithoutFilesAndErrorsForHalfOrMissingFiles) {
  EXPECT_TRUE(LoadServerCredentials({}).ok());
  EXPECT_EQ(LoadServerCredentials({.cert_path = "/x.pem"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadServerCredentials({.cert_path = "/nonexistent/c", .key_path = "/nonexistent/k"})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(LoadChannelCredentials({}, /*use_tls=*/false).ok());
  EXPECT_TRUE(LoadChannelCredentials({}, /*use_tls=*/true).ok());
}

class NoopDecode final : public kvwire::v1::DecodeService::Service {
  grpc::Status Release(grpc::ServerContext*, const kvwire::v1::ReleaseRequest* request,
                       kvwire::v1::ReleaseResponse* response) override {
    response->set_released(request->slot_id() == 7);
    return ToGrpc(absl::NotFoundError("slot"));
  }
};

TEST(StartServer, ServesServicesAndReportsPortAndHealth) {
  NoopDecode service;
  auto creds = LoadServerCredentials({});
  ASSERT_TRUE(creds.ok());
  auto running = StartServer("127.0.0.1:0", *creds, {&service});
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_GT(running->port, 0);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", running->port),
                                     grpc::InsecureChannelCredentials());
  auto stub = kvwire::v1::DecodeService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  kvwire::v1::ReleaseRequest request;
  kvwire::v1::ReleaseResponse response;
  const absl::Status status = FromGrpc(stub->Release(&context, request, &response));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "slot");
  EXPECT_NE(running->server->GetHealthCheckService(), nullptr);
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

// A self-signed certificate for "localhost" made with the openssl command line tool.
absl::StatusOr<TlsFiles> SelfSignedFiles() {
  const std::string dir = ::testing::TempDir();
  TlsFiles files{.cert_path = dir + "/grpc_util_cert.pem", .key_path = dir + "/grpc_util_key.pem"};
  files.ca_path = files.cert_path;
  const std::string command = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost -keyout ",
      files.key_path, " -out ", files.cert_path, " >/dev/null 2>&1");
  if (std::system(command.c_str()) != 0) return absl::UnavailableError("openssl failed");
  return files;
}

TEST(StartServer, ServesOverTlsWithGivenCertificate) {
  auto files = SelfSignedFiles();
  if (!files.ok()) GTEST_SKIP() << "no openssl to make a test certificate: " << files.status();
  auto server_creds = LoadServerCredentials(*files);
  ASSERT_TRUE(server_creds.ok()) << server_creds.status();
  NoopDecode service;
  auto running = StartServer("127.0.0.1:0", *server_creds, {&service});
  ASSERT_TRUE(running.ok()) << running.status();
  auto channel_creds = LoadChannelCredentials(*files, /*use_tls=*/true);
  ASSERT_TRUE(channel_creds.ok());
  auto call = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    // An IP literal (no resolver, whose c-ares state outlives the test) checked as "localhost".
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto stub = kvwire::v1::DecodeService::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", running->port), creds, args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    kvwire::v1::ReleaseRequest request;
    kvwire::v1::ReleaseResponse response;
    return FromGrpc(stub->Release(&context, request, &response));
  };
  EXPECT_EQ(call(*channel_creds).code(), absl::StatusCode::kNotFound);  // the service answered
  EXPECT_EQ(call(grpc::InsecureChannelCredentials()).code(), absl::StatusCode::kUnavailable);
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

TEST(StartServer, UnbindableAddressIsUnavailable) {
  NoopDecode service;
  auto running = StartServer("256.1.1.1:1", grpc::InsecureServerCredentials(), {&service});
  EXPECT_EQ(running.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvwire::grpc_util
