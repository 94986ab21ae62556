// kvwire-train-gates — fits the learned eviction gates (kvwire/compress/gate.h) of a model to its
// recon scores (kvwire/compress/recon.h), without backpropagation through the model.
//
//   kvwire-train-gates --model M.gguf --out gates.bin [--corpus FILE] [--seed N] [--tokens N]
//                      [--val-tokens N] [--chunk N] [--epochs N] [--lr X] [--batch N]
//                      [--json FILE] [--overhead-runs N] [--rank 16] [--sinks 16]
//   kvwire-train-gates --model M.gguf --measure-only gates.bin [--overhead-runs N]
//
// The frozen model reads corpus chunks (an open user turn of the chat template followed by
// `--chunk` tokens of text); after each layer the prefill hook copies the attention inputs, then
// the recon passes score the chunk. Chunks for training and held-out validation come from
// disjoint halves of the corpus' token stream (the first 85 % and the rest). Each layer's gate is
// then fitted on its own (gate_train.h), layers in parallel. Prints the train and validation
// loss per epoch, then per layer how closely the gate follows recon on the held-out chunks
// (Spearman, top-10 % / top-20 % overlap, before and after training), and finally the cost of
// inline gate scoring in prefill and decode measured side by side with the plain forward.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/fidelity_data.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/gate.h"
#include "kvwire/compress/gate_train.h"
#include "kvwire/compress/recon.h"
#include "runtime/runner.h"
#include "runtime/tokenizer_gguf.h"
#include "tools/train_gates_overhead.h"

namespace kvwire::compress {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string model, out, json;
  std::string measure_only;  // a gate file: measure its overhead only
  std::string corpus = bench::kDefaultCorpus;
  uint32_t seed = 1;
  int64_t tokens = 8192;      // training tokens
  int64_t val_tokens = 2048;  // held-out tokens
  int64_t chunk = 1024;       // text tokens per chunk
  int threads = 2;
  int overhead_runs = 5;
  int rank = GateShape().rank;
  int sinks = GateShape().n_sinks;
  GateTrainOptions train;
};

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Tokens of an open user turn (system prompt included when the template injects one).
absl::StatusOr<std::vector<int32_t>> TurnPrefix(const runtime::Tokenizer& tok) {
  constexpr char kMarker[] = "\x01kvwire-marker\x01";
  const runtime::ChatMessage turn{"user", kMarker};
  KVWIRE_ASSIGN_OR_RETURN(const std::string text, tok.ApplyChatTemplate({&turn, 1}, false));
  return tok.Encode(text.substr(0, text.find(kMarker)), {.parse_special = true});
}

// `count` chunks of `len` text tokens from [begin, end) of `all`, consecutive from a seeded start.
std::vector<std::vector<int32_t>> Chunks(const std::vector<int32_t>& all, int64_t begin,
                                         int64_t end, int64_t len, int64_t count,
                                         const std::vector<int32_t>& prefix, std::mt19937& rng) {
  std::vector<std::vector<int32_t>> out;
  const int64_t span = end - begin;
  int64_t at = std::uniform_int_distribution<int64_t>(0, span - 1)(rng);
  for (int64_t c = 0; c < count; ++c) {
    if (at + len > span) at = 0;
    std::vector<int32_t>& chunk = out.emplace_back(prefix);
    chunk.insert(chunk.end(), all.begin() + begin + at, all.begin() + begin + at + len);
    at += len;
  }
  return out;
}

// Prefill of one chunk recording every layer's attention inputs, then its recon scores.
absl::Status Record(runtime::Runner& runner, const runtime::Model& model, const GateShape& shape,
                    const std::vector<int32_t>& chunk, const ReconOptions& recon,
                    std::vector<GateSamples>* per_layer) {
  const int64_t L = static_cast<int64_t>(chunk.size());
  std::vector<std::vector<float>> x(shape.n_layers);
  runtime::ForwardOptions options;
  options.on_layer = [&](const runtime::PrefillLayer& pl) {
    x[pl.layer].assign(pl.attn_input, pl.attn_input + pl.n_tokens * shape.hidden);
    return absl::OkStatus();
  };
  cache::KvCache cache;
  KVWIRE_RETURN_IF_ERROR(runner.Prefill(chunk, options, &cache).status());
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<std::vector<float>> scores,
                          ReconScoresForCache(runner, model, chunk, &cache, recon, runner.pool()));
  for (int l = 0; l < shape.n_layers; ++l) {
    KVWIRE_RETURN_IF_ERROR(RecordChunk(shape, x[l].data(), scores[l].data(), L, &(*per_layer)[l]));
  }
  return absl::OkStatus();
}

