#include "runtime/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "runtime/gguf_writer.h"
#include "runtime/runner.h"
#include "runtime/tiny_model.h"

namespace kvwire::runtime {
namespace {

using kernels::QuantType;

// A small file whose last tensor ends exactly at end of file (32 bytes, no padding), so every
// strict truncation removes bytes the reader needs.
std::string SmallFile() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetU32("answer", 42);
  w.SetF32("pi", 3.25f);
  w.SetBool("flag", true);
  w.SetStringArray("words", {"a", "bc", ""});
  w.SetI32Array("ints", {-1, 7});
  w.SetF32Array("floats", {0.5f});
  std::vector<float> m(64 * 2), v(8);
  for (size_t i = 0; i < m.size(); ++i) m[i] = 0.01f * i;
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i);
  EXPECT_TRUE(w.AddTensor("m", {64, 2}, QuantType::kQ8_0, m.data()).ok());
  EXPECT_TRUE(w.AddTensor("v", {8}, QuantType::kF32, v.data()).ok());
  return w.Serialize();
}

TEST(GgufReader, ReadsBackWhatTheWriterWrote) {
  auto file = GgufFile::FromBytes(SmallFile());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetU32("answer"), 42u);
  EXPECT_EQ(*f.GetF32("pi"), 3.25f);
  EXPECT_TRUE(*f.GetBool("flag"));
  EXPECT_EQ(*f.GetStringArray("words"), (std::vector<absl::string_view>{"a", "bc", ""}));
  EXPECT_EQ(*f.GetIntArray("ints"), (std::vector<int64_t>{-1, 7}));
  EXPECT_EQ(*f.GetFloatArray("floats"), (std::vector<float>{0.5f}));
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensor* v = f.FindTensor("v");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->dims, (std::vector<int64_t>{8}));
  EXPECT_EQ(static_cast<const float*>(v->data)[7], 7.0f);
  EXPECT_EQ(f.FindTensor("m")->rows(), 2);
  EXPECT_EQ(f.FindTensor("m")->n_bytes, 2 * 68);
}

TEST(GgufReader, TypedAccessorsRejectWrongTypesAndMissingKeys) {
  auto file = GgufFile::FromBytes(SmallFile());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->GetU32("general.architecture").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*file)->GetString("answer").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*file)->GetStringArray("ints").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*file)->GetU32("ints.missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*file)->GetU32("ints").status().code(), absl::StatusCode::kInvalidArgument);
}

absl::StatusCode CodeOf(std::string bytes) {
  return GgufFile::FromBytes(std::move(bytes)).status().code();
}

TEST(GgufReader, RejectsBadMagic) {
  std::string bytes = SmallFile();
  bytes[0] = 'X';
  EXPECT_EQ(CodeOf(bytes), absl::StatusCode::kDataLoss);
}

TEST(GgufReader, RejectsUnsupportedVersion) {
  std::string bytes = SmallFile();
  bytes[4] = 1;
  EXPECT_EQ(CodeOf(bytes), absl::StatusCode::kFailedPrecondition);
  bytes[4] = 9;
  EXPECT_EQ(CodeOf(bytes), absl::StatusCode::kFailedPrecondition);
}

TEST(GgufReader, RejectsTruncationAtEveryOffset) {
  const std::string bytes = SmallFile();
  for (size_t n = 0; n < bytes.size(); ++n) {
    ASSERT_EQ(CodeOf(bytes.substr(0, n)), absl::StatusCode::kDataLoss) << "truncated to " << n;
  }
}

TEST(GgufReader, RejectsTensorDataPastEndOfFile) {
  GgufWriter w;
  w.AddRawTensor("t", {32, 4}, static_cast<uint32_t>(QuantType::kF32), std::string(64, '\0'));
  auto status = GgufFile::FromBytes(w.Serialize()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("past the end"), absl::string_view::npos) << status;
}

TEST(GgufReader, RejectsUnknownAndUnsupportedTensorTypes) {
  for (auto [type_id, code] : {std::pair{99u, absl::StatusCode::kDataLoss},
                               std::pair{16u, absl::StatusCode::kFailedPrecondition}}) {
    GgufWriter w;
    w.AddRawTensor("t", {256}, type_id, std::string(256, '\0'));
    EXPECT_EQ(CodeOf(w.Serialize()), code) << type_id;
  }
}

