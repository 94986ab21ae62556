// kvwire-bench fidelity: how much each compression method changes the model, on real text.
//
// For every context (corpus windows of --contexts tokens) the prompt is prefilled once with the
// full cache, every layer's keys, values and queries are kept, and each method x budget compresses
// that same capture. Then:
//   kl, top1_agreement  teacher-forced continuation of --continuation tokens over the compressed
//                       cache vs the full cache: mean KL(full || compressed) per token, and the
//                       share of positions where the argmax agrees;
//   top1_accuracy       share of continuation positions whose argmax is the text's actual next
//                       token, next to the uncompressed cache's own accuracy (full_top1_accuracy);
//   attn_rel_err        per layer, the continuation's queries (taken from the full run) attend
//                       over the compressed prompt cache vs the full one: ||o_c - o_f|| / ||o_f||
//                       (32 evenly spaced continuation queries);
//   retrieval_rel       passkey and multi-key questions answered (greedy) from the compressed
//                       cache, as a fraction of those the uncompressed cache answers.
// Writes JSON (--json) and a PNG (--plot, via bench/plot_fidelity.py), prints a summary last.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/command.h"
#include "absl/strings/numbers.h"
#include "kvwire/config.h"
#include "bench/fidelity_data.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/kernels/attention.h"
#include "prefill_node/compressing_prefill.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::bench {
namespace {

using runtime::Runner;

constexpr int64_t kAttnQueries = 32;
constexpr int kAnswerTokens = 20;

struct FidelityOptions {
  std::string model, corpus = kDefaultCorpus, json, plot;
  std::string methods =
      "window/uniform,window/uniform/merge,h2o/uniform,h2o/uniform/merge,snapkv/uniform,"
      "snapkv/uniform/merge,defensive/uniform,defensive/uniform/merge,snapkv+critical/uniform,"
      "snapkv+critical/uniform/merge,snapkv/adaptive/merge,defensive+critical/adaptive/merge,"
      "defensive+recent/uniform/merge,defensive+recent/adaptive/merge";
  std::string budgets = "0.05,0.1,0.2,0.35,0.5,1.0";
  std::string contexts = "1024,1536,2048,2560,3072,4096";
  int continuation = 200;
  int retrieval_tasks = 3;  // of each kind
  int retrieval_chars = 3000;
  int threads = 2;
  uint32_t seed = 1234;
};

// One prefill's per-layer tensors, kept so every method compresses the same capture.
struct Capture {
  int64_t L = 0;
  std::vector<float> last_logits;
  std::vector<std::vector<float>> keys, values, queries;  // [layer] -> [L][..][d]
};

struct Score {
  double kl = 0, top1 = 0, accuracy = 0, attn = 0;
  int retrieved = 0;
  std::vector<double> attn_per_layer;
};

class Evaluator {
 public:
  Evaluator(const runtime::Model& model, const FidelityOptions& o)
      : model_(model), cfg_(model.config()), runner_(model, o.threads) {
    for (int l = 0; l < cfg_.n_layers; ++l) wo_.push_back(prefill::DequantizeOutputProjection(model, l));
  }

  absl::StatusOr<Capture> Prefill(absl::Span<const int32_t> tokens) {
    Capture c;
    c.L = static_cast<int64_t>(tokens.size());
    c.keys.resize(cfg_.n_layers);
    c.values.resize(cfg_.n_layers);
    c.queries.resize(cfg_.n_layers);
    runtime::ForwardOptions opt;
    opt.window = static_cast<int>(c.L);  // every query, for h2o
    opt.on_layer = [&](const runtime::PrefillLayer& pl) {
      const size_t kv = static_cast<size_t>(pl.n_tokens) * cfg_.n_kv_heads * cfg_.head_dim;
      c.keys[pl.layer].assign(pl.keys, pl.keys + kv);
      c.values[pl.layer].assign(pl.values, pl.values + kv);
      c.queries[pl.layer].assign(pl.window_queries,
                                 pl.window_queries + pl.window * cfg_.n_heads * cfg_.head_dim);
      return absl::OkStatus();
    };
    cache::KvCache cache;
    KVWIRE_ASSIGN_OR_RETURN(c.last_logits, runner_.Prefill(tokens, opt, &cache));
    return c;
  }

