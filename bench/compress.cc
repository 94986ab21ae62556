// kvwire-bench compress: cost of score + allocate + select + merge + pack for one layer, per
// method and budget, on a layer shaped like the reference model (random post-RoPE tensors), as
// time per layer (median) and throughput in GB/s of raw fp16 KV. Also reports wire bytes per raw
// byte. `--model` adds the model's own prefill time for one layer at the same length, so the
// cost is quoted as a fraction of the compute it hides behind.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/command.h"
#include "bench/stats.h"
#include "bench/fidelity_data.h"
#include "prefill_node/compressing_prefill.h"
#include "runtime/tokenizer_gguf.h"
#include "kvwire/cache/frames.h"
#include "kvwire/compress/compressor.h"

namespace kvwire::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct CompressBenchOptions {
  int64_t tokens = 2048;
  int n_heads = 9, n_kv_heads = 3, head_dim = 64, hidden = 576;
  std::string methods =
      "defensive+recent/adaptive/merge,defensive/uniform/merge,window/uniform/merge,snapkv/uniform,snapkv/adaptive/merge,"
      "defensive+critical/adaptive/merge";
  std::string budgets = "0.1,0.2,0.5";
  int reps = 5;
  std::string json;
  std::string model;   // with a model: compression time as a share of the real prefill
  std::string corpus = kDefaultCorpus;
};

struct Layer {
  std::vector<float> keys, values, queries, wo;
  compress::LayerInput input;
};

void MakeLayer(const CompressBenchOptions& o, Layer* layer) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  const int64_t L = o.tokens;
  layer->keys.resize(L * o.n_kv_heads * o.head_dim);
  layer->values.resize(layer->keys.size());
  layer->queries.resize(L * o.n_heads * o.head_dim);  // all rows, so h2o can run too
  layer->wo.resize(static_cast<size_t>(o.hidden) * o.n_heads * o.head_dim);
  for (auto* v : {&layer->keys, &layer->values, &layer->queries, &layer->wo}) {
    for (float& x : *v) x = normal(rng);
  }
  compress::LayerInput& in = layer->input;
  in.n_tokens = L;
  in.n_heads = o.n_heads;
  in.n_kv_heads = o.n_kv_heads;
  in.head_dim = o.head_dim;
  in.scale = 1.0f / std::sqrt(static_cast<float>(o.head_dim));
  in.keys = layer->keys.data();
  in.values = layer->values.data();
  in.wo = layer->wo.data();
  in.hidden = o.hidden;
}

struct Result {
  std::string method;
  float budget = 0;
  double compress_ms = 0, pack_ms = 0, gbps = 0, wire_ratio = 0;
  double prefill_share = -1;  // compression / prefill compute on the real model; -1 without one
};

// Runs the real model's prefill with per-layer compression over a corpus prompt of o.tokens
// tokens, reps times, and returns the median share compression / prefill compute.
absl::StatusOr<double> PrefillShare(const CompressBenchOptions& o, runtime::Runner& runner,
                                    absl::Span<const int32_t> prompt,
                                    const compress::Compressor& c) {
  prefill::CompressingPrefill pipeline(&runner);
  std::vector<double> shares;
  for (int r = 0; r < std::max(1, o.reps / 2); ++r) {
    prefill::PrefillResult result;
    absl::StatusOr<cache::KvCache> cache = pipeline.CompressPrompt(prompt, c, &result);
    if (!cache.ok()) return cache.status();
    shares.push_back(result.compress_seconds / result.prefill_seconds);
  }
  return Median(shares);
}

absl::StatusOr<Result> Measure(const CompressBenchOptions& o, Layer& layer,
                               const compress::Compressor& c, float budget,
                               kernels::ThreadPool* pool) {
  compress::LayerInput in = layer.input;
  const int64_t rows = c.QueryRows(in.n_tokens);
  in.queries = layer.queries.data() + (in.n_tokens - rows) * o.n_heads * o.head_dim;
  in.n_queries = rows;
  std::vector<double> compress_s, pack_s;
  uint64_t wire = 0;
  for (int r = 0; r < o.reps; ++r) {
    const auto t0 = Clock::now();
    absl::StatusOr<cache::LayerCache> out = c.CompressLayer(in, pool);
    if (!out.ok()) return out.status();
    const auto t1 = Clock::now();
    format::Manifest m;
    m.n_layers = 1;
    m.n_kv_heads = static_cast<uint16_t>(o.n_kv_heads);
    m.n_query_heads = static_cast<uint16_t>(o.n_heads);
    m.head_dim = static_cast<uint16_t>(o.head_dim);
    m.original_length = static_cast<uint32_t>(in.n_tokens);
    m.entry_budget = static_cast<uint64_t>(in.n_tokens) * o.n_kv_heads;
    cache::CacheStreamEncoder enc(1, m);
    absl::StatusOr<std::vector<uint8_t>> frame = enc.LayerFrame(0, *out);
    if (!frame.ok()) return frame.status();
    const auto t2 = Clock::now();
    compress_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    pack_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    wire = frame->size();
  }
  const double raw = static_cast<double>(in.n_tokens) * o.n_kv_heads * o.head_dim * 2 * 2;
  Result res;
  res.method = c.spec().ToString();
  res.budget = budget;
  res.compress_ms = Median(compress_s) * 1e3;
  res.pack_ms = Median(pack_s) * 1e3;
  res.gbps = raw / ((res.compress_ms + res.pack_ms) * 1e-3) / 1e9;
  res.wire_ratio = static_cast<double>(wire) / raw;
  return res;
}

