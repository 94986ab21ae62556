#include "kvwire/compress/gpu/device_compressor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/compress.h"
#include "kernels/cuda/merge.h"
#include "kernels/cuda/pack.h"
#include "kernels/cuda/select.h"
#include "kernels/cuda/sequence.h"
#include "kernels/cuda/value_norms.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/select.h"

namespace kvwire::compress::gpu {

namespace cu = kernels::cuda;

namespace {

int64_t Align4(int64_t n) { return (n + 3) / 4 * 4; }

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

absl::Status Unimplemented(absl::string_view part, absl::string_view why) {
  return absl::UnimplementedError(absl::StrCat("the device compressor does not run ", part, " (",
                                               why, "); use the CPU compressor"));
}

absl::Status ValidateShape(const DeviceLayerInput& in) {
  if (in.n_tokens <= 0 || in.n_heads <= 0 || in.n_kv_heads <= 0 || in.n_heads % in.n_kv_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", in.layer, ": bad shape L=", in.n_tokens, " heads=", in.n_heads,
                     " kv_heads=", in.n_kv_heads));
  }
  if (in.head_dim < 4 || in.head_dim > 256 || in.head_dim % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", in.layer, ": head_dim ", in.head_dim,
                     " must be a multiple of 4 in [4, 256] (rows are read as 16-byte vectors)"));
  }
  if (in.first_position < 0 ||
      in.n_tokens > int64_t{std::numeric_limits<int32_t>::max()} - in.first_position) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", in.layer, ": ", in.n_tokens,
                                                   " positions from ", in.first_position,
                                                   " do not fit int32"));
  }
  if (in.scale < 0 || !std::isfinite(in.scale)) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", in.layer, ": scale ", in.scale));
  }
  return absl::OkStatus();
}

absl::Status ValidatePointer(const DeviceLayerInput& in, const void* p, absl::string_view what) {
  if (p == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", in.layer, ": ", what, " is null"));
  }
  if (!Aligned16(p)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", in.layer, ": ", what, " is not 16-byte aligned"));
  }
  return absl::OkStatus();
}

// `query_rows`: the rows scoring reads, 0 when the layer is kept whole.
absl::Status ValidateInput(const CompressionSpec& spec, const DeviceLayerInput& in,
                           int64_t query_rows) {
  KVWIRE_RETURN_IF_ERROR(ValidateShape(in));
  KVWIRE_RETURN_IF_ERROR(ValidatePointer(in, in.keys, "keys"));
  KVWIRE_RETURN_IF_ERROR(ValidatePointer(in, in.values, "values"));
  if (query_rows == 0) return absl::OkStatus();
  KVWIRE_RETURN_IF_ERROR(ValidatePointer(in, in.window_queries, "window_queries"));
  if (in.window < query_rows || in.window > in.n_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", in.layer, ": ", query_rows,
                     " window query rows needed (at most L=", in.n_tokens, "), got ", in.window));
  }
  if (spec.critical) {
    // Checked here, before any work is queued, like every other input.
    KVWIRE_RETURN_IF_ERROR(ValidatePointer(in, in.wo, "wo (+critical's output projection)"));
    if (in.hidden <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", in.layer, ": +critical needs hidden > 0, got ", in.hidden));
    }
  }
  return absl::OkStatus();
}

// Byte offsets of one head's arrays inside the compact entry buffer.
struct HeadOffsets {
  size_t positions = 0, log_votes = 0, keys = 0, values = 0;
};

// Per-layer device work areas, carved from one allocation (one cudaMalloc/cudaFree per layer
// instead of one per array) and freed when the layer is done. Arrays the spec does not use are
// null; every array starts 16-byte aligned.
struct LayerBuffers {
  cu::DeviceBuffer storage;
  size_t scores_offset = 0;            // byte offset of `scores` in storage
  int32_t* key_positions = nullptr;    // int32 [L]
  int32_t* query_positions = nullptr;  // int32 [window]
  float* scores = nullptr;             // fp32 [H][L]
  float* log_scores = nullptr;         // fp32 [H][L], when merging
  float* value_norms = nullptr;        // fp32 [H][L], with +critical
  int32_t* keep = nullptr;             // int32 [at most H*L]: each head's kept indices
  int32_t* evicted = nullptr;          // int32 [at most H*L], when merging
};

