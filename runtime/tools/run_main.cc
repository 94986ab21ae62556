// kvwire-run: generates from a GGUF model on the CPU and reports prefill and decode speed.
//
//   kvwire-run --model M.gguf --prompt "Hello" [--chat] [--max-tokens 32]
//   kvwire-run --model M.gguf --prompt-ids 504,3575,282
//   compression: --budget 0.2 [--method defensive/uniform/merge]: the prompt's cache is compressed
//                layer by layer during prefill, then decoded with vote-biased attention
//   sampling: --temperature T --top-p P --seed S (default greedy)
//   --gpu: decode on the CUDA device (CUDA builds): the prompt's cache, compressed or not, is
//          installed on the device once and every decode step runs there
#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <iostream>
#include <memory>

#include "kvwire/base/status.h"
#include "kvwire/compress/decode_compactor.h"
#include "kvwire/config.h"
#include "prefill_node/compressing_prefill.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer_gguf.h"
#include "runtime/tools/token_ids.h"
#if KVWIRE_HAVE_CUDA
#include "runtime/gpu_runner.h"
#endif

namespace kvwire::runtime {
namespace {

struct RunFlags {
  std::string model, prompt, prompt_ids;
  bool chat = false;
  int max_tokens = 32;
  int threads = 2;
  float budget = 1.0f;
  int64_t decode_budget = 0;  // max KV entries per head during decode; 0 = unbounded
  bool gpu = false;           // decode on the CUDA device
  std::string method = compress::kDefaultMethod;
  SamplingOptions sampling;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const RunFlags& f, const Tokenizer& tok) {
  if (!f.prompt_ids.empty()) return ParseTokenIds(f.prompt_ids);
  if (!f.chat) return tok.Encode(f.prompt, {.add_bos = tok.add_bos()});
  const ChatMessage turn{"user", f.prompt};
  KVWIRE_ASSIGN_OR_RETURN(const std::string text, tok.ApplyChatTemplate({&turn, 1}, true));
  // An operator's local tool: the template's markers (and any in the prompt) become specials.
  return tok.Encode(text, {.parse_special = true});
}

// The prompt's cache: the full one, or compressed layer by layer when budget < 1.
absl::StatusOr<std::vector<float>> RunPrefill(const RunFlags& f, Runner& runner,
                                              absl::Span<const int32_t> prompt,
                                              cache::KvCache* cache) {
  if (f.budget >= 1.0f) return runner.Prefill(prompt, {}, cache);
  KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec, compress::CompressionSpec::Parse(f.method));
  KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor compressor,
                          compress::Compressor::Create(spec, f.budget));
  prefill::CompressingPrefill pipeline(&runner);
  prefill::PrefillResult result;
  KVWIRE_ASSIGN_OR_RETURN(*cache, pipeline.CompressPrompt(prompt, compressor, &result));
  const int64_t full = static_cast<int64_t>(prompt.size()) * cache->shape.n_layers *
                       cache->shape.n_kv_heads;
  std::cerr << "compressed with " << spec.ToString() << " at budget " << f.budget << ": "
            << result.kept_entries << " of " << full << " KV entries kept, compression "
            << result.compress_seconds * 1e3 << " ms\n";
  return std::move(result.last_logits);
}

absl::Status Generate(const RunFlags& f) {
  KVWIRE_ASSIGN_OR_RETURN(auto model, Model::Load(f.model));
  KVWIRE_ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model->gguf()));
  KVWIRE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(f, *tokenizer));
  Runner runner(*model, f.threads);
  Sampler sampler(f.sampling);
  StreamDecoder text(*tokenizer);
  cache::KvCache cache;
  auto start = std::chrono::steady_clock::now();
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, RunPrefill(f, runner, prompt, &cache));
  // Continuous merging keeps each head within --decode-budget entries while generating.
  KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec, compress::CompressionSpec::Parse(f.method));
  compress::DecodeCompactor compactor(spec, model->config().n_heads, f.decode_budget);
  ForwardOptions decode_options;
  if (f.decode_budget > 0) {
    decode_options.window = 1;
    decode_options.on_layer = [&](const PrefillLayer& pl) {
      return compactor.OnStep(pl.layer, pl.window_queries, &cache.layers[pl.layer]);
    };
  }
  // With --gpu every decode step runs on the device over the installed cache.
  std::function<absl::StatusOr<std::vector<float>>(int32_t, int32_t)> decode =
      [&](int32_t token, int32_t position) {
        return runner.Decode(token, position, &cache, decode_options);
      };
