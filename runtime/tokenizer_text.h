// runtime/tokenizer_text.h — text layer of the byte-level BPE tokenizer: UTF-8 decoding,
// Unicode character classes, the GPT-2 byte<->character alphabet and the pre-tokenizers that cut
// text into the pieces BPE merges within.
//
// Internal to kvwire_tokenizer (runtime/tokenizer.h is the public API); exposed so the
// character-level behaviour can be tested on its own.
//
// Thread-safety: free functions over immutable tables; safe from any thread.
// Error codes: PreTokenizerFromName returns FAILED_PRECONDITION for an unsupported name.
#ifndef KVWIRE_RUNTIME_TOKENIZER_TEXT_H_
#define KVWIRE_RUNTIME_TOKENIZER_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvwire::runtime::tokenizer_internal {

// How one decoding step ended: a whole well-formed sequence, a well-formed prefix that the
// buffer cut short (more bytes could complete it), or bytes that can never be well-formed.
enum class Utf8Result : uint8_t { kComplete, kTruncated, kInvalid };

struct Utf8Step {
  Utf8Result result;
  char32_t codepoint;  // valid only for kComplete
  int length;          // bytes consumed: the sequence (kComplete), the prefix (kTruncated), or
                       // the maximal ill-formed subpart to replace with U+FFFD (kInvalid, >= 1)
};

// Decodes the UTF-8 sequence starting at text[pos] (pos < text.size()) under the Unicode
// well-formedness table (no overlongs, no surrogates, nothing above U+10FFFF).
Utf8Step DecodeUtf8(absl::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// The classes of the GPT-2 split pattern: \p{L}, \p{N}, \s (Unicode White_Space) and the rest.
enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// Classifies a code point with the Unicode 16.0 tables the reference implementation uses.
CharClass ClassifyCodepoint(char32_t cp);

// GPT-2's reversible byte alphabet: every byte maps to a printable code point (printable Latin-1
// bytes map to themselves, the other 68 to U+0100..U+0143), so byte strings can be vocabulary
// strings. ByteToCodepoint is total; CodepointToByte returns -1 outside the alphabet.
char32_t ByteToCodepoint(uint8_t byte);
int CodepointToByte(char32_t cp);

// Pre-tokenizers named by GGUF `tokenizer.ggml.pre`.
enum class PreTokenizerKind : uint8_t {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // Every \p{N} code point becomes its own piece first; kGpt2 then splits the text between.
  kGpt2IndividualDigits,
};

// "gpt2" -> kGpt2; "smollm", "starcoder", "refact" -> kGpt2IndividualDigits. FAILED_PRECONDITION
// for any other name (the empty name included: it means a pattern this tokenizer lacks).
absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(absl::string_view name);

// Cuts `text` into pre-tokens, appended to `pieces` as views into `text`; concatenated they give
// `text` back. Ill-formed UTF-8 bytes are kept, each as a one-byte character of class kOther.
void PreTokenize(absl::string_view text, PreTokenizerKind kind,
                 std::vector<absl::string_view>* pieces);

}  // namespace kvwire::runtime::tokenizer_internal

#endif  // KVWIRE_RUNTIME_TOKENIZER_TEXT_H_
