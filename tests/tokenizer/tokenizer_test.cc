// Tokenizer behaviour on a small hand-made vocabulary: all 256 byte tokens, a few control and
// added tokens, and merges chosen to exercise rank order, ties and multi-byte characters.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer_text.h"

namespace kvwire::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Vocabulary string (GPT-2 alphabet) of a raw byte string.
std::string Vocab(absl::string_view bytes) {
  std::string text;
  for (char c : bytes) {
    tokenizer_internal::AppendUtf8(tokenizer_internal::ByteToCodepoint(static_cast<uint8_t>(c)),
                                   &text);
  }
  return text;
}

// Merges as raw byte pairs, best rank first.
using MergeList = std::vector<std::pair<std::string, std::string>>;

const MergeList& DefaultMerges() {
  static const MergeList merges = {
      {" ", "t"}, {"h", "e"},    {" t", "he"}, {"l", "o"},       {"lo", "w"},
      {"e", "r"}, {"low", "er"}, {"b", "c"},   {"a", "b"},       {"a", "a"},
      {"1", "2"}, {"12", "3"},   {"!", "!"},   {"\xE2", "\x82"}, {"\xF0", "\x9F"},
  };
  return merges;
}

// Control tokens, one added token, every byte, then one token per merge result.
TokenizerSpec MakeSpec(const MergeList& merges = DefaultMerges()) {
  TokenizerSpec spec;
  spec.pre = "smollm";
  spec.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im", "<think>"};
  spec.token_types = {3, 3, 3, 3, 4};
  for (int b = 0; b < 256; ++b) {
    spec.tokens.push_back(Vocab(std::string(1, static_cast<char>(b))));
    spec.token_types.push_back(1);
  }
  for (const auto& [left, right] : merges) {
    spec.merges.push_back(Vocab(left) + " " + Vocab(right));
    spec.tokens.push_back(Vocab(left + right));
    spec.token_types.push_back(1);
  }
  spec.bos_id = 0;
  spec.eos_id = 2;
  spec.pad_id = 2;
  spec.chat_template =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  return spec;
}

std::unique_ptr<Tokenizer> MakeTokenizer(TokenizerSpec spec = MakeSpec()) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(std::move(spec));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// The bytes of each id, so expectations read as text.
std::vector<std::string> Pieces(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.emplace_back(tokenizer.TokenBytes(id));
  return pieces;
}

class TokenizerTest : public ::testing::Test {
 protected:
  std::vector<std::string> EncodePieces(absl::string_view text, bool parse_special = false) {
    return Pieces(*tokenizer_, tokenizer_->Encode(text, {.parse_special = parse_special}));
  }
  std::string RoundTrip(absl::string_view text, bool parse_special = false) {
    absl::StatusOr<std::string> decoded =
        tokenizer_->Decode(tokenizer_->Encode(text, {.parse_special = parse_special}));
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.value_or("");
  }

  std::unique_ptr<Tokenizer> tokenizer_ = MakeTokenizer();
};

TEST_F(TokenizerTest, MergesChainIntoWholeWords) {
  EXPECT_THAT(EncodePieces("lower the"), ElementsAre("lower", " the"));
}

TEST_F(TokenizerTest, LowerRankMergeWinsOverEarlierPosition) {
  // "b c" outranks "a b", so "abc" becomes a|bc even though "ab" comes first in the text.
  EXPECT_THAT(EncodePieces("abc"), ElementsAre("a", "bc"));
  MergeList swapped = {{"a", "b"}, {"b", "c"}};
  std::unique_ptr<Tokenizer> other = MakeTokenizer(MakeSpec(swapped));
  ASSERT_NE(other, nullptr);
  EXPECT_THAT(Pieces(*other, other->Encode("abc")), ElementsAre("ab", "c"));
}

TEST_F(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  EXPECT_THAT(EncodePieces("aaa"), ElementsAre("aa", "a"));
  EXPECT_THAT(EncodePieces("aaaa"), ElementsAre("aa", "aa"));
}

