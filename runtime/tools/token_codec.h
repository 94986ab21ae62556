// runtime/tools/token_codec.h — the seam between kvwire-run and a tokenizer.
//
// kvwire-run talks to text only through TokenCodec. MakeTokenCodec returns UNIMPLEMENTED until
// the GGUF tokenizer (runtime/tokenizer.h) is wired in; until then the program takes
// --prompt-ids and prints ids with their raw vocabulary pieces.
// Thread-safety: implementations are immutable after construction.
#ifndef KVWIRE_RUNTIME_TOOLS_TOKEN_CODEC_H_
#define KVWIRE_RUNTIME_TOOLS_TOKEN_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/model.h"

namespace kvwire::runtime {

class TokenCodec {
 public:
  virtual ~TokenCodec() = default;
  // Prompt text -> ids; with `chat`, wrapped in the model's chat template as one user turn
  // followed by the assistant prompt.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, bool chat) const = 0;
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const = 0;
};

absl::StatusOr<std::unique_ptr<TokenCodec>> MakeTokenCodec(const Model& model);

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_TOOLS_TOKEN_CODEC_H_