  absl::StatusOr<cache::KvCache> Compress(const Capture& c, const compress::Compressor& comp) {
    std::vector<compress::LayerInput> inputs(cfg_.n_layers);
    const int64_t rows = comp.QueryRows(c.L);
    for (int l = 0; l < cfg_.n_layers; ++l) {
      compress::LayerInput& in = inputs[l];
      in.layer = l;
      in.n_tokens = c.L;
      in.n_heads = cfg_.n_heads;
      in.n_kv_heads = cfg_.n_kv_heads;
      in.head_dim = cfg_.head_dim;
      in.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
      in.keys = c.keys[l].data();
      in.values = c.values[l].data();
      in.queries = c.queries[l].data() + (c.L - rows) * cfg_.n_heads * cfg_.head_dim;
      in.n_queries = rows;
      in.wo = wo_[l].data();
      in.hidden = cfg_.hidden;
    }
    KVWIRE_ASSIGN_OR_RETURN(std::vector<cache::LayerCache> layers, comp.CompressAll(inputs, runner_.pool()));
    cache::KvCache cache = cache::KvCache::Empty(cfg_.cache_shape(), static_cast<int32_t>(c.L));
    cache.layers = std::move(layers);
    return cache;
  }

  // Teacher-forced logits [T][vocab] over a copy of `cache`; with `queries`, also the
  // continuation's post-RoPE queries per layer.
  absl::StatusOr<std::vector<float>> Continue(cache::KvCache cache, absl::Span<const int32_t> cont,
                                              std::vector<std::vector<float>>* queries) {
    runtime::ForwardOptions opt;
    opt.all_logits = true;
    if (queries != nullptr) {
      queries->assign(cfg_.n_layers, {});
      opt.window = static_cast<int>(cont.size());
      opt.on_layer = [&](const runtime::PrefillLayer& pl) {
        (*queries)[pl.layer].assign(pl.window_queries,
                                    pl.window_queries + pl.window * cfg_.n_heads * cfg_.head_dim);
        return absl::OkStatus();
      };
    }
    return runner_.Forward(cont, cache.original_length, opt, &cache);
  }

  // Mean over queries and heads of ||o_c - o_f|| / ||o_f|| for one layer, queries seeing the
  // whole prompt cache.
  double AttentionError(const cache::LayerCache& full, const cache::LayerCache& comp,
                        const std::vector<float>& queries, int64_t T) {
    const auto full_views = runtime::HeadViews(full), comp_views = runtime::HeadViews(comp);
    const kernels::AttentionShape shape = runtime::AttentionShapeFor(cfg_, 1);
    const int width = cfg_.n_heads * cfg_.head_dim;
    std::vector<float> of(width), oc(width);
    double total = 0;
    // Up to kAttnQueries evenly spaced continuation queries: enough for a stable mean.
    const int64_t n = std::min<int64_t>(T, kAttnQueries);
    for (int64_t k = 0; k < n; ++k) {
      const float* q = queries.data() + (k * T / n) * width;
      kernels::Attention(shape, q, full_views.data(), of.data(), nullptr);
      kernels::Attention(shape, q, comp_views.data(), oc.data(), nullptr);
      for (int h = 0; h < cfg_.n_heads; ++h) {
        double num = 0, den = 0;
        for (int c = 0; c < cfg_.head_dim; ++c) {
          const double a = of[h * cfg_.head_dim + c], b = oc[h * cfg_.head_dim + c];
          num += (a - b) * (a - b);
          den += a * a;
        }
        total += den > 0 ? std::sqrt(num / den) : 0.0;
      }
    }
    return total / (static_cast<double>(n) * cfg_.n_heads);
  }

