#include "kvwire/compress/recon.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/kernels/compress.h"
#include "runtime/tokenizer_gguf.h"

namespace kvwire::compress {
namespace {

// The template's text before and after a message's content, for a message placed as `turn`.
struct TurnFrame {
  std::string open, close;
};

absl::StatusOr<TurnFrame> FrameOf(const runtime::Tokenizer& tok, ReconTurn turn) {
  const std::string marker = kReconInstruction;
  const runtime::ChatMessage earlier{"user", "context"}, asked{"user", marker};
  std::string text;
  if (turn == ReconTurn::kSameTurn) {
    KVWIRE_ASSIGN_OR_RETURN(text, tok.ApplyChatTemplate({&asked, 1}, true));
  } else {
    // A turn that follows another one renders as the difference of the two conversations.
    const runtime::ChatMessage both[] = {earlier, asked};
    KVWIRE_ASSIGN_OR_RETURN(const std::string one, tok.ApplyChatTemplate({&earlier, 1}, false));
    KVWIRE_ASSIGN_OR_RETURN(const std::string two, tok.ApplyChatTemplate(both, true));
    if (two.compare(0, one.size(), one) != 0) {
      return absl::FailedPreconditionError(
          "chat template renders a turn differently when followed");
    }
    text = two.substr(one.size());
  }
  const size_t at = text.rfind(marker);
  if (at == std::string::npos) {
    return absl::FailedPreconditionError("chat template does not render message content verbatim");
  }
  TurnFrame frame{text.substr(0, at), text.substr(at + marker.size())};
  if (turn == ReconTurn::kSameTurn) frame.open = "\n\n";  // continue the open user turn
  return frame;
}

void Append(std::vector<int32_t>* out, const std::vector<int32_t>& more) {
  out->insert(out->end(), more.begin(), more.end());
}

// Tokens of pass `k`: its instruction turn followed by its context chunk.
std::vector<int32_t> PassTokens(const ReconPrompt& prompt, absl::Span<const int32_t> context,
                                int64_t begin, int64_t end, int tail_tokens) {
  std::vector<int32_t> tokens;
  if (begin == 0) {
    tokens = prompt.first;
  } else {
    tokens = prompt.part_head;
    const int64_t from = std::max<int64_t>(0, begin - tail_tokens);
    tokens.insert(tokens.end(), context.begin() + from, context.begin() + begin);
    Append(&tokens, prompt.part_tail);
  }
  tokens.insert(tokens.end(), context.begin() + begin, context.begin() + end);
  return tokens;
}

absl::Status CheckCache(const runtime::ModelConfig& cfg, const cache::KvCache& cache, int64_t L) {
  if (!(cache.shape == cfg.cache_shape()) || cache.original_length != L) {
    return absl::InvalidArgumentError(absl::StrCat(
        "recon: the cache is not a cache of the ", L,
        "-token context for this model (original length ", cache.original_length, ")"));
  }
  for (const cache::LayerCache& layer : cache.layers) {
    for (const cache::HeadSegment& seg : layer.heads) {
      if (static_cast<int64_t>(seg.size()) != L || seg.positions.back() != L - 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("recon: needs the full uncompressed context cache; a head holds ",
                         seg.size(), " entries for a ", L, "-token context"));
      }
    }
  }
  return absl::OkStatus();
}

// Drops every entry past the context's first L from every segment.
void Truncate(cache::KvCache* cache, int64_t L, int d) {
  for (cache::LayerCache& layer : cache->layers) {
    for (cache::HeadSegment& seg : layer.heads) {
      seg.positions.resize(L);
      seg.log_votes.resize(L);
      seg.keys.resize(L * d);
      seg.values.resize(L * d);
    }
  }
}

// Truncates the cache back to the context when it goes out of scope (also on an error).
class TruncateOnExit {
 public:
  TruncateOnExit(cache::KvCache* cache, int64_t L, int head_dim)
      : cache_(cache), L_(L), d_(head_dim) {}
  ~TruncateOnExit() { Truncate(cache_, L_, d_); }
  TruncateOnExit(const TruncateOnExit&) = delete;
  TruncateOnExit& operator=(const TruncateOnExit&) = delete;

