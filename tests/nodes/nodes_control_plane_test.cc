// The whole serving path on loopback: a real kvwire-control process, prefill and decode nodes
// registered through their agents, and clients calling ControlPlane.Generate. Covers load (many
// concurrent requests, no grant leaked) and nodes dying while a request is in flight.
//
// To kill a node at a known point of a request without timing guesses, the test SIGSTOPs the
// node(s) first: the control plane's call then waits in the stopped node's socket, ListNodes
// shows which node it was routed to (the control plane counts its own outstanding calls), and
// the test SIGKILLs that one and SIGCONTs the others.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/status.h"
#include "kvwire/v1/control_plane.grpc.pb.h"
#include "proto/grpc_util.h"
#include "tests/nodes/nodes_test_util.h"

namespace kvwire {
namespace {

using grpc_util::FromGrpc;
using nodes_testing::ModelPath;
using nodes_testing::Node;
using nodes_testing::SetDeadline;
using nodes_testing::StartNode;
using transport::testing::ChildProcess;

constexpr absl::Duration kRequestTimeout = absl::Seconds(30);

struct GenerateResult {
  absl::Status status;
  std::string text;
  bool have_stats = false;
  v1::RequestStats stats;
  absl::Duration elapsed;
};

class ControlPlaneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(ModelPath().empty()) << "could not write the tiny model";
  }