  // Greedy answer from `cache`, the first token taken from the prefill's logits.
  absl::StatusOr<std::vector<int32_t>> Answer(cache::KvCache cache, const std::vector<float>& logits,
                                              int max_tokens, int32_t stop1, int32_t stop2) {
    std::vector<int32_t> out;
    std::vector<float> l = logits;
    for (int g = 0; g < max_tokens; ++g) {
      const int32_t next = runtime::ArgMax(l);
      if (next == stop1 || next == stop2) break;
      out.push_back(next);
      KVWIRE_ASSIGN_OR_RETURN(l, runner_.Decode(next, runtime::DecodePosition(cache, g), &cache));
    }
    return out;
  }

  const runtime::ModelConfig& config() const { return cfg_; }

 private:
  const runtime::Model& model_;
  const runtime::ModelConfig& cfg_;
  Runner runner_;
  std::vector<std::vector<float>> wo_;
};

void LogSoftmax(const float* x, int64_t n, std::vector<double>* out) {
  out->resize(n);
  const double m = *std::max_element(x, x + n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  const double lse = m + std::log(s);
  for (int64_t i = 0; i < n; ++i) (*out)[i] = x[i] - lse;
}

struct LogitComparison {
  double kl = 0;        // mean KL(full || comp) per row
  double agreement = 0;  // share of rows whose argmax agrees
  double accuracy = 0;   // share of rows t < T-1 whose compressed argmax is next[t + 1]
};

// Compares T rows of [T][V] logits; `next` holds the T teacher-forced tokens.
LogitComparison CompareLogits(const std::vector<float>& full, const std::vector<float>& comp,
                              absl::Span<const int32_t> next, int64_t V) {
  const int64_t T = static_cast<int64_t>(next.size());
  LogitComparison r;
  std::vector<double> lf, lc;
  for (int64_t t = 0; t < T; ++t) {
    const float* f = full.data() + t * V;
    const float* c = comp.data() + t * V;
    LogSoftmax(f, V, &lf);
    LogSoftmax(c, V, &lc);
    double k = 0;
    for (int64_t i = 0; i < V; ++i) k += std::exp(lf[i]) * (lf[i] - lc[i]);
    r.kl += std::max(0.0, k);
    const int64_t arg_c = std::max_element(c, c + V) - c;
    r.agreement += (std::max_element(f, f + V) - f) == arg_c;
    if (t + 1 < T) r.accuracy += arg_c == next[t + 1];
  }
  r.kl /= T;
  r.agreement /= T;
  r.accuracy /= std::max<int64_t>(1, T - 1);
  return r;
}

struct Config {
  std::string method;
  float budget;
  std::unique_ptr<compress::Compressor> compressor;
};

absl::StatusOr<std::vector<Config>> MakeConfigs(const FidelityOptions& o) {
  std::vector<Config> configs;
  for (absl::string_view m : absl::StrSplit(o.methods, ',')) {
    KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec, compress::CompressionSpec::Parse(m));
    for (absl::string_view b : absl::StrSplit(o.budgets, ',')) {
      float budget = 0;
      if (!absl::SimpleAtof(b, &budget)) return absl::InvalidArgumentError(absl::StrCat("bad budget '", b, "'"));
      KVWIRE_ASSIGN_OR_RETURN(compress::Compressor c, compress::Compressor::Create(spec, budget));
      configs.push_back({spec.ToString(), budget, std::make_unique<compress::Compressor>(std::move(c))});
    }
  }
  return configs;
}

std::string ChatPrompt(const runtime::Tokenizer& tok, const std::string& user) {
  const runtime::ChatMessage turn{"user", user};
  return *tok.ApplyChatTemplate({&turn, 1}, true);
}

// Returns the uncompressed cache's top-1 accuracy on the continuations.
absl::StatusOr<double> EvaluateContinuations(const FidelityOptions& o, Evaluator& ev,
                                             const runtime::Tokenizer& tok, const std::string& corpus,
                                             std::vector<Config>& configs, std::vector<Score>& scores) {
  const std::vector<int32_t> all = tok.Encode(corpus);
  std::mt19937 rng(o.seed);
  int n_contexts = 0;
  double full_accuracy = 0;
  for (absl::string_view cs : absl::StrSplit(o.contexts, ',')) {
    int64_t L = 0;
    if (!absl::SimpleAtoi(cs, &L) || L < 64) return absl::InvalidArgumentError("bad --contexts");
    const int64_t T = o.continuation;
    if (static_cast<int64_t>(all.size()) < L + T + 1) return absl::InvalidArgumentError("corpus too short");
    const int64_t start = std::uniform_int_distribution<int64_t>(0, all.size() - L - T - 1)(rng);
    const absl::Span<const int32_t> ctx(all.data() + start, L), cont(all.data() + start + L, T);
    std::fprintf(stderr, "fidelity: context %d (%lld tokens): prefill\n", n_contexts, static_cast<long long>(L));
    KVWIRE_ASSIGN_OR_RETURN(Capture cap, ev.Prefill(ctx));
    KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor keep_all,
                            compress::Compressor::Create(compress::CompressionSpec{}, 1.0f));
    KVWIRE_ASSIGN_OR_RETURN(cache::KvCache full, ev.Compress(cap, keep_all));
    std::vector<std::vector<float>> cont_q;
    KVWIRE_ASSIGN_OR_RETURN(std::vector<float> full_logits, ev.Continue(full, cont, &cont_q));
    const int64_t V = ev.config().vocab_size;
    full_accuracy += CompareLogits(full_logits, full_logits, cont, V).accuracy;
    for (size_t i = 0; i < configs.size(); ++i) {
      KVWIRE_ASSIGN_OR_RETURN(cache::KvCache comp, ev.Compress(cap, *configs[i].compressor));
      KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, ev.Continue(comp, cont, nullptr));
      const LogitComparison cmp = CompareLogits(full_logits, logits, cont, V);
      Score& s = scores[i];
      s.kl += cmp.kl;
      s.top1 += cmp.agreement;
      s.accuracy += cmp.accuracy;
      s.attn_per_layer.resize(ev.config().n_layers, 0.0);
      for (int l = 0; l < ev.config().n_layers; ++l) {
        s.attn_per_layer[l] += ev.AttentionError(full.layers[l], comp.layers[l], cont_q[l], T);
      }
      std::fprintf(stderr, "fidelity: context %d  %-36s b=%.2f  kl=%.4f top1=%.3f acc=%.3f\n",
                   n_contexts, configs[i].method.c_str(), configs[i].budget, cmp.kl, cmp.agreement,
                   cmp.accuracy);
    }
    ++n_contexts;
  }
  for (Score& s : scores) {
    s.kl /= n_contexts;
    s.top1 /= n_contexts;
    s.accuracy /= n_contexts;
    double sum = 0;
    for (double& a : s.attn_per_layer) sum += (a /= n_contexts);
    s.attn = sum / s.attn_per_layer.size();
  }
  return full_accuracy / n_contexts;
}

