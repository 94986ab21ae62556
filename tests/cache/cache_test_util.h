// Builds random ragged caches for cache-module tests.
#ifndef KVWIRE_TESTS_CACHE_TEST_UTIL_H_
#define KVWIRE_TESTS_CACHE_TEST_UTIL_H_

#include <cmath>
#include <random>

#include "kvwire/cache/kv_cache.h"

namespace kvwire::cache::testing {

// Each head keeps a random increasing subset of [0, original_length) with random log-votes.
inline KvCache RandomCache(CacheShape shape, int32_t original_length, uint32_t seed,
                           double keep = 0.5) {
  KvCache cache = KvCache::Empty(shape, original_length);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::bernoulli_distribution take(keep);
  std::vector<float> k(shape.head_dim), v(shape.head_dim);
  for (auto& layer : cache.layers) {
    for (auto& head : layer.heads) {
      for (int32_t p = 0; p < original_length; ++p) {
        if (!take(rng)) continue;
        for (auto& x : k) x = normal(rng);
        for (auto& x : v) x = normal(rng);
        head.Append(p, std::log(1.0f + static_cast<float>(rng() % 3)), k.data(), v.data(),
                    shape.head_dim);
      }
    }
  }
  return cache;
}

}  // namespace kvwire::cache::testing

#endif  // KVWIRE_TESTS_CACHE_TEST_UTIL_H_