 private:
  cache::KvCache* cache_;
  int64_t L_;
  int d_;
};

// Folds one pass's attention at `layer` into scores[layer]: the layer cache holds the context's
// L entries followed by the pass's n entries; `queries` are the pass's n post-RoPE queries.
void FoldLayer(const runtime::ModelConfig& cfg, const cache::LayerCache& layer,
               const float* queries, int64_t n, int64_t L, kernels::ThreadPool* pool,
               std::vector<float>* scores) {
  std::vector<int32_t> query_pos(n);
  std::iota(query_pos.begin(), query_pos.end(), static_cast<int32_t>(L));
  const kernels::QueryBlock qb{queries,
                               n,
                               query_pos.data(),
                               cfg.n_heads,
                               cfg.n_kv_heads,
                               cfg.head_dim,
                               1.0f / std::sqrt(static_cast<float>(cfg.head_dim))};
  std::vector<float> max_prob;
  for (int h = 0; h < cfg.n_kv_heads; ++h) {
    const cache::HeadSegment& seg = layer.heads[h];
    max_prob.assign(seg.size(), 0.0f);
    kernels::HeadAttentionStats stats;
    stats.max_prob = max_prob.data();
    const kernels::StridedRows keys{seg.keys.data(), cfg.head_dim,
                                    static_cast<int64_t>(seg.size())};
    kernels::AttentionStats(qb, h, keys, seg.positions.data(), stats, pool);
    float* row = scores->data() + h * L;
    for (int64_t i = 0; i < L; ++i) row[i] = std::max(row[i], max_prob[i]);
  }
}

}  // namespace

absl::StatusOr<ReconPrompt> BuildReconPrompt(const runtime::Tokenizer& tok, ReconTurn turn) {
  KVWIRE_ASSIGN_OR_RETURN(const TurnFrame frame, FrameOf(tok, turn));
  const runtime::EncodeOptions special{.parse_special = true};
  const std::vector<int32_t> open = tok.Encode(frame.open, special),
                             close = tok.Encode(frame.close, special);
  ReconPrompt p;
  p.first = open;
  Append(&p.first, tok.Encode(kReconInstruction));
  Append(&p.first, close);
  p.part_head = open;
  Append(&p.part_head, tok.Encode(kReconPartInstruction));
  p.part_tail = close;
  return p;
}

absl::StatusOr<ReconPrompt> BuildReconPrompt(const runtime::Model& model, ReconTurn turn) {
  KVWIRE_ASSIGN_OR_RETURN(const std::unique_ptr<runtime::Tokenizer> tok,
                          runtime::LoadTokenizer(model.gguf()));
  return BuildReconPrompt(*tok, turn);
}

absl::StatusOr<std::vector<std::vector<float>>> ReconScoresForCache(
    runtime::Runner& runner, const runtime::Model& model, absl::Span<const int32_t> context,
    cache::KvCache* context_cache, const ReconOptions& options, kernels::ThreadPool* pool) {
  const runtime::ModelConfig& cfg = model.config();
  const int64_t L = static_cast<int64_t>(context.size());
  if (&runner.model() != &model)
    return absl::InvalidArgumentError("recon: runner runs another model");
  if (L == 0) return absl::InvalidArgumentError("recon: empty context");
  if (options.chunk_tokens < 1 || options.tail_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("recon: chunk_tokens must be >= 1 (got ",
                                                   options.chunk_tokens, "), tail_tokens >= 0"));
  }
  KVWIRE_RETURN_IF_ERROR(CheckCache(cfg, *context_cache, L));
  ReconPrompt prompt = options.prompt;
  if (prompt.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(prompt, BuildReconPrompt(model, options.turn));
  }

  std::vector<std::vector<float>> scores(
      cfg.n_layers, std::vector<float>(static_cast<size_t>(cfg.n_kv_heads) * L));
  const TruncateOnExit restore(context_cache, L, cfg.head_dim);
  for (int64_t begin = 0; begin < L; begin += options.chunk_tokens) {
    const int64_t end = std::min(L, begin + options.chunk_tokens);
    const std::vector<int32_t> tokens =
        PassTokens(prompt, context, begin, end, options.tail_tokens);
    const int64_t n = static_cast<int64_t>(tokens.size());
    runtime::ForwardOptions fwd;
    fwd.window = static_cast<int>(n);  // every query of the pass
    fwd.on_layer = [&](const runtime::PrefillLayer& pl) {
      FoldLayer(cfg, context_cache->layers[pl.layer], pl.window_queries, n, L, pool,
                &scores[pl.layer]);
      return absl::OkStatus();
    };
    KVWIRE_RETURN_IF_ERROR(
        runner.Forward(tokens, static_cast<int32_t>(L), fwd, context_cache).status());
    Truncate(context_cache, L, cfg.head_dim);  // each pass sees the context alone
  }
  return scores;
}

absl::StatusOr<std::vector<std::vector<float>>> ReconScores(runtime::Runner& runner,
                                                            const runtime::Model& model,
                                                            absl::Span<const int32_t> context,
                                                            const ReconOptions& options,
                                                            kernels::ThreadPool* pool) {
  if (&runner.model() != &model)
    return absl::InvalidArgumentError("recon: runner runs another model");
  if (context.empty()) return absl::InvalidArgumentError("recon: empty context");
  cache::KvCache cache;
  KVWIRE_RETURN_IF_ERROR(runner.Prefill(context, {}, &cache).status());
  return ReconScoresForCache(runner, model, context, &cache, options, pool);
}

}  // namespace kvwire::compress