bool Contains(const std::string& answer, const std::string& expected) {
  return answer.find(expected) != std::string::npos;
}

// Returns how many tasks the uncompressed cache answers; fills scores[i].retrieved.
absl::StatusOr<int> EvaluateRetrieval(const FidelityOptions& o, Evaluator& ev,
                                      const runtime::Tokenizer& tok, const std::string& corpus,
                                      std::vector<Config>& configs, std::vector<Score>& scores) {
  const std::vector<RetrievalTask> tasks =
      MakeRetrievalTasks(corpus, o.retrieval_tasks, o.retrieval_chars, o.seed + 1);
  KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor keep_all,
                          compress::Compressor::Create(compress::CompressionSpec{}, 1.0f));
  int full_correct = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const std::vector<int32_t> ids = tok.Encode(ChatPrompt(tok, tasks[t].prompt), {.parse_special = true});
    KVWIRE_ASSIGN_OR_RETURN(Capture cap, ev.Prefill(ids));
    KVWIRE_ASSIGN_OR_RETURN(cache::KvCache full, ev.Compress(cap, keep_all));
    KVWIRE_ASSIGN_OR_RETURN(auto full_ids, ev.Answer(full, cap.last_logits, kAnswerTokens, tok.eos_id(), tok.im_end_id()));
    const std::string full_answer = tok.Decode(full_ids).value_or("");
    const bool full_ok = Contains(full_answer, tasks[t].expected);
    full_correct += full_ok;
    std::fprintf(stderr, "fidelity: %s task %zu (%zu tokens): expected %s, full cache says \"%s\"%s\n",
                 tasks[t].kind.c_str(), t, ids.size(), tasks[t].expected.c_str(), full_answer.c_str(),
                 full_ok ? "" : " (wrong)");
    for (size_t i = 0; i < configs.size(); ++i) {
      KVWIRE_ASSIGN_OR_RETURN(cache::KvCache comp, ev.Compress(cap, *configs[i].compressor));
      KVWIRE_ASSIGN_OR_RETURN(auto ans, ev.Answer(comp, cap.last_logits, kAnswerTokens, tok.eos_id(), tok.im_end_id()));
      scores[i].retrieved += Contains(tok.Decode(ans).value_or(""), tasks[t].expected);
    }
  }
  return full_correct;
}

