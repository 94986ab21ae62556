// Synthetic-KV mode through real processes on loopback: a control plane, a decode and a prefill
// node started with --synthetic-kv stream a KV shape the tiny model does not have; nodes started
// with different shapes refuse each other with a message naming both shapes.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwire/base/deadline.h"
#include "kvwire/v1/control_plane.grpc.pb.h"
#include "proto/grpc_util.h"
#include "tests/nodes/nodes_test_util.h"

namespace kvwire {
namespace {

using nodes_testing::ModelPath;
using nodes_testing::Node;
using nodes_testing::StartNode;
using transport::testing::ChildProcess;

struct Outcome {
  absl::Status status;
  std::string text;
  v1::RequestStats stats;
};

class SyntheticNodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(ModelPath().empty()) << "could not write the tiny model";
    policy_ = absl::StrCat(::testing::TempDir(), "/synthetic_policy_", getpid(), ".yaml");
    auto control = ChildProcess::Spawn({KVWIRE_CONTROL_BIN, "--listen", "127.0.0.1:0",
                                        "--policy-file", policy_, "--model", ModelPath()});
    ASSERT_TRUE(control.ok()) << control.status();
    control_ = *std::move(control);
    auto address =
        control_->ReadTagged("kvwire-control listening on ", Deadline::In(absl::Seconds(30)));
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
    stub_ = v1::ControlPlane::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { std::remove(policy_.c_str()); }

  // A decode and a prefill node with these flags, registered (bounded wait) on return.
  void StartNodes(std::vector<std::string> decode_flags, std::vector<std::string> prefill_flags) {
    decode_flags.insert(decode_flags.end(), {"--control", address_});
    prefill_flags.insert(prefill_flags.end(), {"--control", address_});
    auto decode = StartNode(KVWIRE_DECODE_BIN, decode_flags);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    auto prefill = StartNode(KVWIRE_PREFILL_BIN, prefill_flags);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);
    const Deadline deadline = Deadline::In(absl::Seconds(20));
    v1::ListNodesResponse nodes;
    while (nodes.nodes_size() < 2 && !deadline.Expired()) {
      grpc::ClientContext context;
      nodes_testing::SetDeadline(&context, absl::Seconds(5));
      nodes.Clear();
      (void)stub_->ListNodes(&context, v1::ListNodesRequest(), &nodes);
      if (nodes.nodes_size() < 2) absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_EQ(nodes.nodes_size(), 2) << "the nodes did not register";
  }

  Outcome Generate(const std::string& model, float budget) {
    grpc::ClientContext context;
    nodes_testing::SetDeadline(&context, absl::Seconds(60));
    v1::GenerateRequest request;
    request.set_model(model);
    std::string prompt;
    for (int i = 0; i < 40; ++i) absl::StrAppend(&prompt, "word", i, " ");
    request.set_prompt(prompt);
    request.mutable_sampling()->set_max_tokens(64);  // the tiny vocabulary spells it out
    request.mutable_budget()->set_kept_fraction(budget);
    auto reader = stub_->Generate(&context, request);
    Outcome out;
    v1::GenerateResponse event;
    while (reader->Read(&event)) {
      out.text += event.text_delta();
      if (event.has_final_stats()) out.stats = event.final_stats();
    }
    out.status = grpc_util::FromGrpc(reader->Finish());
    return out;
  }

  std::string policy_;
  std::unique_ptr<ChildProcess> control_;
  std::string address_;
  std::unique_ptr<v1::ControlPlane::Stub> stub_;
  Node decode_, prefill_;
};

TEST_F(SyntheticNodesTest, StreamsAShapeTheModelDoesNotHave) {
  StartNodes({"--synthetic-kv", "4x4x64x8"}, {"--synthetic-kv", "4x4x64x8"});
  const Outcome full = Generate("synthetic-4x4x64x8", 1.0f);
  ASSERT_TRUE(full.status.ok()) << full.status;
  EXPECT_NE(full.text.find("synthetic"), std::string::npos) << full.text;
  const uint64_t tokens = full.stats.prompt_tokens();
  ASSERT_GT(tokens, 0u);
  EXPECT_EQ(full.stats.raw_kv_bytes(), tokens * 4 * 4 * 64 * 2 * 2);
  EXPECT_GT(full.stats.wire_bytes(), full.stats.raw_kv_bytes());  // plus positions and votes
  EXPECT_EQ(full.stats.kept_entries(), tokens * 4 * 4);
  EXPECT_GT(full.stats.install_ms(), 0);

  const Outcome small = Generate("synthetic-4x4x64x8", 0.25f);
  ASSERT_TRUE(small.status.ok()) << small.status;
  EXPECT_LT(small.stats.wire_bytes(), full.stats.wire_bytes() * 4 / 10);
}

TEST_F(SyntheticNodesTest, PrefillRefusesAGrantForAnotherShapeNamingBoth) {
  StartNodes({"--synthetic-kv", "4x4x64x8", "--model-name", "mixed"},
             {"--synthetic-kv", "4x4x32x8", "--model-name", "mixed"});
  const Outcome out = Generate("mixed", 1.0f);
  ASSERT_FALSE(out.status.ok());
  EXPECT_EQ(out.status.code(), absl::StatusCode::kFailedPrecondition) << out.status;
  EXPECT_NE(out.status.message().find("4x4x32 synthetic"), absl::string_view::npos) << out.status;
  EXPECT_NE(out.status.message().find("4x4x64 synthetic"), absl::string_view::npos) << out.status;
}

TEST_F(SyntheticNodesTest, RealDecodeNodeIsRefusedSyntheticKvOfItsOwnShape) {
  // The tiny model's KV shape is 3 layers x 2 KV heads x 64; a synthetic stream of the same shape
  // still carries the synthetic fingerprint.
  StartNodes({"--model-name", "mixed"}, {"--synthetic-kv", "3x2x64x4", "--model-name", "mixed"});
  const Outcome out = Generate("mixed", 1.0f);
  ASSERT_FALSE(out.status.ok());
  EXPECT_EQ(out.status.code(), absl::StatusCode::kFailedPrecondition) << out.status;
  EXPECT_NE(out.status.message().find("takes KV 3x2x64 (model"), absl::string_view::npos)
      << out.status;
}

}  // namespace
}  // namespace kvwire
