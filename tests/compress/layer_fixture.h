// A random post-RoPE layer (keys, values, window queries, output projection) for compression
// tests, with the arrays owned alongside the LayerInput that points into them.
#ifndef KVWIRE_TESTS_COMPRESS_LAYER_FIXTURE_H_
#define KVWIRE_TESTS_COMPRESS_LAYER_FIXTURE_H_

#include <cmath>
#include <random>
#include <vector>

#include "kvwire/compress/scorer.h"

namespace kvwire::compress::testing {

struct RandomLayer {
  std::vector<float> keys, values, queries, wo;
  LayerInput input;

  RandomLayer(int64_t L, int n_heads, int n_kv_heads, int d, int64_t n_queries, uint32_t seed,
              int hidden = 24) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    keys.resize(L * n_kv_heads * d);
    values.resize(keys.size());
    queries.resize(n_queries * n_heads * d);
    wo.resize(static_cast<size_t>(hidden) * n_heads * d);
    // Keys share a common direction so attention is peaked, like real post-RoPE keys.
    for (auto& x : keys) x = normal(rng);
    for (int64_t i = 0; i < L; ++i) {
      for (int h = 0; h < n_kv_heads; ++h) keys[(i * n_kv_heads + h) * d] += 2.0f;
    }
    for (auto& x : values) x = normal(rng);
    for (auto& x : queries) x = normal(rng);
    for (auto& x : wo) x = normal(rng) * 0.1f;
    input.n_tokens = L;
    input.n_heads = n_heads;
    input.n_kv_heads = n_kv_heads;
    input.head_dim = d;
    input.scale = 1.0f / std::sqrt(static_cast<float>(d));
    input.keys = keys.data();
    input.values = values.data();
    input.queries = queries.data();
    input.n_queries = n_queries;
    input.wo = wo.data();
    input.hidden = hidden;
  }
  RandomLayer(const RandomLayer&) = delete;
};

}  // namespace kvwire::compress::testing

#endif  // KVWIRE_TESTS_COMPRESS_LAYER_FIXTURE_H_