int RunCompressBench(const CompressBenchOptions& o) {
  Layer layer;
  MakeLayer(o, &layer);
  kernels::ThreadPool pool(0);
  std::unique_ptr<runtime::Model> model;
  std::unique_ptr<runtime::Runner> runner;
  std::vector<int32_t> prompt;
  if (!o.model.empty()) {
    auto m = runtime::Model::Load(o.model);
    auto corpus = LoadCorpus(o.corpus);
    if (!m.ok() || !corpus.ok()) {
      std::fprintf(stderr, "compress: %s\n", (!m.ok() ? m.status() : corpus.status()).ToString().c_str());
      return 1;
    }
    model = std::move(*m);
    auto tok = runtime::LoadTokenizer(model->gguf());
    if (!tok.ok()) return 1;
    prompt = (*tok)->Encode(corpus->substr(corpus->size() / 3, 40 * o.tokens));
    prompt.resize(std::min<size_t>(prompt.size(), o.tokens));
    runner = std::make_unique<runtime::Runner>(*model, 2);
  }
  std::vector<Result> results;
  std::printf("%-40s %7s %11s %9s %9s %10s%s\n", "method", "budget", "compress_ms", "pack_ms",
              "GB/s", "wire/raw", runner ? "  of_prefill" : "");
  for (absl::string_view method : absl::StrSplit(o.methods, ',')) {
    auto spec = compress::CompressionSpec::Parse(method);
    if (!spec.ok()) {
      std::fprintf(stderr, "%s\n", std::string(spec.status().message()).c_str());
      return 2;
    }
    for (absl::string_view b : absl::StrSplit(o.budgets, ',')) {
      const float budget = std::stof(std::string(b));
      auto c = compress::Compressor::Create(*spec, budget);
      if (!c.ok()) {
        std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
        return 2;
      }
      auto r = Measure(o, layer, *c, budget, &pool);
      if (!r.ok()) {
        std::fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
        return 1;
      }
      if (runner) {
        auto share = PrefillShare(o, *runner, prompt, *c);
        if (!share.ok()) {
          std::fprintf(stderr, "%s\n", share.status().ToString().c_str());
          return 1;
        }
        r->prefill_share = *share;
      }
      std::printf("%-40s %7.2f %11.2f %9.2f %9.3f %10.4f", r->method.c_str(), budget,
                  r->compress_ms, r->pack_ms, r->gbps, r->wire_ratio);
      if (runner) std::printf(" %13.2f%%", 100 * r->prefill_share);
      std::printf("\n");
      results.push_back(*r);
    }
  }
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{\n  \"tokens\": " << o.tokens << ",\n  \"results\": [\n";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      out << absl::StrFormat(
          "    {\"method\": \"%s\", \"budget\": %.3f, \"compress_ms\": %.4f, \"pack_ms\": %.4f, "
          "\"gbps\": %.4f, \"wire_ratio\": %.5f, \"prefill_share\": %.5f}%s\n",
          r.method, r.budget, r.compress_ms, r.pack_ms, r.gbps, r.wire_ratio, r.prefill_share,
          i + 1 < results.size() ? "," : "");
    }
    out << "  ]\n}\n";
  }
  double worst = 0;
  for (const Result& r : results) worst = std::max(worst, r.compress_ms + r.pack_ms);
  std::printf("compress: %zu configurations at %lld tokens, slowest layer %.2f ms (median of %d)\n",
              results.size(), static_cast<long long>(o.tokens), worst, o.reps);
  return 0;
}

void SetupCompress(CLI::App& sub, std::function<int()>* run) {
  auto o = std::make_shared<CompressBenchOptions>();
  sub.add_option("--tokens", o->tokens, "prompt length")->check(CLI::Range(64, 1 << 16));
  sub.add_option("--methods", o->methods, "comma-separated compression specs");
  sub.add_option("--budgets", o->budgets, "comma-separated kept fractions");
  sub.add_option("--reps", o->reps, "repetitions per configuration")->check(CLI::Range(1, 1000));
  sub.add_option("--json", o->json, "write results as JSON");
  sub.add_option("--model", o->model, "also measure compression as a share of this model's prefill");
  sub.add_option("--corpus", o->corpus, "text for the real-model prompt");
  *run = [o] { return RunCompressBench(*o); };
}

}  // namespace

KVWIRE_BENCH_COMMAND(compress, "compression cost per layer and throughput", SetupCompress);

}  // namespace kvwire::bench