TEST(GgufReader, RejectsRowsThatDoNotFillBlocks) {
  GgufWriter w;
  w.AddRawTensor("t", {33}, static_cast<uint32_t>(QuantType::kQ4_0), std::string(64, '\0'));
  EXPECT_EQ(CodeOf(w.Serialize()), absl::StatusCode::kDataLoss);
}

// Hand-assembled headers for fields the writer always gets right.
struct Raw {
  std::string b;
  template <typename T>
  Raw& Put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Raw& Str(absl::string_view s) {
    Put<uint64_t>(s.size());
    b.append(s.data(), s.size());
    return *this;
  }
  static Raw Header(uint64_t n_tensors, uint64_t n_kv) {
    Raw r;
    return r.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put(n_tensors).Put(n_kv);
  }
};

TEST(GgufReader, RejectsAbsurdArrayLength) {
  Raw r = Raw::Header(0, 1);
  r.Str("tokenizer.ggml.tokens").Put<uint32_t>(9).Put<uint32_t>(8).Put<uint64_t>(1ull << 61);
  r.Str("x");
  EXPECT_EQ(CodeOf(r.b), absl::StatusCode::kDataLoss);
  Raw ints = Raw::Header(0, 1);
  ints.Str("ints").Put<uint32_t>(9).Put<uint32_t>(5).Put<uint64_t>(~0ull / 2).Put<int32_t>(1);
  EXPECT_EQ(CodeOf(ints.b), absl::StatusCode::kDataLoss);
}

TEST(GgufReader, RejectsAbsurdCountsAndStringLengths) {
  EXPECT_EQ(CodeOf(Raw::Header(1ull << 60, 0).b), absl::StatusCode::kDataLoss);
  EXPECT_EQ(CodeOf(Raw::Header(0, ~0ull).b), absl::StatusCode::kDataLoss);
  Raw r = Raw::Header(0, 1);
  r.Put<uint64_t>(~0ull).Put<uint32_t>(4);
  EXPECT_EQ(CodeOf(r.b), absl::StatusCode::kDataLoss);
}

TEST(GgufReader, RejectsMisalignedTensorOffsetAndBadRank) {
  Raw r = Raw::Header(1, 0);
  r.Str("t").Put<uint32_t>(1).Put<uint64_t>(8).Put<uint32_t>(0).Put<uint64_t>(4);
  r.b.append(128, '\0');
  EXPECT_EQ(CodeOf(r.b), absl::StatusCode::kDataLoss);
  Raw rank = Raw::Header(1, 0);
  rank.Str("t").Put<uint32_t>(7);
  rank.b.append(128, '\0');
  EXPECT_EQ(CodeOf(rank.b), absl::StatusCode::kDataLoss);
}

TEST(GgufReader, RejectsDuplicateKeys) {
  GgufWriter w;
  w.SetU32("k", 1);
  w.SetU32("k", 2);
  EXPECT_EQ(CodeOf(w.Serialize()), absl::StatusCode::kDataLoss);
}

TEST(GgufReader, SurvivesRandomByteFlips) {
  TinyModelOptions o;
  o.n_layers = 1;
  auto model = MakeTinyModel(o);
  ASSERT_TRUE(model.ok());
  // Flips inside the metadata and tensor infos, where every byte is structure.
  const size_t header_bytes = 24000;
  std::mt19937 rng(9);
  int rejected = 0;
  for (int i = 0; i < 200; ++i) {
    std::string bytes = *model;
    for (int k = 0; k < 4; ++k) bytes[rng() % header_bytes] ^= static_cast<char>(1 + rng() % 255);
    auto gguf = GgufFile::FromBytes(std::move(bytes));
    if (!gguf.ok()) {
      ++rejected;
      continue;
    }
    // Whatever the loader accepts must also run without crashing.
    auto loaded = Model::FromGguf(*std::move(gguf));
    if (!loaded.ok()) continue;
    Runner runner(**loaded, 1);
    cache::KvCache cache;
    const std::vector<int32_t> prompt = {1, 2, 3};
    (void)runner.Prefill(prompt, {}, &cache).status();
  }
  EXPECT_GT(rejected, 0);
}

TEST(GgufReader, OpenReportsMissingFile) {
  EXPECT_EQ(GgufFile::Open("/nonexistent/kvwire/model.gguf").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvwire::runtime