struct Plan {
  std::unique_ptr<runtime::Tokenizer> tok;
  std::vector<std::vector<int32_t>> train, val;  // chunks, turn prefix included
};

absl::StatusOr<Plan> MakePlan(const Flags& f, const runtime::Model& model) {
  KVWIRE_ASSIGN_OR_RETURN(const std::string corpus, bench::LoadCorpus(f.corpus));
  Plan p;
  KVWIRE_ASSIGN_OR_RETURN(p.tok, runtime::LoadTokenizer(model.gguf()));
  const std::vector<int32_t> all = p.tok->Encode(corpus);
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<int32_t> prefix, TurnPrefix(*p.tok));
  const int64_t split = static_cast<int64_t>(all.size()) * 85 / 100;
  if (split < f.chunk || static_cast<int64_t>(all.size()) - split < f.chunk) {
    return absl::InvalidArgumentError(absl::StrCat("corpus ", f.corpus, " has ", all.size(),
                                                   " tokens: too short for chunks of ", f.chunk));
  }
  std::mt19937 rng(f.seed);
  p.train = Chunks(all, 0, split, f.chunk, (f.tokens + f.chunk - 1) / f.chunk, prefix, rng);
  p.val = Chunks(all, split, static_cast<int64_t>(all.size()), f.chunk,
                 (f.val_tokens + f.chunk - 1) / f.chunk, prefix, rng);
  return p;
}

struct Data {
  std::vector<GateSamples> train, val;
};

absl::StatusOr<Data> Collect(const Plan& plan, runtime::Runner& runner, const runtime::Model& model,
                             const GateShape& shape) {
  ReconOptions recon;
  recon.turn = ReconTurn::kSameTurn;
  KVWIRE_ASSIGN_OR_RETURN(recon.prompt, BuildReconPrompt(*plan.tok, ReconTurn::kSameTurn));
  Data d;
  d.train.resize(shape.n_layers);
  d.val.resize(shape.n_layers);
  const auto start = Clock::now();
  const size_t total = plan.train.size() + plan.val.size();
  for (size_t c = 0; c < total; ++c) {
    const bool is_train = c < plan.train.size();
    const auto& chunk = is_train ? plan.train[c] : plan.val[c - plan.train.size()];
    KVWIRE_RETURN_IF_ERROR(
        Record(runner, model, shape, chunk, recon, is_train ? &d.train : &d.val));
    std::fprintf(stderr, "record: chunk %zu/%zu (%s, %zu tokens) %.1f s\n", c + 1, total,
                 is_train ? "train" : "held out", chunk.size(), Since(start));
  }
  return d;
}

struct LayerReport {
  GateAgreement before, after;
  double val_loss = 0;
};

std::vector<LayerReport> Train(const Flags& f, GateModel& gates, const Data& d,
                               kernels::ThreadPool* pool) {
  const GateShape& s = gates.shape();
  std::vector<LayerReport> report(s.n_layers);
  std::vector<std::unique_ptr<GateLayerTrainer>> trainers;
  for (int l = 0; l < s.n_layers; ++l) {
    report[l].before = MeasureAgreement(s, gates.layer(l), d.val[l]);
    trainers.push_back(std::make_unique<GateLayerTrainer>(s, &gates.mutable_layer(l), f.train, l));
  }
  std::vector<double> train_loss(s.n_layers), val_loss(s.n_layers);
  const auto start = Clock::now();
  for (int e = 0; e < f.train.epochs; ++e) {
    kernels::ParallelFor(pool, s.n_layers, 1, [&](int64_t b, int64_t end) {
      for (int64_t l = b; l < end; ++l) {
        train_loss[l] = trainers[l]->Epoch(d.train[l]);
        val_loss[l] = MeanGateLoss(s, gates.layer(l), d.val[l]);
      }
    });
    double tr = 0, va = 0;
    for (int l = 0; l < s.n_layers; ++l)
      tr += train_loss[l] / s.n_layers, va += val_loss[l] / s.n_layers;
    std::fprintf(stderr, "epoch %d/%d: train loss %.5f, validation loss %.5f (%.1f s)\n", e + 1,
                 f.train.epochs, tr, va, Since(start));
  }
  kernels::ParallelFor(pool, s.n_layers, 1, [&](int64_t b, int64_t end) {
    for (int64_t l = b; l < end; ++l) {
      report[l].after = MeasureAgreement(s, gates.layer(l), d.val[l]);
      report[l].val_loss = val_loss[l];
    }
  });
  return report;
}