  void SetUp() override {
    policy_ = absl::StrCat(::testing::TempDir(), "/nodes_policy_", getpid(), ".yaml");
    auto control =
        ChildProcess::Spawn({KVWIRE_CONTROL_BIN, "--listen", "127.0.0.1:0", "--policy-file",
                             policy_, "--model", ModelPath(), "--lease-ms", "5000"});
    ASSERT_TRUE(control.ok()) << control.status();
    control_ = *std::move(control);
    auto address =
        control_->ReadTagged("kvwire-control listening on ", Deadline::In(absl::Seconds(30)));
    ASSERT_TRUE(address.ok()) << address.status();
    control_address_ = *address;
    stub_ = v1::ControlPlane::NewStub(
        grpc::CreateChannel(control_address_, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override { std::remove(policy_.c_str()); }

  // Starts a node registered with the control plane.
  absl::StatusOr<Node> Start(const std::string& binary, std::vector<std::string> extra = {}) {
    extra.insert(extra.end(), {"--control", control_address_});
    return StartNode(binary, std::move(extra));
  }

  // One decode node and `prefills` prefill nodes, all registered (checked, bounded) on return.
  void StartNodes(int prefills, std::vector<std::string> decode_flags = {},
                  std::vector<std::string> prefill_flags = {}) {
    auto decode = Start(KVWIRE_DECODE_BIN, decode_flags);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    for (int i = 0; i < prefills; ++i) {
      auto prefill = Start(KVWIRE_PREFILL_BIN, prefill_flags);
      ASSERT_TRUE(prefill.ok()) << prefill.status();
      prefills_.push_back(*std::move(prefill));
    }
    ASSERT_TRUE(WaitForListed(1 + prefills));
  }

  absl::StatusOr<v1::ListNodesResponse> ListNodes() {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(5));
    v1::ListNodesResponse nodes;
    KVWIRE_RETURN_IF_ERROR(FromGrpc(stub_->ListNodes(&context, v1::ListNodesRequest(), &nodes)));
    return nodes;
  }

  // Waits (bounded) until `pred` holds for the listed nodes; registration is asynchronous.
  template <typename Pred>
  bool WaitForNodes(Pred pred, absl::Duration timeout = absl::Seconds(20)) {
    const Deadline deadline = Deadline::In(timeout);
    while (true) {
      absl::StatusOr<v1::ListNodesResponse> nodes = ListNodes();
      if (nodes.ok() && pred(*nodes)) return true;
      if (deadline.Expired()) return false;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  bool WaitForListed(int count) {
    return WaitForNodes(
        [count](const v1::ListNodesResponse& n) { return n.nodes_size() == count; });
  }

  // The prefill node the control plane has a call outstanding on (empty if none in time).
  v1::NodeInfo BusyPrefillNode() {
    v1::NodeInfo busy;
    WaitForNodes([&busy](const v1::ListNodesResponse& nodes) {
      for (const v1::NodeInfo& node : nodes.nodes()) {
        if (node.role() == v1::NODE_ROLE_PREFILL && node.in_flight() > 0) busy = node;
      }
      return !busy.grpc_address().empty();
    });
    return busy;
  }

  // `on_first_text` runs on the calling thread once the first text has arrived.
  GenerateResult Generate(const std::string& prompt, int max_tokens = 8,
                          const std::function<void()>& on_first_text = nullptr) {
    const absl::Time start = absl::Now();
    grpc::ClientContext context;
    SetDeadline(&context, kRequestTimeout);
    v1::GenerateRequest request;
    request.set_prompt(prompt);
    request.mutable_sampling()->set_max_tokens(static_cast<uint32_t>(max_tokens));
    request.mutable_budget()->set_kept_fraction(0.5f);
    auto reader = stub_->Generate(&context, request);
    GenerateResult result;
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (result.text.empty() && !response.text_delta().empty() && on_first_text) {
        on_first_text();
      }
      result.text += response.text_delta();
      if (response.has_final_stats()) {
        result.have_stats = true;
        result.stats = response.final_stats();
      }
    }
    result.status = FromGrpc(reader->Finish());
    result.elapsed = absl::Now() - start;
    return result;
  }

  absl::StatusOr<v1::GetStatsResponse> GetStats() {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(5));
    v1::GetStatsResponse stats;
    KVWIRE_RETURN_IF_ERROR(FromGrpc(stub_->GetStats(&context, v1::GetStatsRequest(), &stats)));
    return stats;
  }

  static void ExpectNoLiveGrants(const Node& decode) {
    absl::StatusOr<double> live = nodes_testing::WaitForMetric(decode, "kvwire_decode_live_grants",
                                                               0, Deadline::In(absl::Seconds(10)));
    ASSERT_TRUE(live.ok()) << live.status();
    EXPECT_EQ(*live, 0);
  }

  // Completed (answered in full) or UNAVAILABLE, and in either case within the request deadline.
  static void ExpectCompletedOrUnavailable(const GenerateResult& r) {
    EXPECT_LT(r.elapsed, kRequestTimeout);
    if (r.status.ok()) {
      EXPECT_TRUE(r.have_stats);
    } else {
      EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
    }
  }

  static void ExpectCompleted(const GenerateResult& r) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_TRUE(r.have_stats);
    EXPECT_FALSE(r.text.empty());
    EXPECT_GT(r.stats.generated_tokens(), 0u);
  }

  std::string policy_;
  std::unique_ptr<ChildProcess> control_;
  std::string control_address_;
  std::unique_ptr<v1::ControlPlane::Stub> stub_;
  Node decode_;
  std::vector<Node> prefills_;
};

std::string LongPrompt() {
  std::string prompt;
  for (int i = 0; i < 60; ++i) absl::StrAppend(&prompt, "word", i, " ");
  return prompt;
}

TEST_F(ControlPlaneTest, GenerateCompletesWithCompressedTransfer) {
  ASSERT_NO_FATAL_FAILURE(StartNodes(1));
  const GenerateResult r = Generate("hello there, tiny model");
  ExpectCompleted(r);
  EXPECT_GT(r.stats.wire_bytes(), 0u);
  EXPECT_LT(r.stats.wire_bytes(), r.stats.raw_kv_bytes());
}

TEST_F(ControlPlaneTest, ThirtyTwoConcurrentRequestsAllCompleteAndFreeTheirGrants) {
  constexpr int kRequests = 32;
  // Capacity 32 so every request gets a decode slot, and a prefill queue of 32 (the default is 16)
  // so none can be answered RESOURCE_EXHAUSTED while the single prefill worker is busy.
  ASSERT_NO_FATAL_FAILURE(StartNodes(1, {"--capacity", "32"}, {"--queue", "32"}));
  std::vector<GenerateResult> results(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back(
        [this, &results, i] { results[i] = Generate(absl::StrCat("request ", i, " says hello")); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(absl::StrCat("request ", i));
    ExpectCompleted(results[i]);
  }
  auto stats = GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->requests_total(), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(stats->requests_failed(), 0u);
  EXPECT_EQ(stats->requests_in_flight(), 0u);
  ExpectNoLiveGrants(decode_);
}

TEST_F(ControlPlaneTest, PrefillNodeKilledMidRequestIsRetriedOrUnavailable) {
  ASSERT_NO_FATAL_FAILURE(StartNodes(2));
  Node* first = &prefills_[0];
  Node* second = &prefills_[1];
  first->process->Signal(SIGSTOP);
  second->process->Signal(SIGSTOP);
  GenerateResult result;
  std::thread client([&] { result = Generate(LongPrompt()); });
  const v1::NodeInfo busy = BusyPrefillNode();
  Node* victim = busy.grpc_address() == first->address ? first : second;
  Node* survivor = victim == first ? second : first;
  if (!busy.grpc_address().empty()) victim->process->Kill();
  survivor->process->Signal(SIGCONT);
  if (busy.grpc_address().empty()) victim->process->Signal(SIGCONT);
  client.join();
  ASSERT_FALSE(busy.grpc_address().empty()) << "no prefill node was ever called";
  ExpectCompletedOrUnavailable(result);
  if (result.status.ok()) {
    EXPECT_NE(result.stats.prefill_node_id(), busy.node_id()) << "served by the killed node";
  }
  ExpectNoLiveGrants(decode_);
  // The survivor serves the next request (the dead node is skipped or retried away from).
  ExpectCompleted(Generate("after the kill"));
  ExpectNoLiveGrants(decode_);
}

TEST_F(ControlPlaneTest, DecodeNodeKilledMidRequestIsUnavailableAndTheControlPlaneRecovers) {
  ASSERT_NO_FATAL_FAILURE(StartNodes(1));
  Node* prefill = &prefills_[0];
  // The request holds a grant on the decode node and waits in the stopped prefill node when the
  // decode node dies; the prefill then cannot deliver its KV.
  prefill->process->Signal(SIGSTOP);
  GenerateResult result;
  std::thread client([&] { result = Generate(LongPrompt()); });
  const v1::NodeInfo busy = BusyPrefillNode();
  decode_.process->Kill();
  prefill->process->Signal(SIGCONT);
  client.join();
  ASSERT_FALSE(busy.grpc_address().empty()) << "the prefill node was never called";
  ExpectCompletedOrUnavailable(result);
  EXPECT_FALSE(result.status.ok()) << "no decode node was left to finish the request";
  // With no decode node alive, the next request is refused promptly, not left hanging.
  const GenerateResult refused = Generate("nobody to decode");
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kUnavailable) << refused.status;
  EXPECT_LT(refused.elapsed, absl::Seconds(10));
  // A fresh decode node brings the service back.
  auto restarted = Start(KVWIRE_DECODE_BIN);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE(WaitForNodes([&](const v1::ListNodesResponse& nodes) {
    for (const v1::NodeInfo& node : nodes.nodes()) {
      if (node.grpc_address() == restarted->address) return true;
    }
    return false;
  }));
  ExpectCompleted(Generate("after the restart"));
  ExpectNoLiveGrants(*restarted);
}

TEST_F(ControlPlaneTest, DecodeNodeKilledWhileStreamingEndsTheRequestWithinItsDeadline) {
  ASSERT_NO_FATAL_FAILURE(StartNodes(1));
  // Killed as soon as the first text arrives, with hundreds of tokens still to generate (unless
  // the model ends early, when a completed answer is also acceptable).
  const GenerateResult result =
      Generate("a long answer, please", 900, [this] { decode_.process->Kill(); });
  ExpectCompletedOrUnavailable(result);
  EXPECT_FALSE(result.text.empty());
  auto stats = GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->requests_in_flight(), 0u);
}

}  // namespace
}  // namespace kvwire
