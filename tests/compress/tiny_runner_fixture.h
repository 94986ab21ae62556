// A tiny random-weight model (runtime/tiny_model.h) loaded for the tests that run the model
// while compressing (reconstruction scores, the compressing prefill).
#ifndef KVWIRE_TESTS_COMPRESS_TINY_RUNNER_FIXTURE_H_
#define KVWIRE_TESTS_COMPRESS_TINY_RUNNER_FIXTURE_H_

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "runtime/model.h"
#include "runtime/tiny_model.h"

namespace kvwire::compress::testing {

inline std::unique_ptr<runtime::Model> LoadTinyModel(const runtime::TinyModelOptions& o) {
  auto bytes = runtime::MakeTinyModel(o);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return nullptr;
  auto gguf = runtime::GgufFile::FromBytes(*std::move(bytes));
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  auto model = runtime::Model::FromGguf(*std::move(gguf));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

// n byte tokens of the tiny vocabulary in a fixed scrambled order.
inline std::vector<int32_t> ByteTokens(int n, int stride) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * stride + 7) % 256);
  return p;
}

}  // namespace kvwire::compress::testing

#endif  // KVWIRE_TESTS_COMPRESS_TINY_RUNNER_FIXTURE_H_
