// kvwire-bench fidelity-question: compression BEFORE the question is known.
//
// With prefix reuse a document's cache is compressed once and questions arrive later, so the
// compressor cannot look at the question. Each episode here is a document (an open user turn,
// ChatML) and a question appended after compression ("\n\n" + question, the user turn closed,
// the assistant turn opened):
//   1. the document is prefilled once (its keys, values and last-window queries kept; with
//      --gates, the learned gate's scores from the attention inputs) and scored once by
//      reconstruction (compress/recon.h, same-turn prompt);
//   2. the uncompressed cache answers the question greedily (up to --answer-tokens tokens);
//   3. every method x budget compresses the same capture; the question and the reference answer
//      are teacher-forced over the compressed cache: mean KL(full || compressed) per answer
//      token and top-1 agreement (rows predicting each answer token and the token after it);
//      retrieval episodes (passkey, multi-key needles) are also answered greedily from the
//      compressed cache and count as retrieved when the answer holds the expected digits, as a
//      share of those the uncompressed cache gets right.
// Window-based scorers (snapkv, defensive) see only the document's tail here, never the
// question; recon and gate are query-agnostic by construction.
// Also measured side by side: the reconstruction passes' (and the gates') time over the
// document's prefill time. Writes JSON (--json), a PNG (--plot), a summary line last.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/command.h"
#include "bench/fidelity_data.h"
#include "bench/stats.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/compress/gate.h"
#include "kvwire/compress/recon.h"
#include "kvwire/config.h"
#include "prefill_node/compressing_prefill.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr int kRetrievalAnswerTokens = 20;
constexpr const char* kQuestions[] = {
    "Summarize the text above in two sentences.",
    "Which terms does the text above explain? List them.",
    "Quote the first sentence of the text above exactly.",
};

struct QuestionOptions {
  std::string model, corpus = kDefaultCorpus, json, plot, gates;
  // defensive/global/merge is the control for recon/global/merge: same allocator, window scores.
  std::string methods =
      "recon/uniform,recon/uniform/merge,recon+critical/uniform/merge,recon/global/merge,"
      "snapkv/uniform,snapkv/uniform/merge,defensive/uniform,defensive/uniform/merge,"
      "defensive/global/merge,defensive+critical/uniform,defensive+critical/uniform/merge";
  std::string gate_methods = "gate/uniform,gate/uniform/merge,gate/global/merge";
  std::string budgets = "0.1,0.2,0.35,0.5";
  std::string contexts = "1024,2048";
  int answer_tokens = 48;
  int retrieval_tasks = 5;  // of each kind
  int retrieval_chars = 2000;
  int recon_chunk = 512;
  int cost_reps = 3;
  int threads = 2;
  uint32_t seed = 4321;
};

// A document whose cache is compressed before `question` is appended.
struct Episode {
  std::string kind;               // "qa", "passkey" or "multikey"
  std::vector<int32_t> context;   // system turn, user header, document (turn left open)
  std::vector<int32_t> question;  // "\n\n" + question, end of user turn, assistant header
  std::string expected;           // retrieval: digits the answer must contain
};

struct Method {
  std::string name;
  float budget;
  std::unique_ptr<compress::Compressor> compressor;
};

struct Tally {
  double kl = 0, top1 = 0;
  int answered = 0;  // episodes in kl/top1
  int retrieved = 0;
};

struct Cost {
  int64_t tokens = 0;
  double prefill = 0, recon = 0, gate = 0;  // seconds
};

// KL(p || q) of two logit rows and whether their argmax agrees.
std::pair<double, bool> RowDivergence(const float* p, const float* q, int64_t V) {
  const double mp = *std::max_element(p, p + V), mq = *std::max_element(q, q + V);
  double zp = 0, zq = 0;
  for (int64_t i = 0; i < V; ++i) {
    zp += std::exp(p[i] - mp);
    zq += std::exp(q[i] - mq);
  }
  const double lzp = mp + std::log(zp), lzq = mq + std::log(zq);
  double kl = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double lp = p[i] - lzp;
    kl += std::exp(lp) * (lp - (q[i] - lzq));
  }
  const bool same = std::max_element(p, p + V) - p == std::max_element(q, q + V) - q;
  return {std::max(0.0, kl), same};
}

