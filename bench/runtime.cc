// `kvwire-bench runtime`: CPU model runtime speed — prefill tokens/s over a P-token prompt and
// decode tokens/s at a C-token context, medians of several runs, random token ids.
//
//   kvwire-bench runtime --model M.gguf [--prompt-tokens 512] [--context 512] [--runs 5] [--json]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>

#include "bench/command.h"
#include "bench/stats.h"
#include "runtime/runner.h"

namespace kvwire::bench {
namespace {

struct RuntimeFlags {
  std::string model;
  int prompt_tokens = 512;
  int context = 512;
  int decode_tokens = 32;
  int runs = 5;
  int threads = 2;
  bool json = false;
};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Tokens/s of each prefill run.
absl::StatusOr<std::vector<double>> PrefillRates(runtime::Runner& runner, const RuntimeFlags& f) {
  const auto prompt = RandomTokens(f.prompt_tokens, runner.model().config().vocab_size, 1);
  std::vector<double> rates;
  for (int r = 0; r < f.runs; ++r) {
    cache::KvCache cache;
    const auto start = std::chrono::steady_clock::now();
    auto logits = runner.Prefill(prompt, {}, &cache);
    if (!logits.ok()) return logits.status();
    rates.push_back(f.prompt_tokens / Seconds(start));
  }
  return rates;
}

// Tokens/s of each run of decode_tokens steps, each starting from the same context-token cache.
absl::StatusOr<std::vector<double>> DecodeRates(runtime::Runner& runner, const RuntimeFlags& f) {
  const int vocab = runner.model().config().vocab_size;
  cache::KvCache context;
  auto logits = runner.Prefill(RandomTokens(f.context, vocab, 2), {}, &context);
  if (!logits.ok()) return logits.status();
  const auto next = RandomTokens(f.decode_tokens, vocab, 3);
  std::vector<double> rates;
  for (int r = 0; r < f.runs; ++r) {
    cache::KvCache cache = context;
    const auto start = std::chrono::steady_clock::now();
    for (int g = 0; g < f.decode_tokens; ++g) {
      auto step = runner.Decode(next[g], runtime::DecodePosition(cache, g), &cache);
      if (!step.ok()) return step.status();
    }
    rates.push_back(f.decode_tokens / Seconds(start));
  }
  return rates;
}

std::string JsonArray(const std::vector<double>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  return s.str() + "]";
}

int RunRuntimeBench(const RuntimeFlags& f) {
  auto model = runtime::Model::Load(f.model);
  if (!model.ok()) {
    std::cerr << "runtime bench: " << model.status() << "\n";
    return 1;
  }
  runtime::Runner runner(**model, f.threads);
  auto prefill = PrefillRates(runner, f);
  auto decode = prefill.ok() ? DecodeRates(runner, f) : prefill;
  if (!decode.ok()) {
    std::cerr << "runtime bench: " << decode.status() << "\n";
    return 1;
  }
  if (f.json) {
    std::cout << "{\"bench\": \"runtime\", \"model\": \"" << f.model
              << "\", \"threads\": " << f.threads << ", \"prompt_tokens\": " << f.prompt_tokens
              << ", \"prefill_tok_s_median\": " << Median(*prefill)
              << ", \"prefill_tok_s_runs\": " << JsonArray(*prefill)
              << ", \"decode_context\": " << f.context << ", \"decode_tokens\": " << f.decode_tokens
              << ", \"decode_tok_s_median\": " << Median(*decode)
              << ", \"decode_tok_s_runs\": " << JsonArray(*decode) << "}\n";
  }
  std::cout << "runtime: prefill " << Median(*prefill) << " tok/s at " << f.prompt_tokens
            << " tokens, decode " << Median(*decode) << " tok/s at " << f.context
            << " context (medians of " << f.runs << " runs, " << f.threads << " threads)\n";
  return 0;
}

void SetupRuntime(CLI::App& sub, std::function<int()>* run) {
  auto flags = std::make_shared<RuntimeFlags>();
  if (const char* env = std::getenv("KVWIRE_MODEL")) flags->model = env;
  sub.add_option("--model", flags->model, "GGUF model (default: $KVWIRE_MODEL)");
  sub.add_option("--prompt-tokens", flags->prompt_tokens, "prefill prompt length");
  sub.add_option("--context", flags->context, "context length before decoding");
  sub.add_option("--decode-tokens", flags->decode_tokens, "decode steps per run");
  sub.add_option("--runs", flags->runs, "runs per measurement (median reported)");
  sub.add_option("--threads", flags->threads, "CPU threads");
  sub.add_flag("--json", flags->json, "print a JSON line before the summary");
  *run = [flags] { return RunRuntimeBench(*flags); };
}

}  // namespace

KVWIRE_BENCH_COMMAND(runtime, "CPU model runtime: prefill and decode tokens/s", SetupRuntime);

}  // namespace kvwire::bench
