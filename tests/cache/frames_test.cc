#include "kvwire/cache/frames.h"

#include <gtest/gtest.h>

#include "tests/cache/cache_test_util.h"
#include "tests/format/test_util.h"

namespace kvwire::cache {
namespace {

using format::DType;
using Frames = std::vector<std::vector<uint8_t>>;

constexpr CacheShape kShape{4, 3, 16};

Frames EncodeAll(const KvCache& cache, DType dtype = DType::kF32, uint64_t rid = 42) {
  auto frames = EncodeCacheFrames(rid, ManifestFor(cache, 9, dtype, "test", 0.5f), cache);
  EXPECT_TRUE(frames.ok()) << frames.status();
  return *frames;
}

absl::Status FeedAll(CacheAssembler& a, const Frames& frames) {
  for (const auto& f : frames) {
    auto event = a.OnFrame(f);
    if (!event.ok()) return event.status();
  }
  return absl::OkStatus();
}

TEST(CacheFrames, F32StreamRoundTripsBitExact) {
  const KvCache cache = testing::RandomCache(kShape, 200, 3);
  CacheAssembler a;
  ASSERT_TRUE(FeedAll(a, EncodeAll(cache)).ok());
  ASSERT_TRUE(a.committed());
  auto got = a.TakeCache();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, cache);
}

TEST(CacheFrames, LayersMayArriveInAnyOrder) {
  const KvCache cache = testing::RandomCache(kShape, 64, 4);
  CacheStreamEncoder enc(7, ManifestFor(cache, 9, DType::kF16, "m", 0.5f));
  Frames frames{enc.ManifestFrame()};
  for (uint32_t l : {2u, 0u, 3u, 1u}) frames.push_back(*enc.LayerFrame(l, cache.layers[l]));
  frames.push_back(enc.CommitFrame());
  CacheAssembler a;
  ASSERT_TRUE(FeedAll(a, frames).ok());
  auto got = a.TakeCache();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->TotalEntries(), cache.TotalEntries());
  EXPECT_EQ(got->layers[2].heads[1].positions, cache.layers[2].heads[1].positions);
}

TEST(CacheFrames, Int8StreamKeepsTailAtFp16) {
  const KvCache cache = testing::RandomCache({2, 2, 32}, 300, 5, 1.0);
  format::Manifest m = ManifestFor(cache, 4, DType::kI8, "q", 1.0f);
  auto frames = EncodeCacheFrames(1, m, cache, EncodeOptions{.fp16_tail = 16});
  ASSERT_TRUE(frames.ok());
  CacheAssembler a;
  ASSERT_TRUE(FeedAll(a, *frames).ok());
  const KvCache got = *a.TakeCache();
  const auto& want = cache.layers[1].heads[1];
  const auto& have = got.layers[1].heads[1];
  const size_t d = 32, n = want.size();
  // The last 16 entries are fp16: relative error ~1e-3; the rest int8: a few percent at most.
  for (size_t i = (n - 16) * d; i < n * d; ++i) EXPECT_NEAR(have.keys[i], want.keys[i], 5e-3);
  double err = 0;
  for (size_t i = 0; i < (n - 16) * d; ++i) err = std::max<double>(err, std::fabs(have.keys[i] - want.keys[i]));
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 0.0);
}

TEST(CacheFrames, MissingLayerFailsAtCommitAndNothingIsHandedOut) {
  const KvCache cache = testing::RandomCache(kShape, 50, 6);
  Frames frames = EncodeAll(cache);
  frames.erase(frames.begin() + 2);  // Drop layer 1: the next frame has a sequence gap.
  CacheAssembler a;
  const absl::Status s = FeedAll(a, frames);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("sequence gap"), absl::string_view::npos) << s;
  EXPECT_TRUE(a.failed());
  EXPECT_EQ(a.TakeCache().status().code(), absl::StatusCode::kFailedPrecondition);
  // Later frames, even valid ones, are refused.
  EXPECT_FALSE(a.OnFrame(frames.back()).ok());
}

