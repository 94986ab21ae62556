// Character-level behaviour of the tokenizer: UTF-8 decoding, Unicode classes, the GPT-2 byte
// alphabet and the pre-tokenizers.
#include "runtime/tokenizer_text.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::runtime::tokenizer_internal {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(absl::string_view text,
                               PreTokenizerKind kind = PreTokenizerKind::kGpt2) {
  std::vector<absl::string_view> pieces;
  PreTokenize(text, kind, &pieces);
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

std::vector<std::string> SplitDigits(absl::string_view text) {
  return Split(text, PreTokenizerKind::kGpt2IndividualDigits);
}

TEST(DecodeUtf8, DecodesEveryLength) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é € 😀
  const char32_t expected[] = {U'a', 0xE9, 0x20AC, 0x1F600};
  size_t pos = 0;
  for (char32_t cp : expected) {
    const Utf8Step step = DecodeUtf8(text, pos);
    ASSERT_EQ(step.result, Utf8Result::kComplete);
    EXPECT_EQ(step.codepoint, cp);
    pos += step.length;
  }
  EXPECT_EQ(pos, text.size());
}

TEST(DecodeUtf8, RejectsIllFormedSequences) {
  for (const std::string bad :
       {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "\xFF", "\xE2\x41\x41"}) {
    EXPECT_EQ(DecodeUtf8(bad, 0).result, Utf8Result::kInvalid) << absl::CEscape(bad);
  }
}

TEST(DecodeUtf8, ReportsTruncatedPrefix) {
  const Utf8Step step = DecodeUtf8("\xE2\x82", 0);
  EXPECT_EQ(step.result, Utf8Result::kTruncated);
  EXPECT_EQ(step.length, 2);
}

TEST(AppendUtf8, InvertsDecode) {
  for (char32_t cp : {0x41u, 0xE9u, 0x7FFu, 0x800u, 0x20ACu, 0xFFFDu, 0x10000u, 0x10FFFFu}) {
    std::string encoded;
    AppendUtf8(cp, &encoded);
    const Utf8Step step = DecodeUtf8(encoded, 0);
    EXPECT_EQ(step.result, Utf8Result::kComplete);
    EXPECT_EQ(step.codepoint, cp);
    EXPECT_EQ(static_cast<size_t>(step.length), encoded.size());
  }
}

TEST(ClassifyCodepoint, FollowsUnicodeCategories) {
  EXPECT_EQ(ClassifyCodepoint(U'A'), CharClass::kLetter);
  EXPECT_EQ(ClassifyCodepoint(0xE9), CharClass::kLetter);    // é
  EXPECT_EQ(ClassifyCodepoint(0x4E00), CharClass::kLetter);  // CJK ideograph
  EXPECT_EQ(ClassifyCodepoint(0x1C89), CharClass::kLetter);  // added in Unicode 16.0
  EXPECT_EQ(ClassifyCodepoint(U'7'), CharClass::kNumber);
  EXPECT_EQ(ClassifyCodepoint(0x0663), CharClass::kNumber);  // Arabic-Indic three (Nd)
  EXPECT_EQ(ClassifyCodepoint(0x00BD), CharClass::kNumber);  // ½ (No)
  EXPECT_EQ(ClassifyCodepoint(0x2167), CharClass::kNumber);  // Roman numeral eight (Nl)
  EXPECT_EQ(ClassifyCodepoint(U' '), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodepoint(0x3000), CharClass::kSpace);  // ideographic space
  EXPECT_EQ(ClassifyCodepoint(0x2028), CharClass::kSpace);  // line separator
  EXPECT_EQ(ClassifyCodepoint(0x1C), CharClass::kOther);    // not White_Space
  EXPECT_EQ(ClassifyCodepoint(U'!'), CharClass::kOther);
  EXPECT_EQ(ClassifyCodepoint(0x1F600), CharClass::kOther);  // emoji
  EXPECT_EQ(ClassifyCodepoint(0x0301), CharClass::kOther);   // combining mark (Mn)
}