std::string ReportJson(const Flags& f, const std::vector<LayerReport>& r, double record_s,
                       double train_s, const Overhead& o) {
  std::string layers;
  for (size_t l = 0; l < r.size(); ++l) {
    absl::StrAppendFormat(&layers,
                          "%s\n    {\"layer\": %d, \"spearman\": %.4f, \"top10\": %.4f, \"top20\": "
                          "%.4f, \"spearman_untrained\": %.4f, \"val_loss\": %.5f}",
                          l ? "," : "", l, r[l].after.spearman, r[l].after.top10, r[l].after.top20,
                          r[l].before.spearman, r[l].val_loss);
  }
  return absl::StrFormat(
      "{\n  \"corpus\": \"%s\", \"seed\": %d, \"train_tokens\": %d, \"val_tokens\": %d, "
      "\"chunk\": %d, \"epochs\": %d,\n  \"record_seconds\": %.1f, \"train_seconds\": %.1f,\n"
      "  \"prefill_overhead\": %.4f, \"decode_overhead\": %.4f, \"prefill_gate_share\": %.4f, "
      "\"decode_gate_share\": %.4f, \"overhead_prompt_tokens\": %d,\n"
      "  \"layers\": [%s\n  ]\n}\n",
      f.corpus, f.seed, f.tokens, f.val_tokens, f.chunk, f.train.epochs, record_s, train_s,
      o.prefill_gated / o.prefill_plain - 1, o.decode_gated / o.decode_plain - 1,
      o.prefill_scoring / o.prefill_plain, o.decode_scoring / o.decode_plain, o.prompt_tokens,
      layers);
}

void PrintAgreement(const std::vector<LayerReport>& r) {
  GateAgreement mean, before;
  for (size_t l = 0; l < r.size(); ++l) {
    std::printf(
        "layer %2zu: spearman %.3f (untrained %.3f), top-10%% overlap %.3f, top-20%% %.3f\n", l,
        r[l].after.spearman, r[l].before.spearman, r[l].after.top10, r[l].after.top20);
    mean.spearman += r[l].after.spearman / r.size();
    mean.top10 += r[l].after.top10 / r.size();
    mean.top20 += r[l].after.top20 / r.size();
    before.spearman += r[l].before.spearman / r.size();
    before.top10 += r[l].before.top10 / r.size();
    before.top20 += r[l].before.top20 / r.size();
  }
  std::printf(
      "mean over layers (held-out text): spearman %.3f, top-10%% overlap %.3f, top-20%% "
      "%.3f; untrained gates %.3f / %.3f / %.3f; chance 0 / 0.100 / 0.200\n",
      mean.spearman, mean.top10, mean.top20, before.spearman, before.top10, before.top20);
}

void PrintOverhead(const Overhead& o, int runs) {
  std::printf(
      "gate scoring overhead (medians of %d, side by side), prefill of %lld tokens: gated run "
      "%+.2f %% (%.3f s vs %.3f s), time inside the gate %.2f %% of the plain forward\n",
      runs, static_cast<long long>(o.prompt_tokens), 100 * (o.prefill_gated / o.prefill_plain - 1),
      o.prefill_gated, o.prefill_plain, 100 * o.prefill_scoring / o.prefill_plain);
  std::printf(
      "gate scoring overhead, decode of %lld tokens: gated run %+.2f %% (%.3f s vs %.3f s), time "
      "inside the gate %.2f %% of the plain forward\n",
      static_cast<long long>(o.decode_tokens), 100 * (o.decode_gated / o.decode_plain - 1),
      o.decode_gated, o.decode_plain, 100 * o.decode_scoring / o.decode_plain);
}

absl::StatusOr<GateShape> ModelShape(const Flags& f, const runtime::Model& model) {
  const runtime::ModelConfig& c = model.config();
  GateShape shape;
  shape.n_layers = c.n_layers;
  shape.hidden = c.hidden;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.rank = f.rank;
  shape.n_sinks = f.sinks;
  KVWIRE_RETURN_IF_ERROR(shape.Validate());
  return shape;
}