class QuestionBench {
 public:
  QuestionBench(const runtime::Model& model, const QuestionOptions& o)
      : model_(model), cfg_(model.config()), runner_(model, o.threads) {
    for (int l = 0; l < cfg_.n_layers; ++l) {
      wo_.push_back(prefill::DequantizeOutputProjection(model, l));
    }
  }

  absl::Status Init(const runtime::Tokenizer& tok, const QuestionOptions& o) {
    recon_.chunk_tokens = o.recon_chunk;
    KVWIRE_ASSIGN_OR_RETURN(recon_.prompt,
                            compress::BuildReconPrompt(tok, compress::ReconTurn::kSameTurn));
    stop1_ = tok.eos_id();
    stop2_ = tok.im_end_id();
    return LoadGates(o.gates);
  }
  bool has_gates() const { return gate_scorer_ != nullptr; }

  // Prefill, capture and external scores of an episode's document.
  absl::Status Load(const Episode& e) {
    const int64_t L = static_cast<int64_t>(e.context.size());
    L_ = L;
    keys_.assign(cfg_.n_layers, {});
    values_.assign(cfg_.n_layers, {});
    queries_.assign(cfg_.n_layers, {});
    gate_scores_.assign(cfg_.n_layers, {});
    Cost gate_time;  // the cost is measured apart (MeasureCost)
    runtime::ForwardOptions opt;
    opt.window = static_cast<int>(std::min<int64_t>(L, 32));
    opt.on_layer = [&](const runtime::PrefillLayer& pl) { return Keep(pl, &gate_time); };
    KVWIRE_RETURN_IF_ERROR(runner_.Prefill(e.context, opt, &full_).status());
    KVWIRE_ASSIGN_OR_RETURN(
        recon_scores_,
        compress::ReconScoresForCache(runner_, model_, e.context, &full_, recon_, runner_.pool()));
    return absl::OkStatus();
  }

  absl::StatusOr<cache::KvCache> Compress(const compress::Compressor& comp) {
    std::vector<compress::LayerInput> inputs(cfg_.n_layers);
    const int64_t w = std::min<int64_t>(L_, 32);
    for (int l = 0; l < cfg_.n_layers; ++l) {
      compress::LayerInput& in = inputs[l];
      in.layer = l;
      in.n_tokens = L_;
      in.n_heads = cfg_.n_heads;
      in.n_kv_heads = cfg_.n_kv_heads;
      in.head_dim = cfg_.head_dim;
      in.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
      in.keys = keys_[l].data();
      in.values = values_[l].data();
      in.queries = queries_[l].data();
      in.n_queries = w;
      in.wo = wo_[l].data();
      in.hidden = cfg_.hidden;
      const bool gate = comp.spec().scorer == compress::ScorerKind::kGate;
      const std::vector<float>& scores = gate ? gate_scores_[l] : recon_scores_[l];
      in.external_scores = scores.empty() ? nullptr : scores.data();
    }
    KVWIRE_ASSIGN_OR_RETURN(std::vector<cache::LayerCache> layers,
                            comp.CompressAll(inputs, runner_.pool()));
    cache::KvCache cache = cache::KvCache::Empty(cfg_.cache_shape(), static_cast<int32_t>(L_));
    cache.layers = std::move(layers);
    return cache;
  }

  const cache::KvCache& full() const { return full_; }

