// Prefill and decode throughput of GpuRunner. See gpu_runtime.h.
#include "bench/gpu_runtime.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/timing.h"
#include "kvwire/base/status.h"
#include "runtime/gpu_runner.h"
#include "runtime/model.h"

namespace kvwire::bench {
namespace {

using runtime::GpuDecodeStep;
using runtime::GpuKvCache;
using runtime::GpuModel;
using runtime::GpuRunner;

constexpr int64_t kPrompts[] = {512, 2048};
constexpr int64_t kContexts[] = {1024, 4096};
constexpr int kBatches[] = {1, 16};
constexpr int kDecodeWarmupSteps = 2;

// Llama-3-8B: 32 layers, hidden 4096, 32 heads / 8 KV heads of 128, FFN 14336, vocab 128256.
runtime::ModelConfig Llama3_8bConfig() {
  runtime::ModelConfig c;
  c.arch = "llama";
  c.n_layers = 32;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.hidden = 4096;
  c.ffn_hidden = 14336;
  c.vocab_size = 128256;
  c.context_length = 8192;
  c.rope_theta = 500000.0f;
  c.rms_eps = 1e-5f;
  c.rope_style = kernels::RopeStyle::kAdjacent;
  return c;
}

std::vector<int32_t> Tokens(int64_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = dist(rng);
  return t;
}

absl::Status Prefills(const std::string& name, const std::shared_ptr<const GpuModel>& model,
                      GpuRunner& runner, int repeats, std::vector<GpuRuntimeRow>* rows) {
  const runtime::ModelConfig& c = model->config();
  for (int64_t n : kPrompts) {
    if (n > c.context_length) continue;
    KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<GpuKvCache> cache, GpuKvCache::Create(*model, n));
    const std::vector<int32_t> prompt = Tokens(n, c.vocab_size, 7);
    KVWIRE_ASSIGN_OR_RETURN(const double ms, MedianWallMillis(1, repeats, [&]() -> absl::Status {
                              return runner.Prefill(prompt, {}, cache.get()).status();
                            }));
    rows->push_back({name, "prefill", n, 1, ms, n / (ms / 1e3)});
  }
  return absl::OkStatus();
}

// `batch` sequences prefilled to `context` tokens, then timed decode steps of all of them.
absl::Status DecodeRun(const std::string& name, const std::shared_ptr<const GpuModel>& model,
                       GpuRunner& runner, int64_t context, int batch, int repeats,
                       std::vector<GpuRuntimeRow>* rows) {
  const runtime::ModelConfig& c = model->config();
  const int64_t steps = kDecodeWarmupSteps + int64_t{repeats} * kDecodeStepsPerRepeat;
  if (context + steps > c.context_length) return absl::OkStatus();
  // One prefill; the other sequences get copies of its cache (distinct device memory).
  std::vector<std::unique_ptr<GpuKvCache>> caches;
  cache::KvCache host;
  for (int b = 0; b < batch; ++b) {
    KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<GpuKvCache> cache,
                            GpuKvCache::Create(*model, context + steps));
    if (b == 0) {
      const std::vector<int32_t> prompt = Tokens(context, c.vocab_size, 100);
      KVWIRE_RETURN_IF_ERROR(runner.Prefill(prompt, {}, cache.get()).status());
      if (batch > 1) {
        KVWIRE_ASSIGN_OR_RETURN(host, cache->Download());
      }
    } else {
      KVWIRE_RETURN_IF_ERROR(cache->Install(host));
    }
    caches.push_back(std::move(cache));
  }
  int32_t done = 0;  // steps taken by every sequence
  std::vector<GpuDecodeStep> batch_steps(batch);
  auto step = [&]() -> absl::Status {
    const int32_t position = static_cast<int32_t>(context) + done++;
    if (batch == 1) {
      return runner.Decode(static_cast<int32_t>(position % c.vocab_size), position, caches[0].get())
          .status();
    }
    for (int b = 0; b < batch; ++b) {
      batch_steps[b] = {static_cast<int32_t>((position + 31 * b) % c.vocab_size), position,
                        caches[b].get()};
    }
    return runner.DecodeBatch(batch_steps).status();
  };
  for (int i = 0; i < kDecodeWarmupSteps; ++i) KVWIRE_RETURN_IF_ERROR(step());
  KVWIRE_ASSIGN_OR_RETURN(const double ms, MedianWallMillis(0, repeats, [&]() -> absl::Status {
                            for (int s = 0; s < kDecodeStepsPerRepeat; ++s) {
                              KVWIRE_RETURN_IF_ERROR(step());
                            }
                            return absl::OkStatus();
                          }));
  rows->push_back(
      {name, "decode", context, batch, ms, double(batch) * kDecodeStepsPerRepeat / (ms / 1e3)});
  return absl::OkStatus();
}