TEST(CacheFrames, CorruptedLayerFrameIsDataLossAtEveryTruncation) {
  const KvCache cache = testing::RandomCache({1, 1, 4}, 8, 7, 1.0);
  const Frames frames = EncodeAll(cache);
  const std::vector<uint8_t>& layer = frames[1];
  for (size_t n = 0; n < layer.size(); ++n) {
    CacheAssembler a;
    ASSERT_TRUE(a.OnFrame(frames[0]).ok());
    auto event = a.OnFrame(absl::MakeConstSpan(layer.data(), n));
    ASSERT_FALSE(event.ok()) << n;
    EXPECT_EQ(event.status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(CacheFrames, RejectsPositionsOutOfOrderOrRange) {
  for (int32_t bad_position : {5, 8, -1}) {  // repeat/decrease, == original length, negative
    KvCache cache = testing::RandomCache({1, 1, 4}, 8, 8, 1.0);
    cache.layers[0].heads[0].positions[6] = bad_position;
    cache.layers[0].heads[0].positions[7] = 7;
    if (bad_position == 8) cache.layers[0].heads[0].positions = {0, 1, 2, 3, 4, 5, 6, 8};
    CacheAssembler a;
    const absl::Status s = FeedAll(a, EncodeAll(cache));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << bad_position;
    EXPECT_NE(s.message().find("position"), absl::string_view::npos) << s;
  }
}

TEST(CacheFrames, AbortCarriesTheSendersCode) {
  const KvCache cache = testing::RandomCache(kShape, 20, 9);
  CacheStreamEncoder enc(5, ManifestFor(cache, 9, DType::kF16, "m", 0.5f));
  CacheAssembler a;
  ASSERT_TRUE(a.OnFrame(enc.ManifestFrame()).ok());
  ASSERT_TRUE(a.OnFrame(*enc.LayerFrame(0, cache.layers[0])).ok());
  auto event = a.OnFrame(enc.AbortFrame(absl::UnavailableError("prefill stopping")));
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(*event, CacheAssembler::Event::kAborted);
  EXPECT_EQ(a.abort_status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(a.abort_status().message().find("prefill stopping"), absl::string_view::npos);
  EXPECT_FALSE(a.TakeCache().ok());
}

TEST(CacheFrames, FramesFromAnotherRequestAreRejected) {
  const KvCache cache = testing::RandomCache(kShape, 20, 10);
  const Frames mine = EncodeAll(cache, DType::kF16, 1);
  const Frames theirs = EncodeAll(cache, DType::kF16, 2);
  CacheAssembler a;
  ASSERT_TRUE(a.OnFrame(mine[0]).ok());
  EXPECT_EQ(a.OnFrame(theirs[1]).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CacheFrames, EncoderRejectsLayerThatDoesNotFitManifest) {
  const KvCache cache = testing::RandomCache(kShape, 20, 11);
  CacheStreamEncoder enc(5, ManifestFor(cache, 9, DType::kF16, "m", 0.5f));
  EXPECT_EQ(enc.LayerFrame(4, cache.layers[0]).status().code(), absl::StatusCode::kInvalidArgument);
  LayerCache wrong = cache.layers[0];
  wrong.heads.pop_back();
  EXPECT_EQ(enc.LayerFrame(0, wrong).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CacheFrames, WireBytesTrackTheKeptFraction) {
  const KvCache full = testing::RandomCache({4, 3, 64}, 512, 12, 1.0);
  const KvCache fifth = testing::RandomCache({4, 3, 64}, 512, 12, 0.2);
  auto total = [](const Frames& frames) {
    size_t n = 0;
    for (const auto& f : frames) n += f.size();
    return n;
  };
  const double ratio = static_cast<double>(total(EncodeAll(fifth, DType::kF16))) /
                       static_cast<double>(total(EncodeAll(full, DType::kF16)));
  const double kept = static_cast<double>(fifth.TotalEntries()) / full.TotalEntries();
  // Metadata (positions, f32 votes, headers) stays within 2% of raw fp16 KV bytes.
  EXPECT_LT(ratio, kept * 1.07);
  EXPECT_GT(ratio, kept);
}

}  // namespace
}  // namespace kvwire::cache
