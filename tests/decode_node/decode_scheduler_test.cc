#include "decode_node/decode_scheduler.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "runtime/tiny_model.h"

namespace kvwire::decode {
namespace {

constexpr int kStop = 2;  // the tiny model's <|im_end|>

class DecodeSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto bytes = runtime::MakeTinyModel({.n_layers = 2});
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto gguf = runtime::GgufFile::FromBytes(*std::move(bytes));
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto model = runtime::Model::FromGguf(*std::move(gguf));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // The prompt's full cache and its greedy first token.
  GenerationRequest Request(int prompt_length, int max_tokens) {
    runtime::Runner runner(*model_, 1);
    std::vector<int32_t> prompt;
    for (int i = 0; i < prompt_length; ++i) prompt.push_back(3 + (i * 29 + 5) % 250);
    GenerationRequest request;
    auto logits = runner.Prefill(prompt, {}, &request.cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    request.first_token = runtime::ArgMax(*logits);
    request.max_tokens = max_tokens;
    request.stop_tokens = {kStop};
    return request;
  }

  // Greedy continuation in one thread, the same way the scheduler steps.
  std::vector<int32_t> Reference(GenerationRequest request) {
    runtime::Runner runner(*model_, 1);
    std::vector<int32_t> out;
    int32_t token = request.first_token;
    for (int generated = 1; generated < request.max_tokens; ++generated) {
      auto logits = runner.Decode(token, runtime::DecodePosition(request.cache, generated - 1),
                                  &request.cache);
      EXPECT_TRUE(logits.ok());
      token = runtime::ArgMax(*logits);
      if (token == kStop) break;
      out.push_back(token);
    }
    return out;
  }

  static absl::StatusOr<std::vector<int32_t>> Drain(Generation& generation) {
    std::vector<int32_t> tokens;
    while (true) {
      auto next = generation.Next(Deadline::In(absl::Seconds(30)));
      if (!next.ok()) return next.status();
      if (!next->has_value()) return tokens;
      tokens.push_back(**next);
    }
  }

  std::unique_ptr<runtime::Model> model_;
};

TEST_F(DecodeSchedulerTest, InterleavedRequestsEachMatchASoloRun) {
  DecodeScheduler scheduler(*model_, 1);
  std::vector<GenerationRequest> requests = {Request(20, 9), Request(33, 6), Request(7, 12)};
  std::vector<std::shared_ptr<Generation>> generations;
  for (const auto& r : requests) generations.push_back(scheduler.Submit(r));
  for (size_t i = 0; i < requests.size(); ++i) {
    auto tokens = Drain(*generations[i]);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(*tokens, Reference(requests[i])) << "request " << i;
    const std::string reason = generations[i]->finish_reason();
    EXPECT_TRUE(reason == "length" || reason == "stop") << reason;
  }
  EXPECT_EQ(scheduler.active(), 0u);
}

// A request whose step the runner refuses (here: its positions run past the context) ends with
// that error alone; the requests batched with it go on and match their solo runs.
TEST_F(DecodeSchedulerTest, ARefusedStepEndsOnlyItsOwnRequest) {
  DecodeScheduler scheduler(*model_, 1);
  GenerationRequest bad = Request(10, 50);
  bad.stop_tokens.clear();
  // Decode positions continue from original_length: the context (1024) ends after two steps.
  bad.cache.original_length = model_->config().context_length - 2;
  std::vector<GenerationRequest> good = {Request(20, 9), Request(7, 12)};
  auto bad_generation = scheduler.Submit(bad);
  std::vector<std::shared_ptr<Generation>> generations;
  for (const auto& r : good) generations.push_back(scheduler.Submit(r));
  const absl::StatusOr<std::vector<int32_t>> bad_tokens = Drain(*bad_generation);
  EXPECT_EQ(bad_tokens.status().code(), absl::StatusCode::kInvalidArgument) << bad_tokens.status();
  EXPECT_EQ(bad_generation->finish_reason(), "error");
  for (size_t i = 0; i < good.size(); ++i) {
    auto tokens = Drain(*generations[i]);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(*tokens, Reference(good[i])) << "request " << i;
  }
  EXPECT_EQ(scheduler.active(), 0u);
}

TEST_F(DecodeSchedulerTest, LengthLimitCountsTheFirstToken) {
  DecodeScheduler scheduler(*model_, 1);
  GenerationRequest request = Request(16, 4);
  request.stop_tokens.clear();  // only the length can end it
  auto generation = scheduler.Submit(request);
  auto tokens = Drain(*generation);
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->size(), 3u);  // first token (from prefill) + 3 = max_tokens 4
  EXPECT_EQ(generation->finish_reason(), "length");
}

TEST_F(DecodeSchedulerTest, CancelEndsTheGenerationWithCancelled) {
  DecodeScheduler scheduler(*model_, 1);
  GenerationRequest request = Request(16, 100000);
  request.stop_tokens.clear();
  auto generation = scheduler.Submit(request);
  generation->Cancel();
  absl::Status status = Drain(*generation).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
}

}  // namespace
}  // namespace kvwire::decode
