// runtime/tokenizer_gguf.h — the model's own tokenizer, read from its GGUF metadata.
//
// Keys: tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id, eos_token_id,
// padding_token_id, unknown_token_id, add_bos_token} and tokenizer.chat_template; absent optional
// keys keep TokenizerSpec's defaults. Errors: NOT_FOUND when the file has no vocabulary,
// INVALID_ARGUMENT / FAILED_PRECONDITION from Tokenizer::Create for a spec it cannot use.
// Thread-safety: pure functions.
#ifndef KVWIRE_RUNTIME_TOKENIZER_GGUF_H_
#define KVWIRE_RUNTIME_TOKENIZER_GGUF_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

namespace kvwire::runtime {

absl::StatusOr<TokenizerSpec> TokenizerSpecFromGguf(const GgufFile& gguf);
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const GgufFile& gguf);

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_TOKENIZER_GGUF_H_