#if KVWIRE_HAVE_CUDA
  std::unique_ptr<GpuRunner> gpu;
  if (f.gpu) {
    if (f.decode_budget > 0) {
      return absl::InvalidArgumentError("--decode-budget merges on the CPU; not with --gpu");
    }
    KVWIRE_ASSIGN_OR_RETURN(gpu, GpuRunner::Create(*model, {}));
    KVWIRE_RETURN_IF_ERROR(gpu->Install(cache));
    decode = [&](int32_t token, int32_t position) { return gpu->Decode(token, position); };
  }
#else
  if (f.gpu) return absl::FailedPreconditionError("--gpu: this build has no CUDA");
#endif
  const double prefill_s = Since(start);
  start = std::chrono::steady_clock::now();
  int generated = 0;
  while (generated < f.max_tokens) {
    const int32_t next = sampler.Sample(logits);
    ++generated;
    if (next == tokenizer->eos_id() || next == tokenizer->im_end_id()) break;
    KVWIRE_ASSIGN_OR_RETURN(const std::string piece, text.Push(next));
    std::cout << piece << std::flush;
    if (generated == f.max_tokens) break;
    KVWIRE_ASSIGN_OR_RETURN(logits, decode(next, DecodePosition(cache, generated - 1)));
  }
  std::cout << text.Finish() << "\n";
  const double decode_s = Since(start);
  std::cerr << "prefill: " << prompt.size() << " tokens, " << prompt.size() / prefill_s
            << " tok/s; decode: " << generated << " tokens, "
            << (generated > 1 ? (generated - 1) / decode_s : 0.0) << " tok/s";
  if (f.decode_budget > 0) std::cerr << "; " << compactor.merges() << " decode-time merges";
  std::cerr << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvwire::runtime

int main(int argc, char** argv) {
  kvwire::runtime::RunFlags f;
  CLI::App app{"Generate with a GGUF Llama-family model on the CPU"};
  app.add_option("--model", f.model, "GGUF model file")->required();
  auto* text = app.add_option("--prompt", f.prompt, "prompt text");
  auto* ids = app.add_option("--prompt-ids", f.prompt_ids, "prompt as comma-separated token ids")
                  ->excludes(text);
  app.add_flag("--chat", f.chat, "wrap the prompt text in the model's chat template")
      ->excludes(ids);
  app.add_option("--max-tokens", f.max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", f.threads, "CPU threads")->check(CLI::Range(1, 256));
  app.add_option("--budget", f.budget, "kept fraction of the prompt's KV cache, (0, 1]");
  app.add_option("--method", f.method, "compression spec, e.g. snapkv/adaptive/merge");
  app.add_option("--decode-budget", f.decode_budget,
                 "max KV entries per head while decoding (continuous merging); 0 = unbounded");
  app.add_flag("--gpu", f.gpu, "decode on the CUDA device (CUDA builds)");
  app.add_option("--temperature", f.sampling.temperature, "0 = greedy");
  app.add_option("--top-p", f.sampling.top_p, "nucleus mass");
  app.add_option("--seed", f.sampling.seed, "sampling seed");
  CLI11_PARSE(app, argc, argv);
  if (f.prompt.empty() && f.prompt_ids.empty()) {
    std::cerr << "kvwire-run: give --prompt or --prompt-ids\n";
    return 2;
  }
  const absl::Status status = kvwire::runtime::Generate(f);
  if (!status.ok()) {
    std::cerr << "kvwire-run: " << status << "\n";
    return 1;
  }
  return 0;
}