  // Prefill (with the gates, if any, timed inside it) and the reconstruction passes of `context`,
  // alternately `reps` times: median seconds of each.
  absl::StatusOr<Cost> MeasureCost(absl::Span<const int32_t> context, int reps) {
    std::vector<double> prefill, recon, gate;
    for (int r = 0; r < reps; ++r) {
      Cost once;
      gate_scores_.assign(cfg_.n_layers, {});
      runtime::ForwardOptions opt;
      opt.on_layer = [&](const runtime::PrefillLayer& pl) { return GateLayer(pl, &once); };
      cache::KvCache cache;
      auto start = Clock::now();
      KVWIRE_RETURN_IF_ERROR(runner_.Prefill(context, opt, &cache).status());
      prefill.push_back(Since(start) - once.gate);
      gate.push_back(once.gate);
      start = Clock::now();
      KVWIRE_RETURN_IF_ERROR(
          compress::ReconScoresForCache(runner_, model_, context, &cache, recon_, runner_.pool())
              .status());
      recon.push_back(Since(start));
    }
    return Cost{static_cast<int64_t>(context.size()), Median(prefill), Median(recon), Median(gate)};
  }

  // Logits [n][vocab] of `tokens` fed after the document over a copy of `cache`.
  absl::StatusOr<std::vector<float>> Teacher(cache::KvCache cache,
                                             absl::Span<const int32_t> tokens) {
    runtime::ForwardOptions opt;
    opt.all_logits = true;
    return runner_.Forward(tokens, cache.original_length, opt, &cache);
  }

  // The greedy answer to `question` over a copy of `cache`, without the stop token.
  absl::StatusOr<std::vector<int32_t>> Answer(cache::KvCache cache,
                                              absl::Span<const int32_t> question, int max_tokens) {
    const int32_t L = cache.original_length;
    KVWIRE_ASSIGN_OR_RETURN(std::vector<float> logits, runner_.Forward(question, L, {}, &cache));
    std::vector<int32_t> out;
    int32_t pos = L + static_cast<int32_t>(question.size());
    for (int g = 0; g < max_tokens; ++g) {
      const int32_t next = runtime::ArgMax(logits);
      if (next == stop1_ || next == stop2_) break;
      out.push_back(next);
      KVWIRE_ASSIGN_OR_RETURN(logits, runner_.Decode(next, pos++, &cache));
    }
    return out;
  }

 private:
  absl::Status Keep(const runtime::PrefillLayer& pl, Cost* cost) {
    const size_t kv = static_cast<size_t>(pl.n_tokens) * cfg_.n_kv_heads * cfg_.head_dim;
    keys_[pl.layer].assign(pl.keys, pl.keys + kv);
    values_[pl.layer].assign(pl.values, pl.values + kv);
    queries_[pl.layer].assign(pl.window_queries,
                              pl.window_queries + pl.window * cfg_.n_heads * cfg_.head_dim);
    return GateLayer(pl, cost);
  }

  absl::Status LoadGates(const std::string& path) {
    if (path.empty()) return absl::OkStatus();
    KVWIRE_ASSIGN_OR_RETURN(gates_, compress::GateModel::Load(path));
    KVWIRE_RETURN_IF_ERROR(
        gates_.CheckModel(cfg_.n_layers, cfg_.hidden, cfg_.n_heads, cfg_.n_kv_heads));
    gate_scorer_ = std::make_unique<compress::GateScorer>(&gates_);
    return absl::OkStatus();
  }
  absl::Status GateLayer(const runtime::PrefillLayer& pl, Cost* cost) {
    if (gate_scorer_ == nullptr) return absl::OkStatus();
    const auto start = Clock::now();
    gate_scorer_->Score(pl.layer, pl.attn_input, pl.n_tokens, &gate_scores_[pl.layer],
                        runner_.pool());
    cost->gate += Since(start);
    return absl::OkStatus();
  }
  compress::GateModel gates_;
  std::unique_ptr<compress::GateScorer> gate_scorer_;

  const runtime::Model& model_;
  const runtime::ModelConfig& cfg_;
  runtime::Runner runner_;
  std::vector<std::vector<float>> wo_;
  compress::ReconOptions recon_;
  int32_t stop1_ = -1, stop2_ = -1;
  int64_t L_ = 0;
  cache::KvCache full_;
  std::vector<std::vector<float>> keys_, values_, queries_;     // [layer], as the hook gives them
  std::vector<std::vector<float>> recon_scores_, gate_scores_;  // [layer][n_kv_heads * L]
};

