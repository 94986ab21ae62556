// ControlService against in-process fake prefill and decode nodes: the Generate orchestration,
// stats merging, retries on another node after UNAVAILABLE and slot release on failure.
#include "control_plane/control_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "kvwire/base/deadline.h"
#include "proto/grpc_util.h"
#include "runtime/gguf.h"
#include "runtime/tiny_model.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::control_plane {
namespace {

class FakeDecode final : public v1::DecodeService::Service {
 public:
  explicit FakeDecode(std::string id) : id_(std::move(id)) {}
  grpc::Status Reserve(grpc::ServerContext*, const v1::ReserveRequest* req,
                       v1::Grant* grant) override {
    ++reserves;
    if (reserve_unavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode down");
    grant->set_request_id(req->request_id());
    grant->set_slot_id(7);
    grant->set_decode_node_id(id_);
    return grpc::Status::OK;
  }
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeResponse>* writer) override {
    if (hang_after_first_token) return HangUntilCancelled(ctx, writer);
    for (const char* piece : {"he", "llo"}) {
      v1::DecodeResponse r;
      r.mutable_token()->set_token_id(req->first_token_id());
      r.mutable_token()->set_text(piece);
      writer->Write(r);
    }
    v1::DecodeResponse done;
    done.mutable_final_stats()->set_generated_tokens(2);
    done.mutable_final_stats()->set_finish_reason("length");
    done.mutable_final_stats()->set_install_ms(1.5);
    writer->Write(done);
    return grpc::Status::OK;
  }
  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* resp) override {
    absl::MutexLock lock(&mu);
    released.push_back(req->slot_id());
    resp->set_released(true);
    if (!released_once.HasBeenNotified()) return ReleaseNotify();
    return grpc::Status::OK;
  }
  // Streams one token, then waits (bounded) for the control plane to cancel the stream.
  grpc::Status HangUntilCancelled(grpc::ServerContext* ctx,
                                  grpc::ServerWriter<v1::DecodeResponse>* writer) {
    v1::DecodeResponse r;
    r.mutable_token()->set_text("x");
    writer->Write(r);
    const Deadline deadline = Deadline::In(absl::Seconds(10));
    while (!ctx->IsCancelled() && !deadline.Expired()) absl::SleepFor(absl::Milliseconds(2));
    if (ctx->IsCancelled()) saw_cancel.Notify();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  grpc::Status ReleaseNotify() {
    released_once.Notify();
    return grpc::Status::OK;
  }

  std::atomic<int> reserves{0};
  std::atomic<bool> reserve_unavailable{false};
  bool hang_after_first_token = false;
  absl::Notification saw_cancel;
  absl::Notification released_once;
  absl::Mutex mu;
  std::vector<uint64_t> released ABSL_GUARDED_BY(mu);

 private:
  std::string id_;
};

class FakePrefill final : public v1::PrefillService::Service {
 public:
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest* req,
                       v1::PrefillResponse* resp) override {
    ++calls;
    kept_fraction = req->kept_fraction();
    if (code != grpc::StatusCode::OK) return grpc::Status(code, "prefill failed");
    resp->set_first_token_id(5);
    v1::RequestStats* s = resp->mutable_stats();
    s->set_raw_kv_bytes(4000);
    s->set_wire_bytes(1000);
    s->set_transfer_ms(2);
    s->set_prefill_ms(5);
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  std::atomic<float> kept_fraction{0};
  grpc::StatusCode code = grpc::StatusCode::OK;
};

class ControlServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto gguf = runtime::GgufFile::FromBytes(runtime::MakeTinyModel({}).value());
    ASSERT_TRUE(gguf.ok());
    tokenizer_ = runtime::LoadTokenizer(**gguf).value();
    dir_ = std::filesystem::temp_directory_path() / ("kvwire-svc-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    policies_ = PolicyStore::Open((dir_ / "p.yaml").string()).value();
    ControlOptions options;
    options.reserve_timeout = absl::Seconds(5);
    options.prefill_timeout = absl::Seconds(5);
    options.decode_timeout = absl::Seconds(5);
    service_ = std::make_unique<ControlService>(options, policies_.get(), &registry_, &bandwidth_,
                                                tokenizer_.get(), nullptr);
    control_ = Serve(service_.get());
    stub_ = v1::ControlPlane::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(control_.port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    for (auto* s : {&control_, &n1_, &n2_, &n3_}) {
      if (s->server) s->server->Shutdown(std::chrono::system_clock::now());
    }
    std::filesystem::remove_all(dir_);
  }

  static grpc_util::RunningServer Serve(grpc::Service* service) {
    auto running =
        grpc_util::StartServer("127.0.0.1:0", grpc::InsecureServerCredentials(), {service});
    EXPECT_TRUE(running.ok()) << running.status();
    return std::move(running).value();
  }

  void AddNode(const std::string& id, NodeRole role, int port) {
    NodeDescription n;
    n.node_id = id;
    n.role = role;
    n.grpc_address = "127.0.0.1:" + std::to_string(port);
    n.capacity = 4;
    ASSERT_TRUE(registry_.Register(n).ok());
  }

  struct Result {
    grpc::Status status;
    std::string text;
    v1::RequestStats stats;
  };
  Result Generate(const std::string& prompt = "hello world") {
    v1::GenerateRequest req;
    req.set_tenant("t");
    req.set_prompt(prompt);
    req.mutable_sampling()->set_max_tokens(4);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto reader = stub_->Generate(&ctx, req);
    Result r;
    v1::GenerateResponse event;
    while (reader->Read(&event)) {
      if (event.has_final_stats()) r.stats = event.final_stats();
      r.text += event.text_delta();
    }
    r.status = reader->Finish();
    return r;
  }

  std::unique_ptr<runtime::Tokenizer> tokenizer_;
  std::filesystem::path dir_;
  std::unique_ptr<PolicyStore> policies_;
  NodeRegistry registry_{absl::Seconds(60)};
  BandwidthEstimator bandwidth_{100};
  std::unique_ptr<ControlService> service_;
  grpc_util::RunningServer control_, n1_, n2_, n3_;
  std::unique_ptr<v1::ControlPlane::Stub> stub_;
};

TEST_F(ControlServiceTest, RelaysTextAndMergesStats) {
  FakeDecode decode("d1");
  FakePrefill prefill;
  n1_ = Serve(&decode);
  n2_ = Serve(&prefill);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  AddNode("p1", NodeRole::kPrefill, n2_.port);
  Result r = Generate();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "hello");
  EXPECT_EQ(r.stats.raw_kv_bytes(), 4000u);
  EXPECT_EQ(r.stats.wire_bytes(), 1000u);
  EXPECT_EQ(r.stats.generated_tokens(), 2u);
  EXPECT_EQ(r.stats.finish_reason(), "length");
  EXPECT_DOUBLE_EQ(r.stats.install_ms(), 1.5);
  EXPECT_EQ(r.stats.prefill_node_id(), "p1");
  EXPECT_EQ(r.stats.decode_node_id(), "d1");
  EXPECT_GT(r.stats.ttft_ms(), 0);
  EXPECT_GT(r.stats.prompt_tokens(), 0u);
  // No policy file: the embedded default budget applies.
  const float embedded = EmbeddedDefaultPolicy().default_budget.kept_fraction;
  EXPECT_FLOAT_EQ(r.stats.budget_kept_fraction(), embedded);
  EXPECT_FLOAT_EQ(prefill.kept_fraction.load(), embedded);
  EXPECT_EQ(bandwidth_.samples(), 1u);
  EXPECT_DOUBLE_EQ(bandwidth_.bytes_per_ms(), 500);
  absl::MutexLock lock(&decode.mu);
  EXPECT_TRUE(decode.released.empty());
}

