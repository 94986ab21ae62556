// runtime/tiny_model.h — small random-weight Llama models as GGUF bytes, for tests and
// benchmarks that must not depend on a downloaded model.
//
// The model has real llama metadata and a minimal GPT-2 style byte-level tokenizer: tokens
// 0..2 are <|endoftext|>, <|im_start|>, <|im_end|> (control; bos = 1, eos = 2), tokens 3..258
// are the 256 bytes in GPT-2's byte-to-unicode spelling, then a few merged tokens with their
// merges ("Ġ t" -> "Ġt", ...), plus a ChatML chat template. Weights are drawn from a seeded
// normal distribution and quantized to the requested types.
//
// Thread-safety: pure function. Errors: INVALID_ARGUMENT when a dimension does not fit a chosen
// type's block size (K types need hidden and ffn_hidden multiples of 256).
#ifndef KVWIRE_RUNTIME_TINY_MODEL_H_
#define KVWIRE_RUNTIME_TINY_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::runtime {

struct TinyModelOptions {
  std::string arch = "llama";  // or "qwen2" (adds Q/K/V biases, halves-style RoPE)
  int n_layers = 2;
  int hidden = 256;
  int n_heads = 4;
  int n_kv_heads = 2;
  int ffn_hidden = 512;
  int context_length = 1024;
  float rope_theta = 10000.0f;
  kernels::QuantType weight_type = kernels::QuantType::kQ8_0;     // projections and FFN
  kernels::QuantType embedding_type = kernels::QuantType::kQ8_0;  // token_embd (and output)
  bool tied_output = true;
  uint32_t seed = 1;
};

// Number of tokens in the tiny vocabulary.
int TinyVocabSize();
// The tiny vocabulary's token strings (GPT-2 byte-level spelling), in id order.
std::vector<std::string> TinyVocab();

absl::StatusOr<std::string> MakeTinyModel(const TinyModelOptions& options);

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_TINY_MODEL_H_