// The chat text around a user message: `open` + document is the context, "\n\n" + question +
// `close` the question.
struct UserTurn {
  std::string open, close;
};

absl::StatusOr<UserTurn> SplitUserTurn(const runtime::Tokenizer& tok) {
  const std::string marker = "DOCUMENT";
  const runtime::ChatMessage msg{"user", marker};
  KVWIRE_ASSIGN_OR_RETURN(const std::string text, tok.ApplyChatTemplate({&msg, 1}, true));
  const size_t at = text.find(marker);
  if (at == std::string::npos) return absl::FailedPreconditionError("unexpected chat template");
  return UserTurn{text.substr(0, at), text.substr(at + marker.size())};
}

Episode MakeEpisode(const runtime::Tokenizer& tok, const UserTurn& turn, std::string kind,
                    const std::vector<int32_t>& document, const std::string& question,
                    std::string expected) {
  const runtime::EncodeOptions special{.parse_special = true};
  Episode e{std::move(kind), tok.Encode(turn.open, special), {}, std::move(expected)};
  e.context.insert(e.context.end(), document.begin(), document.end());
  e.question = tok.Encode(absl::StrCat("\n\n", question), {});
  const std::vector<int32_t> close = tok.Encode(turn.close, special);
  e.question.insert(e.question.end(), close.begin(), close.end());
  return e;
}

absl::StatusOr<std::vector<Episode>> MakeEpisodes(const QuestionOptions& o,
                                                  const runtime::Tokenizer& tok,
                                                  const std::string& corpus) {
  KVWIRE_ASSIGN_OR_RETURN(const UserTurn turn, SplitUserTurn(tok));
  std::vector<Episode> episodes;
  std::mt19937 rng(o.seed);
  for (absl::string_view cs : absl::StrSplit(o.contexts, ',')) {
    int64_t L = 0;
    if (!absl::SimpleAtoi(cs, &L) || L < 64) {
      return absl::InvalidArgumentError(absl::StrCat("bad --contexts entry '", cs, "'"));
    }
    // English prose runs at about 4 characters per token: 8 is plenty; cut to exactly L tokens.
    const size_t chars = static_cast<size_t>(L) * 8;
    if (corpus.size() < chars + 2) return absl::InvalidArgumentError("corpus too short");
    size_t at = std::uniform_int_distribution<size_t>(0, corpus.size() - chars - 1)(rng);
    at = corpus.find(". ", at);  // start at a sentence
    at = at == std::string::npos ? 0 : at + 2;
    std::vector<int32_t> doc = tok.Encode(corpus.substr(at, chars));
    if (static_cast<int64_t>(doc.size()) < L) {
      return absl::InvalidArgumentError(absl::StrCat("corpus window too short for ", L, " tokens"));
    }
    doc.resize(L);
    for (const char* q : kQuestions) episodes.push_back(MakeEpisode(tok, turn, "qa", doc, q, ""));
  }
  for (const RetrievalTask& t :
       MakeRetrievalTasks(corpus, o.retrieval_tasks, o.retrieval_chars, o.seed + 1)) {
    // The task's prompt is the text with its needles, a blank line, then the question.
    const size_t split = t.prompt.rfind("\n\n");
    const std::string text = t.prompt.substr(0, split), question = t.prompt.substr(split + 2);
    episodes.push_back(MakeEpisode(tok, turn, t.kind, tok.Encode(text), question, t.expected));
  }
  return episodes;
}

