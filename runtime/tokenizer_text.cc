#include "runtime/tokenizer_text.h"

#include <algorithm>
#include <array>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvwire::runtime::tokenizer_internal {
namespace {

struct CodepointRange {
  char32_t first;
  char32_t last;
};

#include "runtime/tokenizer_unicode_tables.inc"

template <size_t N>
bool InRanges(const CodepointRange (&ranges)[N], char32_t cp) {
  const CodepointRange* it = std::upper_bound(
      ranges, ranges + N, cp, [](char32_t v, const CodepointRange& r) { return v < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

// Unicode White_Space, which is what Oniguruma's \s means for Unicode text.
bool IsWhiteSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

CharClass ClassifySlow(char32_t cp) {
  if (IsWhiteSpace(cp)) return CharClass::kSpace;
  if (InRanges(kLetterRanges, cp)) return CharClass::kLetter;
  if (InRanges(kNumberRanges, cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

std::array<CharClass, 128> MakeAsciiClasses() {
  std::array<CharClass, 128> classes;
  for (char32_t cp = 0; cp < 128; ++cp) classes[cp] = ClassifySlow(cp);
  return classes;
}

// Byte b's code point in the GPT-2 alphabet: printable Latin-1 maps to itself, the other 68
// bytes are numbered from U+0100 in byte order.
struct ByteAlphabet {
  std::array<char32_t, 256> to_codepoint;
  std::array<int16_t, 0x144> to_byte;  // indexed by code point; -1 = not in the alphabet
};

bool IsPrintableLatin1(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

ByteAlphabet MakeByteAlphabet() {
  ByteAlphabet alphabet;
  alphabet.to_byte.fill(-1);
  char32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = IsPrintableLatin1(b) ? static_cast<char32_t>(b) : next_extra++;
    alphabet.to_codepoint[b] = cp;
    alphabet.to_byte[cp] = static_cast<int16_t>(b);
  }
  return alphabet;
}

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet = MakeByteAlphabet();
  return alphabet;
}

// A decoded character of the text being split: where it starts and its class.
struct Unit {
  size_t begin;
  char32_t cp;
  CharClass cls;
};

std::vector<Unit> DecodeUnits(absl::string_view text) {
  std::vector<Unit> units;
  units.reserve(text.size() + 1);
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Step step = DecodeUtf8(text, pos);
    if (step.result == Utf8Result::kComplete) {
      units.push_back({pos, step.codepoint, ClassifyCodepoint(step.codepoint)});
      pos += step.length;
    } else {
      units.push_back({pos, 0xFFFD, CharClass::kOther});
      pos += 1;
    }
  }
  units.push_back({text.size(), 0, CharClass::kOther});  // sentinel
  return units;
}

// Length in units of a contraction ('s 't 're 've 'm 'll 'd) starting at units[i], or 0.
size_t ContractionLength(const std::vector<Unit>& units, size_t i, size_t end) {
  if (units[i].cp != U'\'' || i + 1 >= end) return 0;
  const char32_t a = units[i + 1].cp;
  if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
  if (i + 2 >= end) return 0;
  const char32_t b = units[i + 2].cp;
  if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
  return 0;
}

// Length of the GPT-2 pattern's match at units[i], i < end, where `end` bounds the text the
// pattern sees (it treats `end` as the end of input, so the look-ahead stops there too).
size_t MatchLength(const std::vector<Unit>& units, size_t i, size_t end) {
  if (const size_t n = ContractionLength(units, i, end); n > 0) return n;
  size_t j = i;
  // " ?X+" for X in L, N, other: an optional leading space, then a run of one class.
  if (units[i].cp == U' ' && i + 1 < end && units[i + 1].cls != CharClass::kSpace) ++j;
  const CharClass cls = units[j].cls;
  if (cls != CharClass::kSpace) {
    size_t k = j + 1;
    while (k < end && units[k].cls == cls) ++k;
    return k - i;
  }
  // "\s+(?!\S)" takes a whitespace run whole at the end of input, otherwise all but its last
  // character (which then leads the next word); "\s+" catches a lone space before a word.
  size_t k = i + 1;
  while (k < end && units[k].cls == CharClass::kSpace) ++k;
  if (k == end || k - i == 1) return k - i;
  return k - i - 1;
}

void SplitGpt2(absl::string_view text, const std::vector<Unit>& units, size_t begin, size_t end,
               std::vector<absl::string_view>* pieces) {
  size_t i = begin;
  while (i < end) {
    const size_t next = i + MatchLength(units, i, end);
    pieces->push_back(text.substr(units[i].begin, units[next].begin - units[i].begin));
    i = next;
  }
}

}  // namespace

Utf8Step DecodeUtf8(absl::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {Utf8Result::kComplete, lead, 1};
  int length;
  char32_t cp;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return {Utf8Result::kInvalid, 0, 1};
  }
  for (int k = 1; k < length; ++k) {
    if (pos + k >= text.size()) return {Utf8Result::kTruncated, 0, k};
    const uint8_t b = byte(pos + k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) {
      return {Utf8Result::kInvalid, 0, k};
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Result::kComplete, cp, length};
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

CharClass ClassifyCodepoint(char32_t cp) {
  static const std::array<CharClass, 128> ascii = MakeAsciiClasses();
  return cp < 128 ? ascii[cp] : ClassifySlow(cp);
}

char32_t ByteToCodepoint(uint8_t byte) { return Alphabet().to_codepoint[byte]; }

int CodepointToByte(char32_t cp) {
  return cp < Alphabet().to_byte.size() ? Alphabet().to_byte[cp] : -1;
}

absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(absl::string_view name) {
  if (name == "gpt2") return PreTokenizerKind::kGpt2;
  if (name == "smollm" || name == "starcoder" || name == "refact") {
    return PreTokenizerKind::kGpt2IndividualDigits;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "unsupported pre-tokenizer \"", name, "\" (supported: gpt2, smollm, starcoder, refact)"));
}

void PreTokenize(absl::string_view text, PreTokenizerKind kind,
                 std::vector<absl::string_view>* pieces) {
  const std::vector<Unit> units = DecodeUnits(text);
  const size_t n = units.size() - 1;
  if (kind == PreTokenizerKind::kGpt2) {
    SplitGpt2(text, units, 0, n, pieces);
    return;
  }
  size_t i = 0;
  while (i < n) {
    if (units[i].cls == CharClass::kNumber) {
      pieces->push_back(text.substr(units[i].begin, units[i + 1].begin - units[i].begin));
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < n && units[j].cls != CharClass::kNumber) ++j;
    SplitGpt2(text, units, i, j, pieces);
    i = j;
  }
}

}  // namespace kvwire::runtime::tokenizer_internal