TEST_F(TokenizerTest, EveryByteHasAToken) {
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) {
    const std::string byte(1, static_cast<char>(b));
    all_bytes += byte;
    const std::vector<int32_t> ids = tokenizer_->Encode(byte);
    ASSERT_EQ(ids.size(), 1u) << b;
    EXPECT_EQ(ids[0], tokenizer_->FindToken(Vocab(byte))) << b;
    EXPECT_EQ(tokenizer_->TokenBytes(ids[0]), byte);
  }
  EXPECT_EQ(RoundTrip(all_bytes), all_bytes);
}

TEST(TokenizerMissingBytes, DropsBytesWithoutATokenAndMergesAcrossThem) {
  TokenizerSpec spec = MakeSpec();
  const auto it = std::find(spec.tokens.begin(), spec.tokens.end(), Vocab("\x04"));
  ASSERT_NE(it, spec.tokens.end());
  *it = "<unused>";
  spec.token_types[it - spec.tokens.begin()] = 5;
  std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer(std::move(spec));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Pieces(*tokenizer, tokenizer->Encode("a\x04z")), ElementsAre("a", "z"));
  EXPECT_THAT(Pieces(*tokenizer, tokenizer->Encode("!\x04!")), ElementsAre("!!"));
}

TEST_F(TokenizerTest, SplitsDigitsIndividually) {
  // "1 2" and "12 3" are merges, but the smollm pre-tokenizer never lets digits meet.
  EXPECT_THAT(EncodePieces("x123"), ElementsAre("x", "1", "2", "3"));
  TokenizerSpec spec = MakeSpec();
  spec.pre = "gpt2";
  std::unique_ptr<Tokenizer> gpt2 = MakeTokenizer(std::move(spec));
  ASSERT_NE(gpt2, nullptr);
  EXPECT_THAT(Pieces(*gpt2, gpt2->Encode("x123")), ElementsAre("x", "123"));
}

TEST_F(TokenizerTest, MultiByteCharactersUseMergedByteTokens) {
  EXPECT_THAT(EncodePieces("€"), ElementsAre("\xE2\x82", "\xAC"));
  EXPECT_THAT(EncodePieces("😀"), ElementsAre("\xF0\x9F", "\x98", "\x80"));
}

TEST_F(TokenizerTest, ControlTokensMatchOnlyWhenParsingSpecial) {
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  const std::vector<int32_t> ids = tokenizer_->Encode(text, {.parse_special = true});
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), tokenizer_->im_start_id());
  EXPECT_EQ(ids.back(), tokenizer_->im_end_id());
  for (int32_t id : tokenizer_->Encode(text)) {
    EXPECT_NE(tokenizer_->token_type(id), TokenType::kControl) << id;
  }
  EXPECT_EQ(RoundTrip(text, true), text);
  EXPECT_EQ(RoundTrip(text, false), text);
}

TEST_F(TokenizerTest, LongestSpecialTokenWins) {
  EXPECT_THAT(tokenizer_->Encode("<|im_start|><|im", {.parse_special = true}),
              ElementsAre(tokenizer_->im_start_id(), tokenizer_->FindToken("<|im")));
}

TEST_F(TokenizerTest, AddedTokensAlwaysMatch) {
  const int32_t think = tokenizer_->FindToken("<think>");
  EXPECT_THAT(tokenizer_->Encode("<think>"), ElementsAre(think));
  EXPECT_THAT(EncodePieces("a<think>b"), ElementsAre("a", "<think>", "b"));
}

TEST_F(TokenizerTest, AddsBosOnRequest) {
  const std::vector<int32_t> ids = tokenizer_->Encode("the", {.add_bos = true});
  ASSERT_EQ(ids.size(), 3u);  // bos, "t", "he": " t" needs the space
  EXPECT_EQ(ids[0], tokenizer_->bos_id());
}