absl::StatusOr<std::vector<Method>> MakeMethods(const QuestionOptions& o, bool gates) {
  std::string list = o.methods;
  if (gates) absl::StrAppend(&list, ",", o.gate_methods);
  std::vector<Method> methods;
  for (absl::string_view m : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    KVWIRE_ASSIGN_OR_RETURN(const auto spec, compress::CompressionSpec::Parse(m));
    if (spec.scorer == compress::ScorerKind::kGate && !gates) {
      return absl::InvalidArgumentError(absl::StrCat("method ", m, " needs --gates"));
    }
    for (absl::string_view b : absl::StrSplit(o.budgets, ',')) {
      float budget = 0;
      if (!absl::SimpleAtof(b, &budget)) {
        return absl::InvalidArgumentError(absl::StrCat("bad budget '", b, "'"));
      }
      KVWIRE_ASSIGN_OR_RETURN(compress::Compressor c, compress::Compressor::Create(spec, budget));
      methods.push_back(
          {spec.ToString(), budget, std::make_unique<compress::Compressor>(std::move(c))});
    }
  }
  return methods;
}

bool Holds(const runtime::Tokenizer& tok, const std::vector<int32_t>& ids, const std::string& s) {
  return tok.Decode(ids).value_or("").find(s) != std::string::npos;
}

// One episode over every method: the reference answer from the full cache, then KL/top-1 of that
// answer and, for retrieval, the compressed cache's own answer. Returns whether the full cache
// answered a retrieval episode correctly.
absl::StatusOr<bool> RunEpisode(const QuestionOptions& o, QuestionBench& bench,
                                const runtime::Tokenizer& tok, const Episode& e,
                                std::vector<Method>& methods, std::vector<Tally>& tallies) {
  const bool retrieval = !e.expected.empty();
  const int max_answer = retrieval ? kRetrievalAnswerTokens : o.answer_tokens;
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<int32_t> answer,
                          bench.Answer(bench.full(), e.question, max_answer));
  std::vector<int32_t> forced = e.question;
  forced.insert(forced.end(), answer.begin(), answer.end());
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> ref, bench.Teacher(bench.full(), forced));
  const bool full_ok = retrieval && Holds(tok, answer, e.expected);
  std::fprintf(stderr, "  full cache: \"%s\"%s\n", tok.Decode(answer).value_or("?").c_str(),
               retrieval ? (full_ok ? " (right)" : " (wrong)") : "");
  const int64_t V = tok.vocab_size(), first = static_cast<int64_t>(e.question.size()) - 1;
  const int64_t rows = static_cast<int64_t>(answer.size()) + 1;
  for (size_t m = 0; m < methods.size(); ++m) {
    KVWIRE_ASSIGN_OR_RETURN(const cache::KvCache comp, bench.Compress(*methods[m].compressor));
    KVWIRE_ASSIGN_OR_RETURN(const std::vector<float> got, bench.Teacher(comp, forced));
    double kl = 0, top1 = 0;
    for (int64_t r = first; r < first + rows; ++r) {
      const auto [d, same] = RowDivergence(ref.data() + r * V, got.data() + r * V, V);
      kl += d;
      top1 += same;
    }
    Tally& t = tallies[m];
    t.kl += kl / rows;
    t.top1 += top1 / rows;
    ++t.answered;
    bool ok = false;
    if (full_ok) {
      KVWIRE_ASSIGN_OR_RETURN(const auto ids, bench.Answer(comp, e.question, max_answer));
      ok = Holds(tok, ids, e.expected);
      t.retrieved += ok;
    }
    std::fprintf(stderr, "  %-34s b=%.2f  kl=%.4f top1=%.3f%s\n", methods[m].name.c_str(),
                 methods[m].budget, kl / rows, top1 / rows,
                 full_ok ? (ok ? " retrieved" : " missed") : "");
  }
  return full_ok;
}

