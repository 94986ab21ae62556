// runtime/tokenizer.h — byte-level BPE tokenizer for GPT-2 style (GGUF `tokenizer.ggml.model`
// = "gpt2") vocabularies such as SmolLM2's: text <-> token ids, incremental decoding for
// token-by-token output, and the model's chat template.
//
// Encoding: control/user-defined tokens are cut out of the raw text first (see EncodeOptions);
// the rest is split by the pre-tokenizer GGUF `tokenizer.ggml.pre` names; each piece is mapped
// byte by byte onto the GPT-2 alphabet and merged by merge rank. Output matches Hugging Face
// `tokenizers` for the same vocabulary (tests/tokenizer/reference_tokenize.py checks this on the
// real model). A byte with no token of its own (SmolLM2 lacks 21 of the 256, e.g. 0x04, 0xC0) is
// dropped, as the reference and llama.cpp do.
//
// Thread-safety: a Tokenizer is immutable after Create apart from an internal piece cache behind
// a mutex; every const method may be called from any number of threads. StreamDecoder is a
// per-stream object, not synchronised.
//
// Error codes: Create -> INVALID_ARGUMENT for an inconsistent spec (out-of-range ids, malformed
// merges, duplicate tokens, bad token types), FAILED_PRECONDITION for a tokenizer model or
// pre-tokenizer this implementation lacks; Decode/StreamDecoder::Push -> INVALID_ARGUMENT for an
// id outside the vocabulary; ApplyChatTemplate -> FAILED_PRECONDITION for an unrecognised
// template.
#ifndef KVWIRE_RUNTIME_TOKENIZER_H_
#define KVWIRE_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer_text.h"

namespace kvwire::runtime {

// Marks an absent special token id.
inline constexpr int32_t kNoToken = -1;

// Values of GGUF `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // <|im_start|>, <|endoftext|>: matched only when parse_special is set
  kUserDefined = 4,  // added words: always matched as whole tokens
  kUnused = 5,
  kByte = 6,
};

// Everything Create needs, as plain data. Each field is a direct copy of the GGUF key named
// beside it (uint32 ids become int32; a missing key keeps the default).
struct TokenizerSpec {
  std::string model = "gpt2";       // tokenizer.ggml.model; only "gpt2" is supported
  std::string pre;                  // tokenizer.ggml.pre, e.g. "smollm"
  std::vector<std::string> tokens;  // tokenizer.ggml.tokens; index = token id
  // tokenizer.ggml.token_type (TokenType values), same length as tokens; empty = all kNormal.
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;  // tokenizer.ggml.merges, "left right", best rank first
  int32_t bos_id = kNoToken;        // tokenizer.ggml.bos_token_id
  int32_t eos_id = kNoToken;        // tokenizer.ggml.eos_token_id
  int32_t pad_id = kNoToken;        // tokenizer.ggml.padding_token_id
  int32_t unknown_id = kNoToken;    // tokenizer.ggml.unknown_token_id (range-checked only)
  bool add_bos = false;             // tokenizer.ggml.add_bos_token
  std::string chat_template;        // tokenizer.chat_template (Jinja source)
};

struct EncodeOptions {
  // Match control tokens (<|im_start|> ...) written literally in the text. Leave false for
  // untrusted user text so it can never forge turn boundaries.
  bool parse_special = false;
  // Prepend the BOS token (when the vocabulary has one).
  bool add_bos = false;
};

class Tokenizer {
 public:
  // Validates `spec` and builds the lookup tables. See the banner for error codes.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerSpec spec);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids for `text` (any bytes; ill-formed UTF-8 is tokenized byte by byte).
  std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options = {}) const;

  // The bytes the ids stand for, concatenated: control tokens render as their text.
  // INVALID_ARGUMENT for an id outside [0, vocab_size()).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  // The bytes of one token; empty for an id outside the vocabulary.
  absl::string_view TokenBytes(int32_t id) const;
  // The token's vocabulary string (GPT-2 alphabet for normal tokens); empty when out of range.
  absl::string_view TokenText(int32_t id) const;
  TokenType token_type(int32_t id) const;
  // Id of the token whose vocabulary string is `text`, or kNoToken.
  int32_t FindToken(absl::string_view text) const;

  // Renders a conversation with the model's chat template; FAILED_PRECONDITION when the
  // template is not one ChatTemplate recognises.
  absl::StatusOr<std::string> ApplyChatTemplate(absl::Span<const ChatMessage> messages,
                                                bool add_generation_prompt) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t im_start_id() const { return im_start_id_; }  // "<|im_start|>" or kNoToken
  int32_t im_end_id() const { return im_end_id_; }      // "<|im_end|>" or kNoToken
  bool add_bos() const { return add_bos_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  Tokenizer() = default;
  absl::Status BuildVocabulary(std::vector<std::string> tokens, std::vector<int32_t> types);
  absl::Status BuildMerges(const std::vector<std::string>& merges);
  absl::Status SetSpecialIds(const TokenizerSpec& spec);
  // Length of the special token starting at text[pos] (longest wins), 0 if none; sets *id.
  size_t MatchSpecial(absl::string_view text, size_t pos, bool parse_special, int32_t* id) const;
  void EncodeOrdinary(absl::string_view text, std::vector<int32_t>* ids) const;
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const;
  std::vector<int32_t> MergePiece(absl::string_view piece) const;

  std::vector<std::string> tokens_;       // vocabulary strings, by id
  std::vector<std::string> token_bytes_;  // decoded bytes, by id
  std::vector<TokenType> types_;
  absl::flat_hash_map<std::string, int32_t> token_ids_;  // vocabulary string -> id
  int32_t byte_tokens_[256];                             // single-byte token, or kNoToken
  absl::flat_hash_map<uint64_t, Merge> merges_;          // (left << 32 | right) -> merge
  // Tokens cut out before pre-tokenisation, longest first, and the first bytes they start with.
  std::vector<int32_t> special_ids_;
  bool special_first_byte_[256] = {};
  tokenizer_internal::PreTokenizerKind pre_ = tokenizer_internal::PreTokenizerKind::kGpt2;
  absl::StatusOr<ChatTemplate> chat_template_ = absl::UnknownError("unset");
  int32_t bos_id_ = kNoToken, eos_id_ = kNoToken, pad_id_ = kNoToken;
  int32_t im_start_id_ = kNoToken, im_end_id_ = kNoToken;
  bool add_bos_ = false;

  mutable absl::Mutex cache_mu_;
  // Pre-token bytes -> ids; cleared when it grows past a bound, to cap memory.
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

// Turns a stream of ids into text as it arrives without ever splitting a UTF-8 character: bytes
// of an incomplete character are held back until the token that completes it. Output is always
// well-formed UTF-8 (bytes that can never form a character become U+FFFD).
class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Adds one token; returns the text that became complete (possibly empty).
  // INVALID_ARGUMENT for an id outside the vocabulary (the stream is left unchanged).
  absl::StatusOr<std::string> Push(int32_t id);

  // Ends the stream: returns what is still held, an incomplete tail as U+FFFD.
  std::string Finish();

  // Number of bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_TOKENIZER_H_