TEST_F(TokenizerTest, DecodeInvertsEncode) {
  for (const std::string text :
       {"", "lower the lower", "  spaces   and\ttabs\n\n", "ünïcödé 😀 €100", "\xFF\xC0 bad"}) {
    EXPECT_EQ(RoundTrip(text), text) << absl::CEscape(text);
  }
}

TEST_F(TokenizerTest, CachedEncodingMatchesFirstEncoding) {
  const std::vector<int32_t> first = tokenizer_->Encode("lower the lower abc");
  EXPECT_EQ(tokenizer_->Encode("lower the lower abc"), first);
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  const std::string text = "lower the abc aaa 123 €😀 <think> lower";
  const std::vector<int32_t> expected = tokenizer_->Encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) result = tokenizer_->Encode(text + std::to_string(i % 7));
      result = tokenizer_->Encode(text);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST_F(TokenizerTest, DecodeRejectsOutOfRangeIds) {
  const absl::StatusOr<std::string> decoded = tokenizer_->Decode({0, tokenizer_->vocab_size()});
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("ids[1]"));
  EXPECT_EQ(tokenizer_->Decode({-1}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenizerTest, ExposesSpecialIds) {
  EXPECT_EQ(tokenizer_->TokenText(tokenizer_->bos_id()), "<|endoftext|>");
  EXPECT_EQ(tokenizer_->TokenText(tokenizer_->eos_id()), "<|im_end|>");
  EXPECT_EQ(tokenizer_->TokenText(tokenizer_->im_start_id()), "<|im_start|>");
  EXPECT_EQ(tokenizer_->pad_id(), tokenizer_->eos_id());
}

TEST_F(TokenizerTest, AppliesChatTemplate) {
  const absl::StatusOr<std::string> text =
      tokenizer_->ApplyChatTemplate({{"user", "hi"}}, /*add_generation_prompt=*/true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(TokenizerChatTemplate, UnknownTemplateFailsOnlyWhenApplied) {
  TokenizerSpec spec = MakeSpec();
  spec.chat_template =
      "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }}{% endfor %}";
  std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer(std::move(spec));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->ApplyChatTemplate({{"user", "hi"}}, true).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Streaming decode.

TEST_F(TokenizerTest, StreamHoldsPartialCharacters) {
  StreamDecoder stream(*tokenizer_);
  const std::vector<int32_t> ids = tokenizer_->Encode("€😀");  // E2 82 | AC | F0 9F | 98 | 80
  ASSERT_EQ(ids.size(), 5u);
  std::vector<std::string> out;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> chunk = stream.Push(id);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    out.push_back(*chunk);
  }
  EXPECT_THAT(out, ElementsAre("", "€", "", "", "😀"));
  EXPECT_EQ(stream.pending_bytes(), 0u);
  EXPECT_EQ(stream.Finish(), "");
}

TEST_F(TokenizerTest, StreamReassemblesEveryCharacterOfEncodedText) {
  const std::string text = "Zoë says €5 for 😀😀, ok?\n日本 <think> done";
  StreamDecoder stream(*tokenizer_);
  std::string joined;
  for (int32_t id : tokenizer_->Encode(text)) {
    absl::StatusOr<std::string> chunk = stream.Push(id);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    // Every chunk stands alone as well-formed UTF-8.
    for (size_t pos = 0; pos < chunk->size();) {
      const tokenizer_internal::Utf8Step step = tokenizer_internal::DecodeUtf8(*chunk, pos);
      ASSERT_EQ(step.result, tokenizer_internal::Utf8Result::kComplete) << absl::CEscape(*chunk);
      pos += step.length;
    }
    joined += *chunk;
  }
  joined += stream.Finish();
  EXPECT_EQ(joined, text);
}

TEST_F(TokenizerTest, StreamReplacesIllFormedBytes) {
  StreamDecoder stream(*tokenizer_);
  EXPECT_EQ(*stream.Push(tokenizer_->FindToken(Vocab("\xFF"))), "\xEF\xBF\xBD");
  EXPECT_EQ(*stream.Push(tokenizer_->FindToken(Vocab("\xE2\x82"))), "");
  EXPECT_EQ(stream.pending_bytes(), 2u);
  EXPECT_EQ(stream.Finish(), "\xEF\xBF\xBD");  // the truncated euro sign
  EXPECT_EQ(stream.pending_bytes(), 0u);
}

TEST_F(TokenizerTest, StreamRejectsOutOfRangeIdWithoutLosingState) {
  StreamDecoder stream(*tokenizer_);
  ASSERT_TRUE(stream.Push(tokenizer_->FindToken(Vocab("\xE2\x82"))).ok());
  EXPECT_EQ(stream.Push(tokenizer_->vocab_size()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*stream.Push(tokenizer_->FindToken(Vocab("\xAC"))), "€");
}

// Spec validation.

absl::Status CreateStatus(TokenizerSpec spec) {
  return Tokenizer::Create(std::move(spec)).status();
}

void ExpectRejected(TokenizerSpec spec, absl::StatusCode code, absl::string_view fragment) {
  const absl::Status status = CreateStatus(std::move(spec));
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(fragment)));
}

TEST(TokenizerSpecValidation, AcceptsTheTestSpec) { EXPECT_TRUE(CreateStatus(MakeSpec()).ok()); }

TEST(TokenizerSpecValidation, RejectsOutOfRangeSpecialIds) {
  TokenizerSpec spec = MakeSpec();
  spec.bos_id = static_cast<int32_t>(spec.tokens.size());
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "bos_id");
  spec = MakeSpec();
  spec.eos_id = -7;
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "eos_id -7");
}

