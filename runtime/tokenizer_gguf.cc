#include "runtime/tokenizer_gguf.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"

namespace kvwire::runtime {
namespace {

// Reads an optional token id: absent keeps *id, present must fit int32.
absl::Status OptionalId(const GgufFile& gguf, absl::string_view key, int32_t* id) {
  if (gguf.Find(key) == nullptr) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(const int64_t v, gguf.GetInt(key));
  if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(key, " = ", v, " is not a token id"));
  }
  *id = static_cast<int32_t>(v);
  return absl::OkStatus();
}

absl::Status OptionalString(const GgufFile& gguf, absl::string_view key, std::string* out) {
  if (gguf.Find(key) == nullptr) return absl::OkStatus();
  KVWIRE_ASSIGN_OR_RETURN(const absl::string_view v, gguf.GetString(key));
  *out = std::string(v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerSpec> TokenizerSpecFromGguf(const GgufFile& gguf) {
  TokenizerSpec spec;
  if (gguf.Find("tokenizer.ggml.tokens") == nullptr) {
    return absl::NotFoundError("the model file has no tokenizer.ggml.tokens vocabulary");
  }
  KVWIRE_ASSIGN_OR_RETURN(const auto tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  spec.tokens.reserve(tokens.size());
  for (absl::string_view t : tokens) spec.tokens.emplace_back(t);
  if (gguf.Find("tokenizer.ggml.token_type") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(const auto types, gguf.GetIntArray("tokenizer.ggml.token_type"));
    spec.token_types.reserve(types.size());
    for (int64_t t : types) spec.token_types.push_back(static_cast<int32_t>(t));
  }
  if (gguf.Find("tokenizer.ggml.merges") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(const auto merges, gguf.GetStringArray("tokenizer.ggml.merges"));
    spec.merges.reserve(merges.size());
    for (absl::string_view m : merges) spec.merges.emplace_back(m);
  }
  KVWIRE_RETURN_IF_ERROR(OptionalString(gguf, "tokenizer.ggml.model", &spec.model));
  KVWIRE_RETURN_IF_ERROR(OptionalString(gguf, "tokenizer.ggml.pre", &spec.pre));
  KVWIRE_RETURN_IF_ERROR(OptionalString(gguf, "tokenizer.chat_template", &spec.chat_template));
  KVWIRE_RETURN_IF_ERROR(OptionalId(gguf, "tokenizer.ggml.bos_token_id", &spec.bos_id));
  KVWIRE_RETURN_IF_ERROR(OptionalId(gguf, "tokenizer.ggml.eos_token_id", &spec.eos_id));
  KVWIRE_RETURN_IF_ERROR(OptionalId(gguf, "tokenizer.ggml.padding_token_id", &spec.pad_id));
  KVWIRE_RETURN_IF_ERROR(OptionalId(gguf, "tokenizer.ggml.unknown_token_id", &spec.unknown_id));
  if (gguf.Find("tokenizer.ggml.add_bos_token") != nullptr) {
    KVWIRE_ASSIGN_OR_RETURN(spec.add_bos, gguf.GetBool("tokenizer.ggml.add_bos_token"));
  }
  return spec;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const GgufFile& gguf) {
  KVWIRE_ASSIGN_OR_RETURN(TokenizerSpec spec, TokenizerSpecFromGguf(gguf));
  return Tokenizer::Create(std::move(spec));
}

}  // namespace kvwire::runtime
