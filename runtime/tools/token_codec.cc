#include "runtime/tools/token_codec.h"

#include "kvwire/base/status.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::runtime {
namespace {

class GgufTokenCodec : public TokenCodec {
 public:
  explicit GgufTokenCodec(std::unique_ptr<Tokenizer> tokenizer) : tokenizer_(std::move(tokenizer)) {}

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, bool chat) const override {
    if (!chat) return tokenizer_->Encode(text, {.add_bos = tokenizer_->add_bos()});
    const ChatMessage turn{"user", std::string(text)};
    KVWIRE_ASSIGN_OR_RETURN(const std::string prompt, tokenizer_->ApplyChatTemplate({&turn, 1}, true));
    // Control tokens are parsed so the template's turn markers become single tokens. This is a
    // local operator tool; the serving path encodes user text without parsing specials.
    return tokenizer_->Encode(prompt, {.parse_special = true});
  }

  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override {
    return tokenizer_->Decode(ids);
  }

 private:
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TokenCodec>> MakeTokenCodec(const Model& model) {
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(model.gguf()));
  return std::make_unique<GgufTokenCodec>(std::move(tokenizer));
}

}  // namespace kvwire::runtime