// --measure-only: the overhead of existing gates on the first held-out chunk, no training.
absl::Status MeasureOnly(const Flags& f, const runtime::Model& model, runtime::Runner& runner) {
  const runtime::ModelConfig& c = model.config();
  KVWIRE_ASSIGN_OR_RETURN(
      const GateModel gates,
      GateModel::LoadFor(f.measure_only, c.n_layers, c.hidden, c.n_heads, c.n_kv_heads));
  KVWIRE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(f, model));
  KVWIRE_ASSIGN_OR_RETURN(const Overhead o,
                          MeasureOverhead(runner, gates, plan.val.front(), f.overhead_runs));
  PrintOverhead(o, f.overhead_runs);
  return absl::OkStatus();
}

absl::Status Run(const Flags& f) {
  const auto start = Clock::now();
  KVWIRE_ASSIGN_OR_RETURN(auto model, runtime::Model::Load(f.model));
  runtime::Runner runner(*model, f.threads);
  if (!f.measure_only.empty()) return MeasureOnly(f, *model, runner);
  KVWIRE_ASSIGN_OR_RETURN(const GateShape shape, ModelShape(f, *model));
  KVWIRE_ASSIGN_OR_RETURN(GateModel gates, GateModel::Init(shape, f.seed));
  KVWIRE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(f, *model));
  KVWIRE_ASSIGN_OR_RETURN(const Data data, Collect(plan, runner, *model, shape));
  const double record_s = Since(start);
  const auto train_start = Clock::now();
  const std::vector<LayerReport> report = Train(f, gates, data, runner.pool());
  const double train_s = Since(train_start);
  KVWIRE_RETURN_IF_ERROR(gates.Save(f.out));
  PrintAgreement(report);
  KVWIRE_ASSIGN_OR_RETURN(const Overhead o,
                          MeasureOverhead(runner, gates, plan.val.front(), f.overhead_runs));
  PrintOverhead(o, f.overhead_runs);
  if (!f.json.empty()) {
    std::ofstream out(f.json);
    out << ReportJson(f, report, record_s, train_s, o);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", f.json));
  }
  std::printf("wrote %s: recording %.0f s, training %.0f s, total %.0f s\n", f.out.c_str(),
              record_s, train_s, Since(start));
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvwire::compress

int main(int argc, char** argv) {
  kvwire::compress::Flags f;
  CLI::App app{"fit learned eviction gates to recon scores"};
  app.add_option("--model", f.model, "GGUF model")->required();
  auto* out = app.add_option("--out", f.out, "gate file to write");
  app.add_option("--measure-only", f.measure_only,
                 "measure the scoring overhead of this gate file, train nothing")
      ->excludes(out);
  app.add_option("--corpus", f.corpus, "UTF-8 text (gzip allowed)");
  app.add_option("--seed", f.train.seed, "seed of initialisation, chunk choice and shuffling");
  app.add_option("--tokens", f.tokens, "training tokens")->check(CLI::Range(64, 1 << 22));
  app.add_option("--val-tokens", f.val_tokens, "held-out tokens")->check(CLI::Range(64, 1 << 22));
  app.add_option("--chunk", f.chunk, "text tokens per chunk")->check(CLI::Range(32, 8192));
  app.add_option("--epochs", f.train.epochs, "passes over the training tokens")
      ->check(CLI::Range(1, 1000));
  app.add_option("--lr", f.train.lr, "SGD learning rate")->check(CLI::Range(1e-6, 100.0));
  app.add_option("--momentum", f.train.momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--batch", f.train.batch, "tokens per SGD step")->check(CLI::Range(1, 1 << 16));
  app.add_option("--rank", f.rank, "gate query/key width d'")->check(CLI::Range(1, 256));
  app.add_option("--sinks", f.sinks, "learned sink keys per KV head")->check(CLI::Range(1, 256));
  app.add_option("--threads", f.threads, "CPU threads")->check(CLI::Range(1, 256));
  app.add_option("--json", f.json, "write the results as JSON");
  app.add_option("--overhead-runs", f.overhead_runs, "repetitions of the overhead measurement")
      ->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  if (f.out.empty() && f.measure_only.empty()) {
    std::fprintf(stderr, "kvwire-train-gates: --out is required\n");
    return 2;
  }
  f.seed = f.train.seed;
  const absl::Status st = kvwire::compress::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "kvwire-train-gates: %s\n", std::string(st.ToString()).c_str());
    return 1;
  }
  return 0;
}
