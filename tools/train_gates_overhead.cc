// The cost of inline gate scoring, measured side by side with the plain forward: prefills of the
// same prompt with and without gate scoring in the layer hook, and decode runs from the same
// cache with and without decode-time gate scoring (rows batched as GateRowBuffer does), each
// alternated `runs` times; medians.
#include "tools/train_gates_overhead.h"

#include <algorithm>
#include <chrono>

#include "bench/stats.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/gate.h"
#include "runtime/runner.h"

namespace kvwire::compress {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDecodeTokens = 64;
constexpr int kDecodeBatch = 16;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Timing {
  double total = 0, scoring = 0;
};

absl::StatusOr<Timing> TimePrefill(runtime::Runner& runner, const GateModel* gates,
                                   absl::Span<const int32_t> prompt) {
  Timing timing;
  GateScorer scorer(gates);
  std::vector<float> scores;
  runtime::ForwardOptions options;
  if (gates != nullptr) {
    options.on_layer = [&](const runtime::PrefillLayer& pl) {
      const auto t = Clock::now();
      scorer.Score(pl.layer, pl.attn_input, pl.n_tokens, &scores, runner.pool());
      timing.scoring += Since(t);
      return absl::OkStatus();
    };
  }
  cache::KvCache cache;
  const auto start = Clock::now();
  KVWIRE_RETURN_IF_ERROR(runner.Prefill(prompt, options, &cache).status());
  timing.total = Since(start);
  return timing;
}

absl::StatusOr<Timing> TimeDecode(runtime::Runner& runner, const GateModel* gates,
                                  const cache::KvCache& prefilled,
                                  absl::Span<const int32_t> tokens) {
  Timing timing;
  cache::KvCache cache = prefilled;
  std::unique_ptr<GateRowBuffer> buffer;
  std::vector<float> scores;
  runtime::ForwardOptions options;
  if (gates != nullptr) {
    buffer = std::make_unique<GateRowBuffer>(gates, kDecodeBatch);
    options.on_layer = [&](const runtime::PrefillLayer& pl) {
      const auto t = Clock::now();
      if (buffer->Add(pl.layer, pl.attn_input)) buffer->Flush(pl.layer, &scores, runner.pool());
      timing.scoring += Since(t);
      return absl::OkStatus();
    };
  }
  const auto start = Clock::now();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t pos = runtime::DecodePosition(cache, static_cast<int32_t>(i));
    KVWIRE_RETURN_IF_ERROR(runner.Decode(tokens[i], pos, &cache, options).status());
  }
  timing.total = Since(start);
  return timing;
}

}  // namespace

absl::StatusOr<Overhead> MeasureOverhead(runtime::Runner& runner, const GateModel& gates,
                                         absl::Span<const int32_t> prompt, int runs) {
  Overhead o;
  o.prompt_tokens = static_cast<int64_t>(prompt.size());
  o.decode_tokens = std::min<int64_t>(kDecodeTokens, o.prompt_tokens);
  cache::KvCache prefilled;
  KVWIRE_RETURN_IF_ERROR(runner.Prefill(prompt, {}, &prefilled).status());
  const absl::Span<const int32_t> feed = prompt.subspan(0, o.decode_tokens);
  std::vector<double> pp, pg, dp, dg, ps, ds;
  for (int r = 0; r < runs; ++r) {
    // Alternate which variant goes first so drift on a shared machine hits both alike.
    const bool gated_first = r % 2 == 1;
    for (int v = 0; v < 2; ++v) {
      const bool gated = (v == 0) == gated_first;
      const GateModel* g = gated ? &gates : nullptr;
      KVWIRE_ASSIGN_OR_RETURN(const Timing p, TimePrefill(runner, g, prompt));
      KVWIRE_ASSIGN_OR_RETURN(const Timing d, TimeDecode(runner, g, prefilled, feed));
      (gated ? pg : pp).push_back(p.total);
      (gated ? dg : dp).push_back(d.total);
      if (gated) ps.push_back(p.scoring), ds.push_back(d.scoring);
    }
  }
  o.prefill_plain = bench::Median(pp);
  o.prefill_gated = bench::Median(pg);
  o.decode_plain = bench::Median(dp);
  o.decode_gated = bench::Median(dg);
  o.prefill_scoring = bench::Median(ps);
  o.decode_scoring = bench::Median(ds);
  return o;
}

}  // namespace kvwire::compress