absl::StatusOr<cu::DeviceBuffer> Allocate(size_t bytes) {
  return cu::DeviceBuffer::Allocate(bytes);
}

// `full`: the layer is kept whole (no scoring, nothing evicted).
absl::StatusOr<LayerBuffers> AllocateLayerBuffers(const CompressionSpec& spec,
                                                  const DeviceLayerInput& in, bool full) {
  const auto L = static_cast<size_t>(in.n_tokens);
  const size_t all = L * static_cast<size_t>(in.n_kv_heads);
  const bool merging = !full && spec.merge != MergeMode::kNone;
  struct Part {
    size_t elements;
    bool used;
    size_t offset = 0;
  };
  Part parts[] = {{L, !full},     {static_cast<size_t>(in.window), !full}, {all, !full},
                  {all, merging}, {all, !full && spec.critical},           {all, true},
                  {all, merging}};
  size_t at = 0;
  for (Part& p : parts) {
    if (p.used) p.offset = at, at += sizeof(float) * static_cast<size_t>(Align4(p.elements));
  }
  LayerBuffers b;
  KVWIRE_ASSIGN_OR_RETURN(b.storage, Allocate(at));
  auto ptr = [&b](const Part& p) {
    return p.used ? static_cast<void*>(static_cast<char*>(b.storage.data()) + p.offset) : nullptr;
  };
  b.key_positions = static_cast<int32_t*>(ptr(parts[0]));
  b.query_positions = static_cast<int32_t*>(ptr(parts[1]));
  b.scores = static_cast<float*>(ptr(parts[2]));
  b.scores_offset = parts[2].offset;
  b.log_scores = static_cast<float*>(ptr(parts[3]));
  b.value_norms = static_cast<float*>(ptr(parts[4]));
  b.keep = static_cast<int32_t*>(ptr(parts[5]));
  b.evicted = static_cast<int32_t*>(ptr(parts[6]));
  return b;
}

// The last `rows` window queries; an empty block (shape only) for rows == 0, which MergeHead
// takes when nothing is merged.
kernels::QueryBlock WindowBlock(const DeviceLayerInput& in, const LayerBuffers& b, int64_t rows) {
  const float scale = in.scale > 0 ? in.scale : 1.0f / std::sqrt(static_cast<float>(in.head_dim));
  kernels::QueryBlock qb{nullptr, 0, nullptr, in.n_heads, in.n_kv_heads, in.head_dim, scale};
  if (rows == 0) return qb;
  const int64_t skip = in.window - rows;
  qb.q = in.window_queries + skip * in.n_heads * in.head_dim;
  qb.n_queries = rows;
  qb.positions = b.query_positions + skip;
  return qb;
}

kernels::StridedRows Rows(const float* base, const DeviceLayerInput& in, int h) {
  return {base + static_cast<int64_t>(h) * in.head_dim, int64_t{in.n_kv_heads} * in.head_dim,
          in.n_tokens};
}

// Scores (and merge log-scores, value norms) of every KV head into b.
absl::Status ScoreLayerOnDevice(cu::Context& ctx, const CompressionSpec& spec,
                                const DeviceLayerInput& in, const LayerBuffers& b) {
  const int64_t L = in.n_tokens;
  const int64_t rows = spec.QueryRows(L);
  KVWIRE_RETURN_IF_ERROR(cu::FillPositions(ctx, b.key_positions, L, in.first_position));
  KVWIRE_RETURN_IF_ERROR(cu::FillPositions(
      ctx, b.query_positions, in.window, static_cast<int32_t>(in.first_position + L - in.window)));
  const bool merging = spec.merge != MergeMode::kNone;
  if (spec.critical) {
    for (int h = 0; h < in.n_kv_heads; ++h) {
      KVWIRE_RETURN_IF_ERROR(cu::ValueOutputNorms(ctx, Rows(in.values, in, h), in.wo, in.hidden,
                                                  in.n_heads, in.n_kv_heads, in.head_dim, h,
                                                  b.value_norms + h * L));
    }
  }
  const kernels::QueryBlock window = WindowBlock(in, b, rows);
  if (spec.scorer == ScorerKind::kWindow) {
    KVWIRE_RETURN_IF_ERROR(cu::FillRecencyScores(ctx, b.scores, in.n_kv_heads, L));
  }
  for (int h = 0; h < in.n_kv_heads; ++h) {
    float* log_score = merging ? b.log_scores + h * L : nullptr;
    if (spec.scorer == ScorerKind::kWindow) {
      if (merging) {
        KVWIRE_RETURN_IF_ERROR(
            cu::LogMeanExpScores(ctx, window, h, Rows(in.keys, in, h), log_score));
      }
      continue;
    }
    const cu::WindowAggregate aggregate = spec.scorer == ScorerKind::kSnapKV
                                              ? cu::WindowAggregate::kMean
                                              : cu::WindowAggregate::kMaxClamped;
    KVWIRE_RETURN_IF_ERROR(cu::WindowScores(ctx, window, h, Rows(in.keys, in, h), b.key_positions,
                                            aggregate, spec.pool_kernel, b.scores + h * L,
                                            log_score));
  }
  return absl::OkStatus();
}

