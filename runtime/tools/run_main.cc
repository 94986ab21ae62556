// kvwire-run: generates from a GGUF model on the CPU and reports prefill and decode speed.
//
//   kvwire-run --model M.gguf --prompt-ids 504,3575,282 [--max-tokens 32]
//   kvwire-run --model M.gguf --prompt "Hello" [--chat]      (needs the tokenizer)
//   sampling: --temperature T --top-p P --seed S (default greedy)
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>

#include "kvwire/base/status.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tools/token_codec.h"
#include "runtime/tools/token_ids.h"

namespace kvwire::runtime {
namespace {

struct RunFlags {
  std::string model, prompt, prompt_ids;
  bool chat = false;
  int max_tokens = 32;
  int threads = 2;
  SamplingOptions sampling;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const RunFlags& f, const TokenCodec* codec) {
  if (!f.prompt_ids.empty()) return ParseTokenIds(f.prompt_ids);
  if (codec == nullptr) return absl::InvalidArgumentError("--prompt needs a tokenizer");
  return codec->Encode(f.prompt, f.chat);
}

// Prints one generated token: text when a tokenizer exists, else "id:piece".
void PrintToken(int32_t id, const TokenCodec* codec, const std::vector<absl::string_view>& vocab) {
  if (codec != nullptr) {
    auto text = codec->Decode(absl::MakeConstSpan(&id, 1));
    std::cout << (text.ok() ? *text : "?") << std::flush;
    return;
  }
  std::cout << id << ":" << (id < static_cast<int32_t>(vocab.size()) ? vocab[id] : "?") << " "
            << std::flush;
}

absl::Status Generate(const RunFlags& f) {
  KVWIRE_ASSIGN_OR_RETURN(auto model, Model::Load(f.model));
  auto codec = MakeTokenCodec(*model);
  const TokenCodec* c = codec.ok() ? codec->get() : nullptr;
  if (c == nullptr && f.prompt_ids.empty()) return codec.status();
  KVWIRE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(f, c));
  const auto vocab = model->gguf()
                         .GetStringArray("tokenizer.ggml.tokens")
                         .value_or(std::vector<absl::string_view>{});
  const int64_t eos = model->gguf().GetInt("tokenizer.ggml.eos_token_id").value_or(-1);
  Runner runner(*model, f.threads);
  Sampler sampler(f.sampling);
  cache::KvCache cache;
  auto start = std::chrono::steady_clock::now();
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, runner.Prefill(prompt, {}, &cache));
  const double prefill_s = Since(start);
  start = std::chrono::steady_clock::now();
  int generated = 0;
  for (; generated < f.max_tokens; ++generated) {
    const int32_t next = sampler.Sample(logits);
    PrintToken(next, c, vocab);
    if (next == eos || generated + 1 == f.max_tokens) break;
    KVWIRE_ASSIGN_OR_RETURN(logits, runner.Decode(next, DecodePosition(cache, generated), &cache));
  }
  const double decode_s = Since(start);
  std::cout << "\n";
  std::cerr << "prefill: " << prompt.size() << " tokens, " << prompt.size() / prefill_s
            << " tok/s; decode: " << generated << " steps, "
            << (generated > 0 ? generated / decode_s : 0.0) << " tok/s\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvwire::runtime

int main(int argc, char** argv) {
  kvwire::runtime::RunFlags f;
  CLI::App app{"Generate with a GGUF Llama-family model on the CPU"};
  app.add_option("--model", f.model, "GGUF model file")->required();
  auto* text = app.add_option("--prompt", f.prompt, "prompt text (needs the tokenizer)");
  auto* ids = app.add_option("--prompt-ids", f.prompt_ids, "prompt as comma-separated token ids")
                  ->excludes(text);
  app.add_flag("--chat", f.chat, "wrap the prompt text in the model's chat template")
      ->excludes(ids);
  app.add_option("--max-tokens", f.max_tokens, "tokens to generate");
  app.add_option("--threads", f.threads, "CPU threads");
  app.add_option("--temperature", f.sampling.temperature, "0 = greedy");
  app.add_option("--top-p", f.sampling.top_p, "nucleus mass");
  app.add_option("--seed", f.sampling.seed, "sampling seed");
  CLI11_PARSE(app, argc, argv);
  const absl::Status status = kvwire::runtime::Generate(f);
  if (!status.ok()) {
    std::cerr << "kvwire-run: " << status << "\n";
    return 1;
  }
  return 0;
}