void WriteJson(const FidelityOptions& o, const std::vector<Config>& configs,
               const std::vector<Score>& scores, double full_accuracy, int full_correct, int tasks) {
  std::ofstream out(o.json);
  out << "{\n  \"default_method\": \"" << compress::kDefaultMethod << "\",\n"
      << "  \"model\": \"" << o.model << "\",\n  \"corpus\": \"" << o.corpus << "\",\n"
      << "  \"contexts\": \"" << o.contexts << "\",\n  \"continuation_tokens\": " << o.continuation
      << ",\n  \"full_top1_accuracy\": " << absl::StrFormat("%.5f", full_accuracy)
      << ",\n  \"retrieval_tasks\": " << tasks << ",\n  \"retrieval_full_correct\": " << full_correct
      << ",\n  \"results\": [\n";
  for (size_t i = 0; i < configs.size(); ++i) {
    const Score& s = scores[i];
    std::string layers;
    for (size_t l = 0; l < s.attn_per_layer.size(); ++l) {
      absl::StrAppendFormat(&layers, "%s%.5f", l ? ", " : "", s.attn_per_layer[l]);
    }
    const std::string retrieval =
        full_correct > 0 ? absl::StrFormat("%.4f", static_cast<double>(s.retrieved) / full_correct) : "null";
    out << absl::StrFormat(
        "    {\"method\": \"%s\", \"budget\": %.3f, \"kl\": %.6f, \"top1_agreement\": %.5f, "
        "\"top1_accuracy\": %.5f, \"retrieval_rel\": %s, \"retrieved\": %d, \"attn_rel_err\": %.6f, "
        "\"attn_rel_err_per_layer\": [%s]}%s\n",
        configs[i].method, configs[i].budget, s.kl, s.top1, s.accuracy, retrieval, s.retrieved, s.attn, layers,
        i + 1 < configs.size() ? "," : "");
  }
  out << "  ]\n}\n";
}

