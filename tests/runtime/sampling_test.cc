#include "runtime/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace kvwire::runtime {
namespace {

TEST(Sampler, GreedyPicksTheLargestLogitLowestIndexOnTies) {
  Sampler s({});
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{5.0f}), 0);
}

TEST(Sampler, TinyTopPIsGreedy) {
  Sampler s({.temperature = 5.0f, .top_p = 1e-6f, .seed = 3});
  for (int i = 0; i < 50; ++i) ASSERT_EQ(s.Sample(std::vector<float>{0.0f, 0.5f, 0.4f}), 1);
}

TEST(Sampler, SameSeedSameDrawsAndFrequenciesFollowSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  Sampler a({.temperature = 1.0f, .seed = 42}), b({.temperature = 1.0f, .seed = 42});
  int ones = 0;
  for (int i = 0; i < 4000; ++i) {
    const int32_t x = a.Sample(logits);
    ASSERT_EQ(x, b.Sample(logits));
    ones += x;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

TEST(Sampler, TopPDropsTheTail) {
  // p = {0.5, 0.3, 0.2}: top_p 0.7 keeps the first two only.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler s({.temperature = 1.0f, .top_p = 0.7f, .seed = 1});
  for (int i = 0; i < 2000; ++i) ASSERT_NE(s.Sample(logits), 2);
}

}  // namespace
}  // namespace kvwire::runtime