void WriteJson(const QuestionOptions& o, const std::vector<Method>& methods,
               const std::vector<Tally>& tallies, const std::vector<Cost>& costs, int episodes,
               int retrieval_tasks, int full_correct, double seconds) {
  std::ofstream out(o.json);
  out << "{\n  \"mode\": \"question after compression\",\n  \"model\": \"" << o.model
      << "\",\n  \"corpus\": \"" << o.corpus << "\",\n  \"contexts\": \"" << o.contexts
      << "\",\n  \"questions_per_context\": " << std::size(kQuestions)
      << ",\n  \"answer_tokens\": " << o.answer_tokens << ",\n  \"episodes\": " << episodes
      << ",\n  \"retrieval_tasks\": " << retrieval_tasks
      << ",\n  \"retrieval_full_correct\": " << full_correct
      << ",\n  \"recon_chunk_tokens\": " << o.recon_chunk << ",\n  \"cost_reps\": " << o.cost_reps
      << ",\n  \"gates\": " << (o.gates.empty() ? "null" : absl::StrCat("\"", o.gates, "\""))
      << ",\n  \"seconds\": " << absl::StrFormat("%.1f", seconds) << ",\n  \"cost\": [\n";
  for (size_t i = 0; i < costs.size(); ++i) {
    const Cost& c = costs[i];
    out << absl::StrFormat(
        "    {\"tokens\": %d, \"prefill_s\": %.4f, \"recon_s\": %.4f, \"gate_s\": %.4f, "
        "\"recon_over_prefill\": %.4f, \"gate_over_prefill\": %.5f}%s\n",
        c.tokens, c.prefill, c.recon, c.gate, c.recon / c.prefill, c.gate / c.prefill,
        i + 1 < costs.size() ? "," : "");
  }
  out << "  ],\n  \"results\": [\n";
  for (size_t m = 0; m < methods.size(); ++m) {
    const Tally& t = tallies[m];
    const std::string rel =
        full_correct > 0 ? absl::StrFormat("%.4f", double(t.retrieved) / full_correct) : "null";
    out << absl::StrFormat(
        "    {\"method\": \"%s\", \"budget\": %.3f, \"kl\": %.6f, \"top1_agreement\": %.5f, "
        "\"retrieval_rel\": %s, \"retrieved\": %d}%s\n",
        methods[m].name, methods[m].budget, t.kl / t.answered, t.top1 / t.answered, rel,
        t.retrieved, m + 1 < methods.size() ? "," : "");
  }
  out << "  ]\n}\n";
}

void PrintTable(const std::vector<Method>& methods, const std::vector<Tally>& tallies,
                int full_correct) {
  std::printf("%-34s %6s %9s %7s %9s\n", "method", "budget", "kl", "top1", "retrieval");
  for (size_t m = 0; m < methods.size(); ++m) {
    const Tally& t = tallies[m];
    std::printf("%-34s %6.2f %9.4f %7.3f %9s\n", methods[m].name.c_str(), methods[m].budget,
                t.kl / t.answered, t.top1 / t.answered,
                full_correct > 0
                    ? absl::StrFormat("%.2f", double(t.retrieved) / full_correct).c_str()
                    : "n/a");
  }
}