int RunFidelity(const FidelityOptions& o) {
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "kvwire-bench fidelity: %s\n", s.ToString().c_str());
    return 1;
  };
  auto model = runtime::Model::Load(o.model);
  if (!model.ok()) return fail(model.status());
  auto tok = runtime::LoadTokenizer((*model)->gguf());
  if (!tok.ok()) return fail(tok.status());
  auto corpus = LoadCorpus(o.corpus);
  if (!corpus.ok()) return fail(corpus.status());
  auto configs = MakeConfigs(o);
  if (!configs.ok()) return fail(configs.status());
  const auto start = std::chrono::steady_clock::now();
  Evaluator ev(**model, o);
  std::vector<Score> scores(configs->size());
  auto full_accuracy = EvaluateContinuations(o, ev, **tok, *corpus, *configs, scores);
  if (!full_accuracy.ok()) return fail(full_accuracy.status());
  auto full_correct = EvaluateRetrieval(o, ev, **tok, *corpus, *configs, scores);
  if (!full_correct.ok()) return fail(full_correct.status());
  const int tasks = 2 * o.retrieval_tasks;
  std::printf("%-36s %6s %9s %7s %7s %9s %9s\n", "method", "budget", "kl", "top1", "acc", "retrieval",
              "attn_err");
  for (size_t i = 0; i < configs->size(); ++i) {
    const Score& s = scores[i];
    std::printf("%-36s %6.2f %9.4f %7.3f %7.3f %9s %9.4f\n", (*configs)[i].method.c_str(),
                (*configs)[i].budget, s.kl, s.top1, s.accuracy,
                *full_correct > 0 ? absl::StrFormat("%.2f", static_cast<double>(s.retrieved) / *full_correct).c_str() : "n/a",
                s.attn);
  }
  if (!o.json.empty()) WriteJson(o, *configs, scores, *full_accuracy, *full_correct, tasks);
  if (!o.plot.empty() && !o.json.empty()) {
    const std::string cmd = absl::StrCat(KVWIRE_SOURCE_DIR "/.venv/bin/python ", KVWIRE_SOURCE_DIR,
                                         "/bench/plot_fidelity.py ", o.json, " ", o.plot);
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "fidelity: plotting failed (%s)\n", cmd.c_str());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fidelity: %zu configurations, contexts %s tokens, %d continuation tokens (uncompressed "
              "top-1 accuracy %.3f), %d retrieval tasks (%d answered with the full cache), %.0f s\n",
              configs->size(), o.contexts.c_str(), o.continuation, *full_accuracy, tasks,
              *full_correct, secs);
  return 0;
}

void SetupFidelity(CLI::App& sub, std::function<int()>* run) {
  auto o = std::make_shared<FidelityOptions>();
  sub.add_option("--model", o->model, "GGUF model (SmolLM2-135M-Instruct)")->required();
  sub.add_option("--corpus", o->corpus, "UTF-8 text (or .gz) to draw contexts from");
  sub.add_option("--methods", o->methods, "comma-separated compression specs");
  sub.add_option("--budgets", o->budgets, "comma-separated kept fractions");
  sub.add_option("--contexts", o->contexts, "comma-separated context lengths in tokens");
  sub.add_option("--continuation", o->continuation, "teacher-forced tokens after each context")
      ->check(CLI::Range(1, 4096));
  sub.add_option("--retrieval-tasks", o->retrieval_tasks, "passkey and multi-key tasks, each")
      ->check(CLI::Range(0, 100));
  sub.add_option("--retrieval-chars", o->retrieval_chars, "characters of text around the needles");
  sub.add_option("--threads", o->threads, "CPU threads")->check(CLI::Range(1, 256));
  sub.add_option("--seed", o->seed, "seed for context offsets and needles");
  sub.add_option("--json", o->json, "write results as JSON");
  sub.add_option("--plot", o->plot, "write a PNG plot (needs --json)");
  *run = [o] { return RunFidelity(*o); };
}

}  // namespace

KVWIRE_BENCH_COMMAND(fidelity, "compression quality against the uncompressed cache on real text",
                     SetupFidelity);

}  // namespace kvwire::bench