// Budgets per head: uniform B, or Ada-KV on the host from the downloaded scores.
absl::StatusOr<std::vector<int64_t>> Budgets(cu::Context& ctx, const CompressionSpec& spec,
                                             const DeviceLayerInput& in, const LayerBuffers& b,
                                             int64_t B) {
  std::vector<int64_t> budgets(in.n_kv_heads, B);
  if (B >= in.n_tokens || spec.allocator != AllocatorKind::kAdaptive) return budgets;
  const int64_t L = in.n_tokens;
  std::vector<float> all(static_cast<size_t>(in.n_kv_heads * L));
  KVWIRE_RETURN_IF_ERROR(
      b.storage.Download(ctx, all.data(), sizeof(float) * all.size(), b.scores_offset));
  std::vector<HeadScores> heads(in.n_kv_heads);
  for (int h = 0; h < in.n_kv_heads; ++h) {
    heads[h].score.assign(all.begin() + h * L, all.begin() + (h + 1) * L);
  }
  return AllocateAdaptive(spec, heads, L, B);
}

// SelectHead's plan: forced ranges, and with +critical the entries chosen by score alone.
cu::HeadSelectPlan PlanFor(const CompressionSpec& spec, int64_t L, int64_t budget) {
  if (budget >= L) return {budget, 0, 0, -1};
  const ForcedRange forced = Forced(spec, L, budget);
  cu::HeadSelectPlan plan{budget, forced.sinks, forced.window, -1};
  if (spec.critical) {
    const int64_t free = budget - forced.count();
    plan.stage1 =
        std::clamp<int64_t>(std::llround(spec.critical_alpha * budget) - forced.count(), 0, free);
  }
  return plan;
}

}  // namespace

// The merged layer in device memory: positions for all heads first, then log-votes, keys and
// values, every head's array starting 16-byte aligned.
struct DeviceCompressor::Compressed {
  cu::DeviceBuffer entries;
  std::vector<int64_t> counts;  // kept entries per head
  std::vector<HeadOffsets> offsets;
};

namespace {

std::vector<HeadOffsets> CarveEntries(const std::vector<int64_t>& counts, int d, size_t* total) {
  std::vector<HeadOffsets> off(counts.size());
  size_t at = 0;
  for (size_t h = 0; h < counts.size(); ++h) off[h].positions = at, at += 4 * Align4(counts[h]);
  for (size_t h = 0; h < counts.size(); ++h) off[h].log_votes = at, at += 4 * Align4(counts[h]);
  for (size_t h = 0; h < counts.size(); ++h) off[h].keys = at, at += 4 * counts[h] * d;
  for (size_t h = 0; h < counts.size(); ++h) off[h].values = at, at += 4 * counts[h] * d;
  *total = at;
  return off;
}

template <typename T>
T* At(const cu::DeviceBuffer& buf, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(buf.data()) + offset);
}

cu::MergeParams ParamsFor(const CompressionSpec& spec) {
  cu::MergeParams p;
  p.zip = spec.merge == MergeMode::kZip;
  p.threshold = spec.merge_threshold;
  p.zip_min_abs = spec.zip_min_abs;
  p.zip_max_ratio = spec.zip_max_ratio;
  return p;
}

}  // namespace

