// Checks on the reference model itself (label `model`): KVWIRE_MODEL must point at
// SmolLM2-135M-Instruct Q4_1 (scripts/fetch-model prints the path); skipped otherwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "runtime/runner.h"
#include "runtime/sampling.h"

namespace kvwire::runtime {
namespace {

class RealModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("KVWIRE_MODEL");
    if (path == nullptr || !std::ifstream(path).good()) return;
    auto model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "KVWIRE_MODEL is unset or missing";
  }
  static Model* model_;
};
Model* RealModelTest::model_ = nullptr;

TEST_F(RealModelTest, ConfigMatchesSmolLm2) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.hidden, 576);
  EXPECT_EQ(c.context_length, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_TRUE(c.tied_output);
  EXPECT_EQ(c.vocab_size, 49152);
}

TEST_F(RealModelTest, TokenizerMetadataIsReadable) {
  const GgufFile& g = model_->gguf();
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens")->size(), 49152u);
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.merges")->size(), 48900u);
  EXPECT_EQ(g.GetIntArray("tokenizer.ggml.token_type")->size(), 49152u);
  EXPECT_EQ(*g.GetU32("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(*g.GetString("tokenizer.ggml.pre"), "smollm");
  EXPECT_TRUE(g.GetString("tokenizer.chat_template").ok());
}

TEST_F(RealModelTest, PrefillMatchesPrefillShorterThenDecode) {
  // "The capital of France is Paris. The capital of Germany is"
  const std::vector<int32_t> prompt = {504,  3575, 282,  4649, 314,  7042,
                                       1673, 378,  3575, 282,  4521, 314};
  Runner runner(*model_, 2);
  cache::KvCache full, partial;
  auto want = runner.Prefill(prompt, {}, &full);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(
      runner.Prefill(absl::MakeConstSpan(prompt).first(prompt.size() - 1), {}, &partial).ok());
  auto got = runner.Decode(prompt.back(), DecodePosition(partial, 0), &partial);
  ASSERT_TRUE(got.ok()) << got.status();
  double diff = 0;
  for (size_t i = 0; i < want->size(); ++i)
    diff = std::max(diff, double(std::fabs((*want)[i] - (*got)[i])));
  EXPECT_LT(diff, 1e-3);
  EXPECT_EQ(ArgMax(*want), ArgMax(*got));
}

}  // namespace
}  // namespace kvwire::runtime