TEST_F(ControlServiceTest, PrefillUnavailableIsRetriedOnAnotherNode) {
  FakeDecode decode("d1");
  FakePrefill down, up;
  down.code = grpc::StatusCode::UNAVAILABLE;
  n1_ = Serve(&decode);
  n2_ = Serve(&down);
  n3_ = Serve(&up);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  AddNode("p1", NodeRole::kPrefill, n2_.port);  // tie on load: p1 is tried first
  AddNode("p2", NodeRole::kPrefill, n3_.port);
  Result r = Generate();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(down.calls.load(), 1);
  EXPECT_EQ(up.calls.load(), 1);
  EXPECT_EQ(r.stats.prefill_node_id(), "p2");
}

TEST_F(ControlServiceTest, PrefillFailureReleasesTheSlot) {
  FakeDecode decode("d1");
  FakePrefill broken;
  broken.code = grpc::StatusCode::INTERNAL;
  n1_ = Serve(&decode);
  n2_ = Serve(&broken);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  AddNode("p1", NodeRole::kPrefill, n2_.port);
  Result r = Generate();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "Prefill on prefill node p1"));
  EXPECT_EQ(broken.calls.load(), 1) << "INTERNAL is not retried";
  absl::MutexLock lock(&decode.mu);
  EXPECT_EQ(decode.released, std::vector<uint64_t>{7});
}