absl::Status DeviceCompressor::Supports(const CompressionSpec& spec) {
  switch (spec.scorer) {
    case ScorerKind::kWindow:
    case ScorerKind::kSnapKV:
    case ScorerKind::kDefensive:
      break;
    case ScorerKind::kH2O:
      return Unimplemented("scorer h2o", "cumulative attention of every prompt query");
    case ScorerKind::kRecon:
      return Unimplemented("scorer recon", "reconstruction scores come from the host runtime");
    case ScorerKind::kGate:
      return Unimplemented("scorer gate", "the learned gate runs on the host");
  }
  if (spec.allocator == AllocatorKind::kGlobal) {
    return Unimplemented("allocator global", "it needs every layer scored before any is sent");
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceCompressor> DeviceCompressor::Create(const CompressionSpec& spec,
                                                          float kept_fraction) {
  KVWIRE_RETURN_IF_ERROR(spec.Validate());
  if (!(kept_fraction > 0.0f && kept_fraction <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept fraction must be in (0, 1], got ", kept_fraction));
  }
  KVWIRE_RETURN_IF_ERROR(Supports(spec));
  return DeviceCompressor(spec, kept_fraction);
}

namespace {

// Gathers (and with `merging` merges) every head's kept entries into `entries`, laid out by
// CarveEntries for `counts`. Merge counts go to `tally` (waiting for the device) when `count`.
absl::Status MergeHeads(cu::Context& ctx, const CompressionSpec& spec, const DeviceLayerInput& in,
                        const LayerBuffers& b, const std::vector<int64_t>& counts, bool merging,
                        bool count, cu::DeviceBuffer* entries, std::vector<HeadOffsets>* offsets,
                        cu::MergeTally* tally) {
  const int64_t L = in.n_tokens;
  size_t bytes = 0;
  *offsets = CarveEntries(counts, in.head_dim, &bytes);
  KVWIRE_ASSIGN_OR_RETURN(*entries, Allocate(bytes));
  const kernels::QueryBlock window = WindowBlock(in, b, merging ? spec.QueryRows(L) : 0);
  int64_t keep_at = 0, evicted_at = 0;
  for (int h = 0; h < in.n_kv_heads; ++h) {
    const int64_t n = counts[h];
    const HeadOffsets& o = (*offsets)[h];
    const cu::MergeHeadInput mi{Rows(in.keys, in, h),
                                Rows(in.values, in, h),
                                merging ? b.log_scores + h * L : nullptr,
                                b.keep + keep_at,
                                n,
                                merging ? b.evicted + evicted_at : nullptr,
                                merging ? L - n : 0};
    const cu::MergeHeadOutput mo{At<int32_t>(*entries, o.positions),
                                 At<float>(*entries, o.log_votes), At<float>(*entries, o.keys),
                                 At<float>(*entries, o.values)};
    KVWIRE_RETURN_IF_ERROR(
        cu::MergeHead(ctx, ParamsFor(spec), window, h, mi, mo, merging && count ? tally : nullptr));
    if (!merging) tally->dropped += L - n;
    keep_at += n;
    evicted_at += L - n;
  }
  // Positions are contiguous at the front of the buffer (padding included).
  const auto n_positions = static_cast<int64_t>((*offsets)[0].log_votes / sizeof(int32_t));
  return cu::OffsetPositions(ctx, entries->as<int32_t>(), n_positions, in.first_position);
}

}  // namespace

absl::StatusOr<DeviceCompressor::Compressed> DeviceCompressor::Run(cu::Context& ctx,
                                                                   const DeviceLayerInput& in,
                                                                   LayerStats* stats) const {
  const int64_t L = in.n_tokens;
  const int64_t B = L > 0 ? HeadBudget(kept_fraction_, L) : 0;
  const bool full = B >= L;
  KVWIRE_RETURN_IF_ERROR(ValidateInput(spec_, in, full ? 0 : QueryRows(L)));
  const bool merging = !full && spec_.merge != MergeMode::kNone;
  KVWIRE_ASSIGN_OR_RETURN(LayerBuffers b, AllocateLayerBuffers(spec_, in, full));
  if (!full) KVWIRE_RETURN_IF_ERROR(ScoreLayerOnDevice(ctx, spec_, in, b));
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<int64_t> budgets, Budgets(ctx, spec_, in, b, B));
  Compressed out;
  std::vector<cu::HeadSelectPlan> plans;
  int64_t kept = 0;
  for (int64_t budget : budgets) {
    plans.push_back(PlanFor(spec_, L, budget));
    out.counts.push_back(std::min(budget, L));
    kept += out.counts.back();
  }
  KVWIRE_RETURN_IF_ERROR(cu::SelectTopK(ctx, b.scores, b.value_norms, L, plans, b.keep,
                                        merging ? b.evicted : nullptr));
  cu::MergeTally tally;
  KVWIRE_RETURN_IF_ERROR(MergeHeads(ctx, spec_, in, b, out.counts, merging, stats != nullptr,
                                    &out.entries, &out.offsets, &tally));
  if (stats != nullptr) {
    *stats = LayerStats{in.layer, L};
    stats->kept = kept;
    stats->head_budgets = full ? std::vector<int64_t>(in.n_kv_heads, L) : budgets;
    stats->merge = {tally.merged, tally.dropped, tally.zip};
  }
  return out;
}

absl::StatusOr<cache::LayerCache> DeviceCompressor::CompressLayer(cu::Context& ctx,
                                                                  const DeviceLayerInput& in,
                                                                  LayerStats* stats) const {
  const auto start = std::chrono::steady_clock::now();
  KVWIRE_ASSIGN_OR_RETURN(Compressed c, Run(ctx, in, stats));
  std::vector<char> host(c.entries.size());
  KVWIRE_RETURN_IF_ERROR(c.entries.Download(ctx, host.data(), host.size()));
  const size_t d = static_cast<size_t>(in.head_dim);
  cache::LayerCache layer;
  layer.heads.resize(in.n_kv_heads);
  for (int h = 0; h < in.n_kv_heads; ++h) {
    const size_t n = static_cast<size_t>(c.counts[h]);
    const HeadOffsets& o = c.offsets[h];
    cache::HeadSegment& seg = layer.heads[h];
    seg.positions.resize(n);
    seg.log_votes.resize(n);
    seg.keys.resize(n * d);
    seg.values.resize(n * d);
    std::memcpy(seg.positions.data(), host.data() + o.positions, 4 * n);
    std::memcpy(seg.log_votes.data(), host.data() + o.log_votes, 4 * n);
    std::memcpy(seg.keys.data(), host.data() + o.keys, 4 * n * d);
    std::memcpy(seg.values.data(), host.data() + o.values, 4 * n * d);
  }
  if (stats != nullptr) stats->seconds = Seconds(start);
  return layer;
}

absl::StatusOr<DevicePayload> DeviceCompressor::CompressAndEncode(
    cu::Context& ctx, const DeviceLayerInput& in, const DeviceEncodeOptions& options,
    LayerStats* stats) const {
  const auto start = std::chrono::steady_clock::now();
  KVWIRE_ASSIGN_OR_RETURN(Compressed c, Run(ctx, in, stats));
  DevicePayload payload;
  format::LayerLayout& layout = payload.layout;
  layout.layer = static_cast<uint32_t>(in.layer);
  layout.head_dim = static_cast<uint16_t>(in.head_dim);
  layout.kv_dtype = options.kv_dtype;
  layout.vote_dtype = options.vote_dtype;
  layout.quant_group = options.quant_group;
  const bool i8 = options.kv_dtype == format::DType::kI8;
  std::vector<cu::DeviceHeadInput> heads;
  for (int h = 0; h < in.n_kv_heads; ++h) {
    const auto n = static_cast<uint32_t>(c.counts[h]);
    layout.counts.push_back(n);
    layout.tails.push_back(i8 ? std::min(n, options.fp16_tail) : 0);
    const HeadOffsets& o = c.offsets[h];
    heads.push_back({At<int32_t>(c.entries, o.positions), At<float>(c.entries, o.log_votes),
                     At<float>(c.entries, o.keys), At<float>(c.entries, o.values)});
  }
  KVWIRE_ASSIGN_OR_RETURN(const uint64_t size, format::LayerPayloadSize(layout));
  KVWIRE_ASSIGN_OR_RETURN(payload.bytes, Allocate(size));
  KVWIRE_ASSIGN_OR_RETURN(payload.size,
                          cu::EncodeLayer(ctx, layout, heads, payload.bytes.as<uint8_t>(), size));
  KVWIRE_RETURN_IF_ERROR(ctx.Synchronize());
  if (stats != nullptr) stats->seconds = Seconds(start);
  return payload;
}

}  // namespace kvwire::compress::gpu
