#include "runtime/tools/token_codec.h"

namespace kvwire::runtime {

absl::StatusOr<std::unique_ptr<TokenCodec>> MakeTokenCodec(const Model& model) {
  // TODO(#3): wrap runtime/tokenizer.h here once it lands on this branch.
  return absl::UnimplementedError(
      "no tokenizer in this build: pass --prompt-ids instead of --prompt/--chat");
}

}  // namespace kvwire::runtime
