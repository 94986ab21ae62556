#include "kvwire/cache/kv_cache.h"

#include <gtest/gtest.h>

#include "tests/cache/cache_test_util.h"

namespace kvwire::cache {
namespace {

TEST(KvCache, EmptyHasShapeAndNoEntries) {
  const KvCache c = KvCache::Empty({4, 2, 8}, 100);
  EXPECT_EQ(c.layers.size(), 4u);
  EXPECT_EQ(c.layers[3].heads.size(), 2u);
  EXPECT_EQ(c.TotalEntries(), 0u);
  EXPECT_TRUE(c.Validate().ok());
}

TEST(KvCache, CountsEntriesAndFp16Bytes) {
  const KvCache c = testing::RandomCache({3, 2, 16}, 50, 1);
  size_t n = 0;
  for (const auto& l : c.layers) for (const auto& h : l.heads) n += h.size();
  EXPECT_EQ(c.TotalEntries(), n);
  EXPECT_EQ(c.Fp16KvBytes(), n * 2 * 16 * 2);
}

TEST(KvCache, ValidateNamesTheInconsistency) {
  KvCache c = testing::RandomCache({2, 2, 4}, 10, 2, 1.0);
  c.layers[1].heads[0].keys.pop_back();
  const absl::Status s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layer 1 head 0"), absl::string_view::npos) << s;
  c = KvCache::Empty({2, 2, 4}, 10);
  c.layers.pop_back();
  EXPECT_FALSE(c.Validate().ok());
  EXPECT_FALSE((CacheShape{0, 1, 1}).Validate().ok());
  EXPECT_FALSE((CacheShape{1, 1, 2000}).Validate().ok());
}

}  // namespace
}  // namespace kvwire::cache