TEST_F(ControlServiceTest, ReserveUnavailableIsRetriedOnAnotherDecodeNode) {
  FakeDecode down("d1"), up("d2");
  down.reserve_unavailable = true;
  FakePrefill prefill;
  n1_ = Serve(&down);
  n2_ = Serve(&up);
  n3_ = Serve(&prefill);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  AddNode("d2", NodeRole::kDecode, n2_.port);
  AddNode("p1", NodeRole::kPrefill, n3_.port);
  Result r = Generate();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(down.reserves.load(), 1);
  EXPECT_EQ(up.reserves.load(), 1);
  EXPECT_EQ(r.stats.decode_node_id(), "d2");
}

TEST_F(ControlServiceTest, NoNodeLeftIsUnavailable) {
  FakeDecode down("d1");
  down.reserve_unavailable = true;
  n1_ = Serve(&down);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  Result r = Generate();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "decode down"))
      << r.status.error_message();
  v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->GetStats(&ctx, {}, &stats).ok());
  EXPECT_EQ(stats.requests_failed(), 1u);
  EXPECT_EQ(stats.requests_in_flight(), 0u);
}

TEST_F(ControlServiceTest, ClientCancellationReachesTheDecodeNodeAndReleasesTheSlot) {
  FakeDecode decode("d1");
  decode.hang_after_first_token = true;
  FakePrefill prefill;
  n1_ = Serve(&decode);
  n2_ = Serve(&prefill);
  AddNode("d1", NodeRole::kDecode, n1_.port);
  AddNode("p1", NodeRole::kPrefill, n2_.port);
  v1::GenerateRequest req;
  req.set_tenant("t");
  req.set_prompt("hi");
  req.mutable_sampling()->set_max_tokens(4);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto reader = stub_->Generate(&ctx, req);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  EXPECT_EQ(first.text_delta(), "x");
  ctx.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(decode.saw_cancel.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(decode.released_once.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_F(ControlServiceTest, RegisterAndHeartbeatMaintainTheRegistry) {
  v1::RegisterRequest reg;
  reg.mutable_node()->set_node_id("p9");
  reg.mutable_node()->set_role(v1::NODE_ROLE_PREFILL);
  reg.mutable_node()->set_grpc_address("127.0.0.1:9");
  reg.mutable_node()->set_capacity(2);
  v1::RegisterResponse reg_resp;
  grpc::ClientContext c1;
  ASSERT_TRUE(stub_->Register(&c1, reg, &reg_resp).ok());
  EXPECT_EQ(reg_resp.lease_ms(), 60000u);
  v1::HeartbeatRequest hb;
  *hb.mutable_node() = reg.node();
  v1::HeartbeatResponse hb_resp;
  grpc::ClientContext c2;
  ASSERT_TRUE(stub_->Heartbeat(&c2, hb, &hb_resp).ok());
  EXPECT_TRUE(hb_resp.known());
  hb.mutable_node()->set_node_id("stranger");
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->Heartbeat(&c3, hb, &hb_resp).ok());
  EXPECT_FALSE(hb_resp.known());
  v1::ListNodesResponse nodes;
  grpc::ClientContext c4;
  ASSERT_TRUE(stub_->ListNodes(&c4, {}, &nodes).ok());
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).node_id(), "p9");
  reg.mutable_node()->set_capacity(0);
  grpc::ClientContext c5;
  EXPECT_EQ(stub_->Register(&c5, reg, &reg_resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kvwire::control_plane