TEST(ByteAlphabet, MapsEveryByteToADistinctCodepoint) {
  std::vector<bool> seen(0x200, false);
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = ByteToCodepoint(static_cast<uint8_t>(b));
    ASSERT_LT(cp, seen.size());
    EXPECT_FALSE(seen[cp]) << b;
    seen[cp] = true;
    EXPECT_EQ(CodepointToByte(cp), b);
  }
  EXPECT_EQ(ByteToCodepoint(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(ByteToCodepoint('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(ByteToCodepoint('a'), static_cast<char32_t>('a'));
  EXPECT_EQ(CodepointToByte(0x144), -1);
  EXPECT_EQ(CodepointToByte(0x65E5), -1);
}

TEST(PreTokenizerFromName, KnowsGpt2AndDigitVariants) {
  EXPECT_EQ(*PreTokenizerFromName("gpt2"), PreTokenizerKind::kGpt2);
  EXPECT_EQ(*PreTokenizerFromName("smollm"), PreTokenizerKind::kGpt2IndividualDigits);
  EXPECT_EQ(PreTokenizerFromName("llama-bpe").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PreTokenizerFromName("").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PreTokenize, AttachesOneLeadingSpaceToWords) {
  EXPECT_THAT(Split("Hello world, hi!"), ElementsAre("Hello", " world", ",", " hi", "!"));
}

TEST(PreTokenize, KeepsUnicodeLettersTogether) {
  EXPECT_THAT(Split("héllo wörld"), ElementsAre("héllo", " wörld"));
  EXPECT_THAT(Split("日本語テキスト привет"), ElementsAre("日本語テキスト", " привет"));
}

TEST(PreTokenize, SplitsContractionsCaseSensitively) {
  EXPECT_THAT(Split("don't we'll they're"), ElementsAre("don", "'t", " we", "'ll", " they", "'re"));
  EXPECT_THAT(Split("DON'T"), ElementsAre("DON", "'", "T"));
}

TEST(PreTokenize, GroupsPunctuationRuns) {
  EXPECT_THAT(Split("wow!!! ?? a"), ElementsAre("wow", "!!!", " ??", " a"));
  EXPECT_THAT(Split("x😀😀y"), ElementsAre("x", "😀😀", "y"));
}

TEST(PreTokenize, LeavesLastSpaceOfARunForTheNextWord) {
  EXPECT_THAT(Split("a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Split("a\n\n b"), ElementsAre("a", "\n\n", " b"));
  EXPECT_THAT(Split("a\nb"), ElementsAre("a", "\n", "b"));
  EXPECT_THAT(Split("a   "), ElementsAre("a", "   "));
  EXPECT_THAT(Split("a\xC2\xA0 b"), ElementsAre("a", "\xC2\xA0", " b"));  // NBSP is \s
}

TEST(PreTokenize, Gpt2KeepsNumberRuns) {
  EXPECT_THAT(Split("abc 12345x"), ElementsAre("abc", " 12345", "x"));
}

TEST(PreTokenize, IndividualDigitsSplitsEveryNumber) {
  EXPECT_THAT(SplitDigits("abc 1234x"), ElementsAre("abc", " ", "1", "2", "3", "4", "x"));
  EXPECT_THAT(SplitDigits("½٣²"), ElementsAre("½", "٣", "²"));
  // The pattern sees the text between digits on its own: a space before a digit ends its piece.
  EXPECT_THAT(SplitDigits("a  1"), ElementsAre("a", "  ", "1"));
}

TEST(PreTokenize, KeepsIllFormedBytesAsOtherCharacters) {
  EXPECT_THAT(Split("\xFF\xFE"
                    "ab \x80"),
              ElementsAre("\xFF\xFE", "ab", " \x80"));
}

TEST(PreTokenize, PiecesConcatenateToTheInput) {
  const std::string text = "  Mixed 42 text\t\twith ünïcödé, emoji 😀!\n\n\nand 'quotes' 3.14  ";
  for (PreTokenizerKind kind : {PreTokenizerKind::kGpt2, PreTokenizerKind::kGpt2IndividualDigits}) {
    std::string joined;
    for (const std::string& piece : Split(text, kind)) {
      EXPECT_FALSE(piece.empty());
      joined += piece;
    }
    EXPECT_EQ(joined, text);
  }
}

}  // namespace
}  // namespace kvwire::runtime::tokenizer_internal
