#include "kvwire/format/stream.h"

#include <gtest/gtest.h>

namespace kvwire::format {
namespace {

Manifest TwoLayerManifest() {
  Manifest m;
  m.n_layers = 2;
  m.n_kv_heads = 2;
  m.n_query_heads = 4;
  m.head_dim = 8;
  m.original_length = 10;
  m.entry_budget = 40;
  return m;
}

FrameHeader Header(FrameType type, uint32_t seq, uint64_t payload_hash = 0, uint64_t rid = 9) {
  FrameHeader h;
  h.type = type;
  h.sequence = seq;
  h.request_id = rid;
  h.payload_hash = payload_hash;
  return h;
}

LayerLayout Layout(uint32_t layer, std::vector<uint32_t> counts = {4, 6}) {
  LayerLayout l;
  l.layer = layer;
  l.head_dim = 8;
  l.counts = counts;
  l.tails.assign(counts.size(), 0);
  return l;
}

Commit CommitFor(std::initializer_list<uint64_t> hashes, uint64_t entries) {
  StreamDigest d;
  for (uint64_t h : hashes) d.Add(h);
  return Commit{static_cast<uint32_t>(hashes.size()), entries, d.Value()};
}

TEST(StreamChecker, AcceptsLayersInAnyOrder) {
  StreamChecker c;
  ASSERT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  ASSERT_TRUE(c.OnLayer(Header(FrameType::kLayer, 1, 111), Layout(1)).ok());
  ASSERT_TRUE(c.OnLayer(Header(FrameType::kLayer, 2, 222), Layout(0)).ok());
  ASSERT_TRUE(c.OnCommit(Header(FrameType::kCommit, 3), CommitFor({111, 222}, 20)).ok());
  EXPECT_EQ(c.state(), StreamChecker::State::kCommitted);
  EXPECT_EQ(c.entries_received(), 20u);
}

TEST(StreamChecker, RejectsSequenceGap) {
  StreamChecker c;
  ASSERT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  const absl::Status s = c.OnLayer(Header(FrameType::kLayer, 2), Layout(0));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("sequence gap"), absl::string_view::npos);
  // A failed stream stays failed.
  EXPECT_FALSE(c.OnLayer(Header(FrameType::kLayer, 1), Layout(0)).ok());
}

TEST(StreamChecker, RejectsDuplicateLayerAndOutOfRangeIndex) {
  StreamChecker c;
  ASSERT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  ASSERT_TRUE(c.OnLayer(Header(FrameType::kLayer, 1), Layout(0)).ok());
  EXPECT_EQ(c.OnLayer(Header(FrameType::kLayer, 2), Layout(0)).code(), absl::StatusCode::kDataLoss);
  StreamChecker d;
  ASSERT_TRUE(d.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  EXPECT_EQ(d.OnLayer(Header(FrameType::kLayer, 1), Layout(2)).code(), absl::StatusCode::kDataLoss);
}

TEST(StreamChecker, RejectsFramesBeforeManifestAndForeignRequest) {
  StreamChecker c;
  EXPECT_EQ(c.OnLayer(Header(FrameType::kLayer, 0), Layout(0)).code(), absl::StatusCode::kDataLoss);
  StreamChecker d;
  ASSERT_TRUE(d.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  EXPECT_EQ(d.OnLayer(Header(FrameType::kLayer, 1, 0, /*rid=*/10), Layout(0)).code(),
            absl::StatusCode::kDataLoss);
}

TEST(StreamChecker, RejectsShapeMismatchAndOverBudget) {
  StreamChecker c;
  ASSERT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  EXPECT_EQ(c.OnLayer(Header(FrameType::kLayer, 1), Layout(0, {1, 1, 1})).code(),
            absl::StatusCode::kDataLoss);
  StreamChecker d;
  ASSERT_TRUE(d.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  EXPECT_EQ(d.OnLayer(Header(FrameType::kLayer, 1), Layout(0, {11, 0})).code(),
            absl::StatusCode::kDataLoss);  // More entries than prompt tokens.
  StreamChecker e;
  Manifest small = TwoLayerManifest();
  small.entry_budget = 15;
  ASSERT_TRUE(e.OnManifest(Header(FrameType::kManifest, 0), small).ok());
  ASSERT_TRUE(e.OnLayer(Header(FrameType::kLayer, 1), Layout(0)).ok());
  EXPECT_EQ(e.OnLayer(Header(FrameType::kLayer, 2), Layout(1)).code(), absl::StatusCode::kDataLoss);
}

TEST(StreamChecker, CommitMustMatchWhatArrived) {
  auto run = [](Commit commit, int layers) {
    StreamChecker c;
    EXPECT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
    for (int l = 0; l < layers; ++l) {
      EXPECT_TRUE(c.OnLayer(Header(FrameType::kLayer, l + 1, 100 + l), Layout(l)).ok());
    }
    return c.OnCommit(Header(FrameType::kCommit, layers + 1), commit);
  };
  EXPECT_TRUE(run(CommitFor({100, 101}, 20), 2).ok());
  EXPECT_EQ(run(CommitFor({100}, 10), 1).code(), absl::StatusCode::kDataLoss);  // Missing layer.
  EXPECT_EQ(run(CommitFor({100, 101}, 21), 2).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(run(CommitFor({101, 100}, 20), 2).code(), absl::StatusCode::kDataLoss);  // Digest.
}

TEST(StreamChecker, NothingAfterCommitOrAbort) {
  StreamChecker c;
  ASSERT_TRUE(c.OnManifest(Header(FrameType::kManifest, 0), TwoLayerManifest()).ok());
  ASSERT_TRUE(c.OnAbort(Header(FrameType::kAbort, 1)).ok());
  EXPECT_EQ(c.state(), StreamChecker::State::kAborted);
  EXPECT_EQ(c.OnLayer(Header(FrameType::kLayer, 2), Layout(0)).code(), absl::StatusCode::kDataLoss);
  StreamChecker d;
  EXPECT_EQ(d.OnAbort(Header(FrameType::kAbort, 0)).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvwire::format
