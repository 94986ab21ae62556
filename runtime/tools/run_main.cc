// kvwire-run: generates from a GGUF model on the CPU and reports prefill and decode speed.
//
//   kvwire-run --model M.gguf --prompt "Hello" [--chat] [--max-tokens 32]
//   kvwire-run --model M.gguf --prompt-ids 504,3575,282
//   compression: --budget 0.2 [--method defensive/uniform/merge]: the prompt's cache is compressed
//                layer by layer during prefill, then decoded with vote-biased attention
//   sampling: --temperature T --top-p P --seed S (default greedy)
//   --gpu: run on the CUDA device (CUDA builds): without compression the prefill and every
//          decode step run there; with --budget < 1 the prompt is prefilled and compressed on the
//          CPU, its compressed cache installed on the device once, and decoding runs there
//          (--decode-budget merges on the CPU and is refused with --gpu)
#include <CLI/CLI.hpp>
#include <algorithm>
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
  bool gpu = false;           // run on the CUDA device
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

#if KVWIRE_HAVE_CUDA
// The device side of --gpu: weights, a runner and a cache with room for the prompt and every
// generated token.
struct GpuSession {
  std::unique_ptr<GpuRunner> runner;
  std::unique_ptr<GpuKvCache> cache;
};

absl::Status OpenGpu(const RunFlags& f, const Model& model, size_t prompt_length, GpuSession* s) {
  if (f.decode_budget > 0) {
    return absl::InvalidArgumentError("--decode-budget merges on the CPU; not with --gpu");
  }
  KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<const GpuModel> weights, GpuModel::Upload(model, {}));
  KVWIRE_ASSIGN_OR_RETURN(s->runner, GpuRunner::Create(weights));
  const int64_t room = std::min<int64_t>(static_cast<int64_t>(prompt_length) + f.max_tokens,
                                         model.config().context_length);
  KVWIRE_ASSIGN_OR_RETURN(s->cache, GpuKvCache::Create(*weights, room));
  return absl::OkStatus();
}

// The prompt on the device, or (compression runs on the CPU) its compressed cache installed there.
absl::StatusOr<std::vector<float>> GpuPrefill(const RunFlags& f, Runner& cpu,
                                              absl::Span<const int32_t> prompt, GpuSession* s) {
  if (f.budget >= 1.0f) {
    std::cerr << "gpu: prefill and decode on " << s->runner->context().properties().name << "\n";
    return s->runner->Prefill(prompt, {}, s->cache.get());
  }
  cache::KvCache host;
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, RunPrefill(f, cpu, prompt, &host));
  KVWIRE_RETURN_IF_ERROR(s->cache->Install(host));
  std::cerr << "gpu: prefill and compression on the CPU, decode on "
            << s->runner->context().properties().name << "\n";
  return logits;
}
#endif

absl::Status Generate(const RunFlags& f) {
  KVWIRE_ASSIGN_OR_RETURN(auto model, Model::Load(f.model));
  KVWIRE_ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model->gguf()));
  KVWIRE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(f, *tokenizer));
  Runner runner(*model, f.threads);
  Sampler sampler(f.sampling);
  StreamDecoder text(*tokenizer);
  cache::KvCache cache;
  // Continuous merging keeps each head within --decode-budget entries while generating.
  KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec,
                          compress::CompressionSpec::Parse(f.method));
  compress::DecodeCompactor compactor(spec, model->config().n_heads, f.decode_budget);
  ForwardOptions decode_options;
  if (f.decode_budget > 0) {
    decode_options.window = 1;
    decode_options.on_layer = [&](const PrefillLayer& pl) {
      return compactor.OnStep(pl.layer, pl.window_queries, &cache.layers[pl.layer]);
    };
  }
  std::function<absl::StatusOr<std::vector<float>>()> prefill = [&] {
    return RunPrefill(f, runner, prompt, &cache);
  };
  // Logits after `token`, the generated-th token after the prompt (0-based).
  std::function<absl::StatusOr<std::vector<float>>(int32_t, int32_t)> decode =
      [&](int32_t token, int32_t generated) {
        return runner.Decode(token, DecodePosition(cache, generated), &cache, decode_options);
      };
#if KVWIRE_HAVE_CUDA
  GpuSession gpu;
  if (f.gpu) {
    KVWIRE_RETURN_IF_ERROR(OpenGpu(f, *model, prompt.size(), &gpu));
    prefill = [&] { return GpuPrefill(f, runner, prompt, &gpu); };
    decode = [&](int32_t token, int32_t generated) {
      return gpu.runner->Decode(token, gpu.cache->original_length() + generated, gpu.cache.get());
    };
  }
#else
  if (f.gpu) return absl::FailedPreconditionError("--gpu: this build has no CUDA");
#endif
  auto start = std::chrono::steady_clock::now();
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, prefill());
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
    KVWIRE_ASSIGN_OR_RETURN(logits, decode(next, generated - 1));
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
  app.add_flag("--gpu", f.gpu, "prefill (without --budget) and decode on the CUDA device");
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
