// Real kvwire-decode and kvwire-prefill processes on loopback addresses, driven directly over
// gRPC (Reserve -> Prefill -> Decode) without a control plane; nodes_control_plane_test.cc has the
// tests through one. The model is the tiny random one (runtime/tiny_model.h) written to a
// temporary file, so no download is needed.
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/spec.h"
#include "kvwire/v1/decode.grpc.pb.h"
#include "kvwire/v1/prefill.grpc.pb.h"
#include "proto/grpc_util.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer_gguf.h"
#include "tests/nodes/nodes_test_util.h"

namespace kvwire {
namespace {

using grpc_util::FromGrpc;
using nodes_testing::ModelPath;
using nodes_testing::Node;
using nodes_testing::SetDeadline;
using nodes_testing::StartNode;

constexpr int kMaxTokens = 12;

std::vector<uint32_t> Prompt(int n) {
  std::vector<uint32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(3 + static_cast<uint32_t>((i * 37 + 11) % 250));
  return ids;
}

// Greedy generation in this process with the full cache: the reference for budget 1. `steps`
// counts the argmax decisions taken (a stop token's included); `decisive` the leading ones whose
// top two logits are further apart than twice the device's logit tolerance (3 % of the largest
// |logit| + 1e-3, as tests/kernels_gpu/gpu_runner_test.cc asserts for fp16 weights), which a run on
// a device must take alike.
struct LocalRun {
  std::vector<uint32_t> tokens;
  size_t steps = 0, decisive = 0;
};

bool Decisive(const std::vector<float>& logits) {
  float scale = 0, first = -INFINITY, second = -INFINITY;
  for (float x : logits) {
    scale = std::max(scale, std::fabs(x));
    if (x > first) {
      second = first, first = x;
    } else if (x > second) {
      second = x;
    }
  }
  return first - second > 2 * (0.03f * scale + 1e-3f);
}

LocalRun LocalGreedy(const std::vector<uint32_t>& prompt_ids,
                     const std::string& model_path = ModelPath()) {
  LocalRun run;
  auto model = runtime::Model::Load(model_path);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return run;
  auto tokenizer = runtime::LoadTokenizer((*model)->gguf());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return run;
  const int32_t eos = (*tokenizer)->eos_id(), im_end = (*tokenizer)->im_end_id();
  runtime::Runner runner(**model, 2);
  cache::KvCache cache;
  const std::vector<int32_t> prompt(prompt_ids.begin(), prompt_ids.end());
  auto logits = runner.Prefill(prompt, {}, &cache);
  for (int generated = 1; logits.ok(); ++generated) {
    const int32_t next = runtime::ArgMax(*logits);
    if (run.decisive == run.steps && Decisive(*logits)) ++run.decisive;
    ++run.steps;
    if (next == eos || next == im_end) break;
    run.tokens.push_back(static_cast<uint32_t>(next));
    if (generated == kMaxTokens) break;
    logits = runner.Decode(next, runtime::DecodePosition(cache, generated - 1), &cache);
  }
  EXPECT_TRUE(logits.ok()) << logits.status();
  return run;
}

std::vector<uint32_t> LocalTokens(const std::vector<uint32_t>& prompt_ids,
                                  const std::string& model_path = ModelPath()) {
  return LocalGreedy(prompt_ids, model_path).tokens;
}

// A device run's greedy tokens against the local CPU run: all equal when every local decision was
// decisive, else equal up to the first one that was not (from there fp16 rounding may pick the
// other of two near-equal logits and the runs legitimately diverge).
void ExpectDeviceTokensMatchLocal(const std::vector<uint32_t>& device,
                                  const std::vector<uint32_t>& prompt) {
  const LocalRun local = LocalGreedy(prompt);
  if (local.decisive == local.steps) {
    EXPECT_EQ(device, local.tokens);
    return;
  }
  std::printf(
      "the local run's step %zu is within the device's logit tolerance: comparing the %zu "
      "tokens before it\n",
      local.decisive, local.decisive);
  ASSERT_GE(device.size(), local.decisive);
  EXPECT_EQ(std::vector<uint32_t>(device.begin(), device.begin() + local.decisive),
            std::vector<uint32_t>(local.tokens.begin(), local.tokens.begin() + local.decisive));
}

// gRPC calls a control plane would make, straight to the nodes.
class Client {
 public:
  Client(const Node& decode, const Node& prefill)
      : decode_stub_(v1::DecodeService::NewStub(
            grpc::CreateChannel(decode.address, grpc::InsecureChannelCredentials()))),
        prefill_stub_(v1::PrefillService::NewStub(
            grpc::CreateChannel(prefill.address, grpc::InsecureChannelCredentials()))) {}