absl::Status Run(const QuestionOptions& o) {
  const auto start = Clock::now();
  KVWIRE_ASSIGN_OR_RETURN(const auto model, runtime::Model::Load(o.model));
  KVWIRE_ASSIGN_OR_RETURN(const auto tok, runtime::LoadTokenizer(model->gguf()));
  KVWIRE_ASSIGN_OR_RETURN(const std::string corpus, LoadCorpus(o.corpus));
  QuestionBench bench(*model, o);
  KVWIRE_RETURN_IF_ERROR(bench.Init(*tok, o));
  KVWIRE_ASSIGN_OR_RETURN(std::vector<Method> methods, MakeMethods(o, bench.has_gates()));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<Episode> episodes, MakeEpisodes(o, *tok, corpus));
  std::vector<Tally> tallies(methods.size());
  std::vector<Cost> costs;
  int full_correct = 0, retrieval_tasks = 0;
  for (size_t i = 0; i < episodes.size(); ++i) {
    const Episode& e = episodes[i];
    const bool new_document = i == 0 || e.context != episodes[i - 1].context;
    if (new_document && e.kind == "qa") {
      KVWIRE_ASSIGN_OR_RETURN(const Cost cost, bench.MeasureCost(e.context, o.cost_reps));
      costs.push_back(cost);
      std::fprintf(stderr,
                   "fidelity-question: document of %lld tokens, medians of %d: prefill %.2f s, "
                   "recon %.2f s (%.2fx), gate %.4f s\n",
                   static_cast<long long>(cost.tokens), o.cost_reps, cost.prefill, cost.recon,
                   cost.recon / cost.prefill, cost.gate);
    }
    if (new_document) KVWIRE_RETURN_IF_ERROR(bench.Load(e));
    std::fprintf(stderr, "fidelity-question: episode %zu/%zu (%s)\n", i + 1, episodes.size(),
                 e.kind.c_str());
    KVWIRE_ASSIGN_OR_RETURN(const bool ok, RunEpisode(o, bench, *tok, e, methods, tallies));
    retrieval_tasks += !e.expected.empty();
    full_correct += ok;
  }
  PrintTable(methods, tallies, full_correct);
  const double seconds = Since(start);
  if (!o.json.empty()) {
    WriteJson(o, methods, tallies, costs, static_cast<int>(episodes.size()), retrieval_tasks,
              full_correct, seconds);
  }
  if (!o.plot.empty() && !o.json.empty()) {
    const std::string cmd = absl::StrCat(KVWIRE_SOURCE_DIR "/.venv/bin/python " KVWIRE_SOURCE_DIR
                                                           "/bench/plot_fidelity_question.py ",
                                         o.json, " ", o.plot);
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "plotting failed (%s)\n", cmd.c_str());
  }
  double recon_ratio = 0;
  for (const Cost& c : costs) recon_ratio += c.recon / c.prefill / costs.size();
  std::printf(
      "fidelity-question: %zu configurations, %zu episodes (%d retrieval, %d answered with the "
      "full cache), recon costs %.2fx the prefill on average, %.0f s\n",
      methods.size(), episodes.size(), retrieval_tasks, full_correct, recon_ratio, seconds);
  return absl::OkStatus();
}

void Setup(CLI::App& sub, std::function<int()>* run) {
  auto o = std::make_shared<QuestionOptions>();
  sub.add_option("--model", o->model, "GGUF model (SmolLM2-135M-Instruct)")->required();
  sub.add_option("--corpus", o->corpus, "UTF-8 text (or .gz) to draw documents from");
  sub.add_option("--methods", o->methods, "comma-separated compression specs");
  sub.add_option("--gates", o->gates, "learned gate file: adds --gate-methods");
  sub.add_option("--gate-methods", o->gate_methods, "methods run when --gates is given");
  sub.add_option("--budgets", o->budgets, "comma-separated kept fractions");
  sub.add_option("--contexts", o->contexts, "document lengths in tokens, one per QA document");
  sub.add_option("--answer-tokens", o->answer_tokens, "reference answer length for QA")
      ->check(CLI::Range(1, 1024));
  sub.add_option("--retrieval-tasks", o->retrieval_tasks, "passkey and multi-key tasks, each")
      ->check(CLI::Range(0, 100));
  sub.add_option("--retrieval-chars", o->retrieval_chars, "characters of text around the needles");
  sub.add_option("--recon-chunk", o->recon_chunk, "context tokens per reconstruction pass")
      ->check(CLI::Range(1, 1 << 20));
  sub.add_option("--cost-reps", o->cost_reps,
                 "alternate prefill/reconstruction timings per document")
      ->check(CLI::Range(1, 100));
  sub.add_option("--threads", o->threads, "CPU threads")->check(CLI::Range(1, 256));
  sub.add_option("--seed", o->seed, "seed for documents and needles");
  sub.add_option("--json", o->json, "write results as JSON");
  sub.add_option("--plot", o->plot, "write a PNG plot (needs --json)");
  *run = [o] {
    const absl::Status s = Run(*o);
    if (s.ok()) return 0;
    std::fprintf(stderr, "kvwire-bench fidelity-question: %s\n", s.ToString().c_str());
    return 1;
  };
}

const BenchRegistrar kRegistrar("fidelity-question",
                                "quality when the cache is compressed before the question", Setup);

}  // namespace
}  // namespace kvwire::bench