absl::Status MeasureModel(const std::string& name, std::shared_ptr<const GpuModel> model,
                          int repeats, std::vector<GpuRuntimeRow>* rows) {
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<GpuRunner> runner, GpuRunner::Create(model));
  KVWIRE_RETURN_IF_ERROR(Prefills(name, model, *runner, repeats, rows));
  for (int64_t context : kContexts) {
    for (int batch : kBatches) {
      KVWIRE_RETURN_IF_ERROR(DecodeRun(name, model, *runner, context, batch, repeats, rows));
    }
  }
  return absl::OkStatus();
}

std::string DefaultModelPath() {
  if (const char* m = std::getenv("KVWIRE_MODEL"); m != nullptr && *m != '\0') return m;
  const char* home = std::getenv("HOME");
  return absl::StrCat(home ? home : "", "/.cache/kvwire/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

}  // namespace

absl::StatusOr<GpuRuntimeResult> MeasureGpuRuntime(const GpuRuntimeOptions& o) {
  if (o.repeats < 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime repeats must be at least 5, got ", o.repeats));
  }
  GpuRuntimeResult result;
  const std::string path = o.model.empty() ? DefaultModelPath() : o.model;
  if (!o.model.empty() || std::ifstream(path).good()) {
    KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> host, runtime::Model::Load(path));
    KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<const GpuModel> model, GpuModel::Upload(*host, {}));
    KVWIRE_RETURN_IF_ERROR(MeasureModel("smollm2", std::move(model), o.repeats, &result.rows));
    absl::StrAppend(&result.note, "smollm2 from ", path, "; ");
  } else {
    absl::StrAppend(&result.note, "smollm2 skipped: no model at ", path, "; ");
  }
  if (o.llama) {
    KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<const GpuModel> model,
                            GpuModel::Random(Llama3_8bConfig(), 1, {}));
    absl::StrAppend(&result.note, "llama3_8b_random: ", model->weight_bytes() >> 20,
                    " MiB of fp16 weights drawn on the device");
    KVWIRE_RETURN_IF_ERROR(
        MeasureModel("llama3_8b_random", std::move(model), o.repeats, &result.rows));
  } else {
    absl::StrAppend(&result.note, "llama3_8b_random skipped (--skip-llama)");
  }
  return result;
}

void PrintGpuRuntime(const GpuRuntimeResult& r) {
  std::printf("runtime on the device (%s)\n", r.note.c_str());
  std::printf("%-18s %-8s %8s %6s %12s %12s\n", "model", "phase", "tokens", "batch", "median_ms",
              "tokens/s");
  for (const GpuRuntimeRow& row : r.rows) {
    std::printf("%-18s %-8s %8lld %6d %12.3f %12.1f\n", row.model.c_str(), row.phase.c_str(),
                static_cast<long long>(row.tokens), row.batch, row.median_ms, row.tokens_per_s);
  }
}

std::string GpuRuntimeJson(const GpuRuntimeResult& r) {
  std::string out =
      absl::StrCat("{\"note\": \"", r.note,
                   "\", \"decode_steps_per_repeat\": ", kDecodeStepsPerRepeat, ", \"rows\": [");
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const GpuRuntimeRow& row = r.rows[i];
    absl::StrAppend(&out, i ? "," : "", "\n    {\"model\": \"", row.model, "\", \"phase\": \"",
                    row.phase, "\", \"tokens\": ", row.tokens, ", \"batch\": ", row.batch,
                    ", \"median_ms\": ", absl::StrFormat("%.6g", row.median_ms),
                    ", \"tokens_per_s\": ", absl::StrFormat("%.6g", row.tokens_per_s), "}");
  }
  absl::StrAppend(&out, "]}");
  return out;
}

}  // namespace kvwire::bench