  absl::StatusOr<v1::Grant> Reserve(RequestId id, int prompt_tokens, float kept,
                                    uint32_t lease_ms = 0) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ReserveRequest request;
    request.set_request_id(id);
    request.set_lease_ms(lease_ms);
    request.set_prompt_tokens(static_cast<uint32_t>(prompt_tokens));
    request.set_kept_fraction(kept);
    v1::Grant grant;
    KVWIRE_RETURN_IF_ERROR(FromGrpc(decode_stub_->Reserve(&context, request, &grant)));
    return grant;
  }

  absl::StatusOr<v1::PrefillResponse> Prefill(const v1::Grant& grant,
                                              const std::vector<uint32_t>& prompt, float kept,
                                              absl::Duration timeout = absl::Seconds(60),
                                              const std::string& method = "snapkv/adaptive/merge") {
    grpc::ClientContext context;
    SetDeadline(&context, timeout);
    v1::PrefillRequest request;
    request.set_request_id(grant.request_id());
    request.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    request.set_kept_fraction(kept);
    request.mutable_compression()->set_method(method);
    *request.mutable_grant() = grant;
    v1::PrefillResponse response;
    KVWIRE_RETURN_IF_ERROR(FromGrpc(prefill_stub_->Prefill(&context, request, &response)));
    return response;
  }

  // Streams the decode; returns the token ids and the final stats.
  absl::StatusOr<std::pair<std::vector<uint32_t>, v1::RequestStats>> Decode(
      const v1::Grant& grant, uint32_t first_token, float decode_kept_fraction = 0) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(60));
    v1::DecodeRequest request;
    request.set_request_id(grant.request_id());
    request.set_slot_id(grant.slot_id());
    request.set_first_token_id(first_token);
    request.mutable_sampling()->set_max_tokens(kMaxTokens);
    request.set_decode_kept_fraction(decode_kept_fraction);
    auto reader = decode_stub_->Decode(&context, request);
    std::pair<std::vector<uint32_t>, v1::RequestStats> out;
    v1::DecodeResponse response;
    while (reader->Read(&response)) {
      if (response.has_token() && response.token().token_id() != 0) {
        out.first.push_back(response.token().token_id());
      }
      if (response.has_final_stats()) out.second = response.final_stats();
    }
    KVWIRE_RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    return out;
  }

  absl::Status Release(const v1::Grant& grant, bool* released) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ReleaseRequest request;
    request.set_request_id(grant.request_id());
    request.set_slot_id(grant.slot_id());
    v1::ReleaseResponse response;
    KVWIRE_RETURN_IF_ERROR(FromGrpc(decode_stub_->Release(&context, request, &response)));
    *released = response.released();
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<v1::DecodeService::Stub> decode_stub_;
  std::unique_ptr<v1::PrefillService::Stub> prefill_stub_;
};

class NodesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(ModelPath().empty()) << "could not write the tiny model";
  }

  void SetUp() override {
    auto decode = StartNode(KVWIRE_DECODE_BIN, {"--capacity", "4", "--lease-ms", "10000"});
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    auto prefill = StartNode(KVWIRE_PREFILL_BIN, {"--workers", "1", "--queue", "4"});
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);
    client_ = std::make_unique<Client>(decode_, prefill_);
  }

  absl::StatusOr<v1::Grant> Reserve(RequestId id, int prompt_tokens, float kept) {
    return client_->Reserve(id, prompt_tokens, kept);
  }
  absl::StatusOr<v1::PrefillResponse> Prefill(const v1::Grant& grant,
                                              const std::vector<uint32_t>& prompt, float kept,
                                              absl::Duration timeout = absl::Seconds(60),
                                              const std::string& method = "snapkv/adaptive/merge") {
    return client_->Prefill(grant, prompt, kept, timeout, method);
  }
  auto Decode(const v1::Grant& grant, uint32_t first_token, float decode_kept_fraction = 0) {
    return client_->Decode(grant, first_token, decode_kept_fraction);
  }

  void ExpectNoLiveGrants() {
    // Slots are freed when Decode returns; the gauge is refreshed on every call and by the
    // janitor, so it settles within a few of its periods.
    absl::StatusOr<double> live = nodes_testing::WaitForMetric(decode_, "kvwire_decode_live_grants",
                                                               0, Deadline::In(absl::Seconds(10)));
    ASSERT_TRUE(live.ok()) << live.status();
    EXPECT_EQ(*live, 0);
  }

  Node decode_;
  Node prefill_;
  std::unique_ptr<Client> client_;
};