TEST(TokenizerSpecValidation, RejectsMalformedMerges) {
  for (const std::string bad : {"ab", "a  b", " a", "a b c", "a "}) {
    TokenizerSpec spec = MakeSpec();
    spec.merges.push_back(bad);
    ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "not two tokens");
  }
}

TEST(TokenizerSpecValidation, RejectsMergesOutsideTheVocabulary) {
  TokenizerSpec spec = MakeSpec();
  spec.merges.insert(spec.merges.begin(), "x y");  // "xy" is not a token
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "merge 0 \"x y\": \"xy\"");
  spec = MakeSpec();
  spec.merges.push_back("zz a");
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "\"zz\" is not in the vocabulary");
}

TokenizerSpec WithExtraNormalToken(std::string text) {
  TokenizerSpec spec = MakeSpec();
  spec.tokens.push_back(std::move(text));
  spec.token_types.push_back(1);
  return spec;
}

TEST(TokenizerSpecValidation, RejectsDuplicateTokens) {
  ExpectRejected(WithExtraNormalToken("a"), absl::StatusCode::kInvalidArgument, "duplicates token");
}

TEST(TokenizerSpecValidation, RejectsBadTokenTypes) {
  TokenizerSpec spec = MakeSpec();
  spec.token_types.pop_back();
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "token_types has");
  spec = MakeSpec();
  spec.token_types[7] = 9;
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "token_types[7] = 9");
}

TEST(TokenizerSpecValidation, RejectsNormalTokensOutsideTheByteAlphabet) {
  ExpectRejected(WithExtraNormalToken("日本"), absl::StatusCode::kInvalidArgument,
                 "outside the byte-level alphabet");
}

TEST(TokenizerSpecValidation, RejectsEmptyVocabulary) {
  TokenizerSpec spec;
  spec.pre = "gpt2";
  ExpectRejected(spec, absl::StatusCode::kInvalidArgument, "empty");
}

TEST(TokenizerSpecValidation, RejectsUnsupportedModelAndPreTokenizer) {
  TokenizerSpec spec = MakeSpec();
  spec.model = "llama";
  ExpectRejected(spec, absl::StatusCode::kFailedPrecondition, "tokenizer model \"llama\"");
  spec = MakeSpec();
  spec.pre = "qwen2";
  ExpectRejected(spec, absl::StatusCode::kFailedPrecondition, "pre-tokenizer \"qwen2\"");
}

}  // namespace
}  // namespace kvwire::runtime