TEST_F(NodesTest, FullBudgetGivesTheSameTokensAsALocalRun) {
  const std::vector<uint32_t> prompt = Prompt(60);
  auto grant = Reserve(NewRequestId(), 60, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = Prefill(*grant, prompt, 1.0f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  auto decoded = Decode(*grant, prefilled->first_token_id());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const std::vector<uint32_t> local = LocalTokens(prompt);
  // More than the prefill's token, so the decode node's own steps are compared too.
  ASSERT_GE(local.size(), 2u);
  EXPECT_EQ(decoded->first, local);
  EXPECT_EQ(prefilled->stats().kept_entries(), 60u * 3 * 2);  // every entry, 3 layers, 2 heads
  EXPECT_FALSE(decoded->second.finish_reason().empty());
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, FifthBudgetSendsAboutAFifthOfTheBytes) {
  const std::vector<uint32_t> prompt = Prompt(400);
  auto grant = Reserve(NewRequestId(), 400, 0.2f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = Prefill(*grant, prompt, 0.2f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  const double ratio = static_cast<double>(prefilled->stats().wire_bytes()) /
                       static_cast<double>(prefilled->stats().raw_kv_bytes());
  // Kept keys and values are 0.2 of raw; positions and log-votes add 8 of every 256 bytes.
  EXPECT_GT(ratio, 0.18);
  EXPECT_LT(ratio, 0.25);
  auto decoded = Decode(*grant, prefilled->first_token_id());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->first.empty());
  EXPECT_EQ(decoded->second.wire_bytes(), prefilled->stats().wire_bytes());
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, DecodeBudgetMergesWhileGenerating) {
  const std::vector<uint32_t> prompt = Prompt(120);
  auto grant = Reserve(NewRequestId(), 120, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = Prefill(*grant, prompt, 1.0f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  // 0.4 of 120 = 48 entries per head, below the 120 installed: every step merges.
  auto decoded = Decode(*grant, prefilled->first_token_id(), 0.4f);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->first.empty());
  EXPECT_EQ(decoded->second.kept_entries(), 120u * 3 * 2);
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, ReserveLeaseFollowsTheRequesterWithinTheNodesBounds) {
  // The node runs with --lease-ms 10000 and the default --max-lease-ms 600000.
  for (const auto& [asked, granted] : std::vector<std::pair<uint32_t, uint32_t>>{
           {0, 10000}, {1000, 10000}, {30000, 30000}, {1000000000, 600000}}) {
    auto grant = client_->Reserve(NewRequestId(), 20, 1.0f, asked);
    ASSERT_TRUE(grant.ok()) << grant.status();
    EXPECT_EQ(grant->lease_ms(), granted) << "asked for " << asked;
    bool released = false;
    ASSERT_TRUE(client_->Release(*grant, &released).ok());
    EXPECT_TRUE(released);
  }
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, WrongTokenIsRejectedAndTheSlotIsFreed) {
  auto grant = Reserve(NewRequestId(), 20, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  v1::Grant forged = *grant;
  std::string token = forged.token();
  token[0] = static_cast<char>(token[0] ^ 1);
  forged.set_token(token);
  auto prefilled = Prefill(forged, Prompt(20), 1.0f);
  EXPECT_EQ(prefilled.status().code(), absl::StatusCode::kPermissionDenied) << prefilled.status();
  bool released = false;
  ASSERT_TRUE(client_->Release(*grant, &released).ok());
  EXPECT_TRUE(released);
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, StreamLargerThanTheGrantIsResourceExhausted) {
  auto grant = Reserve(NewRequestId(), 10, 1.0f);  // room for 10 tokens' KV
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = Prefill(*grant, Prompt(200), 1.0f);
  EXPECT_EQ(prefilled.status().code(), absl::StatusCode::kResourceExhausted) << prefilled.status();
  auto decoded = Decode(*grant, 5);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kResourceExhausted) << decoded.status();
  ExpectNoLiveGrants();
}

TEST_F(NodesTest, InvalidPrefillRequestsAreInvalidArgument) {
  auto grant = Reserve(NewRequestId(), 20, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  EXPECT_EQ(Prefill(*grant, {}, 1.0f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Prefill(*grant, {1u << 30}, 1.0f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Prefill(*grant, Prompt(20), 0.0f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Prefill(*grant, Prompt(20), 0.5f, absl::Seconds(60), "nosuch/scorer").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Reserve(NewRequestId(), 0, 1.0f).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(NodesTest, DecodeNodeKilledMidRequestFailsPrefillWithinItsDeadline) {
  auto grant = Reserve(NewRequestId(), 400, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  decode_.process->Kill();
  const absl::Time start = absl::Now();
  auto prefilled = Prefill(*grant, Prompt(400), 1.0f, absl::Seconds(20));
  EXPECT_EQ(prefilled.status().code(), absl::StatusCode::kUnavailable) << prefilled.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST_F(NodesTest, ConcurrentRequestsEachMatchTheirLocalRun) {
  constexpr int kRequests = 3;
  std::vector<std::vector<uint32_t>> prompts;
  std::vector<v1::Grant> grants;
  std::vector<uint32_t> firsts;
  for (int r = 0; r < kRequests; ++r) {
    std::vector<uint32_t> prompt = Prompt(30 + 7 * r);
    prompt[0] = static_cast<uint32_t>(10 + r);
    auto grant = Reserve(NewRequestId(), static_cast<int>(prompt.size()), 1.0f);
    ASSERT_TRUE(grant.ok()) << grant.status();
    auto prefilled = Prefill(*grant, prompt, 1.0f);
    ASSERT_TRUE(prefilled.ok()) << prefilled.status();
    prompts.push_back(prompt);
    grants.push_back(*grant);
    firsts.push_back(prefilled->first_token_id());
  }
  // All decodes at once: the scheduler interleaves their steps over one runner.
  std::vector<std::future<absl::StatusOr<std::vector<uint32_t>>>> decodes;
  for (int r = 0; r < kRequests; ++r) {
    decodes.push_back(
        std::async(std::launch::async, [&, r]() -> absl::StatusOr<std::vector<uint32_t>> {
          KVWIRE_ASSIGN_OR_RETURN(auto out, Decode(grants[r], firsts[r]));
          return out.first;
        }));
  }
  for (int r = 0; r < kRequests; ++r) {
    auto tokens = decodes[r].get();
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(*tokens, LocalTokens(prompts[r])) << "request " << r;
  }
  ExpectNoLiveGrants();
}

TEST(NodesLease, UnusedGrantLapsesAndItsSlotIsReaped) {
  auto decode = StartNode(KVWIRE_DECODE_BIN, {"--capacity", "1", "--lease-ms", "200"});
  ASSERT_TRUE(decode.ok()) << decode.status();
  auto stub = v1::DecodeService::NewStub(
      grpc::CreateChannel(decode->address, grpc::InsecureChannelCredentials()));
  auto reserve = [&](RequestId id) {
    grpc::ClientContext context;
    SetDeadline(&context, absl::Seconds(10));
    v1::ReserveRequest request;
    request.set_request_id(id);
    request.set_prompt_tokens(10);
    request.set_kept_fraction(1.0f);
    v1::Grant grant;
    return FromGrpc(stub->Reserve(&context, request, &grant));
  };
  ASSERT_TRUE(reserve(NewRequestId()).ok());
  // Capacity 1: the next reservation fails until the first grant's lease lapses.
  EXPECT_EQ(reserve(NewRequestId()).code(), absl::StatusCode::kResourceExhausted);
  const Deadline deadline = Deadline::In(absl::Seconds(10));
  absl::Status again;
  do {
    again = reserve(NewRequestId());
  } while (!again.ok() && !deadline.Expired() && (absl::SleepFor(absl::Milliseconds(50)), true));
  EXPECT_TRUE(again.ok()) << again;
}

// A node started by posix_spawn with only its stdout piped, so the test sees its exit status.
class SignalledNode {
 public:
  explicit SignalledNode(const std::string& binary) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    const std::string model = ModelPath();
    std::vector<const char*> argv = {binary.c_str(), "--listen",  "127.0.0.1:0", "--model",
                                     model.c_str(),  "--ucx-tls", "tcp",         nullptr};
    EXPECT_EQ(posix_spawn(&pid_, binary.c_str(), &actions, nullptr,
                          const_cast<char* const*>(argv.data()), environ),
              0);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_ = fds[0];
  }
  ~SignalledNode() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(out_);
  }
  // Reads stdout until `text` appears or the deadline passes.
  bool WaitFor(const std::string& text, Deadline deadline) {
    std::string seen;
    char buf[512];
    while (seen.find(text) == std::string::npos) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, deadline.RemainingMillisForPoll()) <= 0) return false;
      const ssize_t n = read(out_, buf, sizeof(buf));
      if (n <= 0) return false;
      seen.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Sends `signal` and returns the exit code once stdout closes (-1 on timeout).
  int SignalAndWait(int signal, Deadline deadline) {
    kill(pid_, signal);
    char buf[512];
    while (true) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, deadline.RemainingMillisForPoll()) <= 0) return -1;
      if (read(out_, buf, sizeof(buf)) <= 0) break;
    }
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

TEST(NodesShutdown, SigtermStopsBothNodesCleanly) {
  for (const std::string binary : {KVWIRE_DECODE_BIN, KVWIRE_PREFILL_BIN}) {
    SignalledNode node(binary);
    ASSERT_TRUE(node.WaitFor("listening ", Deadline::In(absl::Seconds(30)))) << binary;
    EXPECT_EQ(node.SignalAndWait(SIGTERM, Deadline::In(absl::Seconds(30))), 0) << binary;
  }
}

// The reference model, when present: budget 1 must reproduce a local greedy run exactly.
TEST(NodesModel, RealModelFullBudgetMatchesLocalRun) {
  const char* model = std::getenv("KVWIRE_MODEL");
  if (model == nullptr || *model == '\0') GTEST_SKIP() << "KVWIRE_MODEL not set";
  auto decode = StartNode(KVWIRE_DECODE_BIN, {"--capacity", "1"}, model);
  ASSERT_TRUE(decode.ok()) << decode.status();
  auto prefill = StartNode(KVWIRE_PREFILL_BIN, {}, model);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  Client client(*decode, *prefill);
  const std::vector<uint32_t> prompt = Prompt(80);
  auto grant = client.Reserve(NewRequestId(), 80, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = client.Prefill(*grant, prompt, 1.0f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  auto decoded = client.Decode(*grant, prefilled->first_token_id());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->first, LocalTokens(prompt, model));
}

// --gpu DEVICE when no device can serve it: what a node printed before it exited, and its exit
// code. Empty output and code -1 when it started serving instead (a usable device).
struct GpuStart {
  std::string output;
  int exit_code = -1;
};

GpuStart StartWithGpu(const std::string& binary) {
  // stderr (where a refusing node says why) joins stdout, which the test reads.
  const std::string command = absl::StrCat("exec '", binary, "' --listen 127.0.0.1:0 --model '",
                                           ModelPath(), "' --ucx-tls tcp --gpu 0 2>&1");
  auto child = transport::testing::ChildProcess::Spawn({"/bin/sh", "-c", command});
  EXPECT_TRUE(child.ok()) << child.status();
  GpuStart start;
  if (!child.ok()) return start;
  const Deadline deadline = Deadline::In(absl::Seconds(60));
  std::string output;
  for (absl::StatusOr<std::string> line = (*child)->ReadLine(deadline); line.ok();
       line = (*child)->ReadLine(deadline)) {
    if (absl::StartsWith(*line, "listening ")) {
      (*child)->Kill();
      return start;
    }
    absl::StrAppend(&output, *line, "\n");
  }
  absl::StatusOr<int> code = (*child)->Wait(deadline);
  EXPECT_TRUE(code.ok()) << code.status();
  start.output = output;
  start.exit_code = code.ok() ? *code : -2;
  return start;
}

// The reasons a node gives for not running on a device: a build without CUDA, or none usable.
bool SaysWhyNoDevice(const std::string& output) {
  return absl::StrContains(output, "this build has no CUDA") ||
         absl::StrContains(output, "no CUDA device");
}

// Without a usable device (or CUDA in the build) a --gpu node must not fall back silently: it
// exits with status 1 and names the reason. On a machine with a device this is skipped and
// NodesGpu.GpuNodesMatchTheLocalCpuRun covers the flag.
TEST(NodesGpu, WithoutADeviceEachNodeRefusesToStartAndSaysWhy) {
  for (const std::string binary : {KVWIRE_DECODE_BIN, KVWIRE_PREFILL_BIN}) {
    const GpuStart start = StartWithGpu(binary);
    if (start.exit_code == -1) GTEST_SKIP() << "a CUDA device is usable here";
    EXPECT_EQ(start.exit_code, 1) << binary << ":\n" << start.output;
    EXPECT_TRUE(SaysWhyNoDevice(start.output)) << binary << ":\n" << start.output;
  }
}

// With a device: both nodes run the model there. Budget 1 must give the local CPU run's greedy
// tokens wherever the CPU's choice is decisive (fp16 weights, fp32 accumulation: the argmax agrees
// only where the top two logits are further apart than the device's error, as
// tests/kernels_gpu/gpu_runner_test.cc asserts); at 0.2 the default method is compressed on the
// device (about a fifth of the raw bytes), so is a +critical method (W_o uploaded for it), a method
// the device compressor does not run (h2o) takes the host path, and a decode budget merges on the
// --gpu decode node's host mirror (mirror_step.h).
TEST(NodesGpu, GpuNodesMatchTheLocalCpuRun) {
  const GpuStart probe = StartWithGpu(KVWIRE_DECODE_BIN);
  if (probe.exit_code != -1) {
    ASSERT_TRUE(SaysWhyNoDevice(probe.output)) << probe.output;
    GTEST_SKIP() << "no usable CUDA device: " << probe.output;
  }
  auto decode = StartNode(KVWIRE_DECODE_BIN, {"--capacity", "4", "--gpu", "0"});
  ASSERT_TRUE(decode.ok()) << decode.status();
  auto prefill = StartNode(KVWIRE_PREFILL_BIN, {"--workers", "1", "--gpu", "0"});
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  Client client(*decode, *prefill);

  const std::vector<uint32_t> prompt = Prompt(60);
  auto grant = client.Reserve(NewRequestId(), 60, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  auto prefilled = client.Prefill(*grant, prompt, 1.0f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  auto decoded = client.Decode(*grant, prefilled->first_token_id());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectDeviceTokensMatchLocal(decoded->first, prompt);

  const std::vector<uint32_t> long_prompt = Prompt(400);
  for (const std::string& method :
       {std::string(compress::kDefaultMethod), std::string("snapkv+critical/adaptive/merge"),
        std::string("h2o/uniform/merge")}) {
    SCOPED_TRACE(method);
    grant = client.Reserve(NewRequestId(), 400, 0.2f);
    ASSERT_TRUE(grant.ok()) << grant.status();
    prefilled = client.Prefill(*grant, long_prompt, 0.2f, absl::Seconds(60), method);
    ASSERT_TRUE(prefilled.ok()) << prefilled.status();
    const double ratio = static_cast<double>(prefilled->stats().wire_bytes()) /
                         static_cast<double>(prefilled->stats().raw_kv_bytes());
    EXPECT_GT(ratio, 0.18);
    EXPECT_LT(ratio, 0.25);
    decoded = client.Decode(*grant, prefilled->first_token_id());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_FALSE(decoded->first.empty());
  }

  grant = client.Reserve(NewRequestId(), 60, 1.0f);
  ASSERT_TRUE(grant.ok()) << grant.status();
  prefilled = client.Prefill(*grant, prompt, 1.0f);
  ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  decoded = client.Decode(*grant, prefilled->first_token_id(), /*decode_kept_fraction=*/0.5f);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->first.empty());
}

}  // namespace
}  // namespace kvwire
