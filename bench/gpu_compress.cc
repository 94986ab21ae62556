// The device compressor against the CPU compressor. See gpu_compress.h.
#include "bench/gpu_compress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/timing.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/compress/gpu/device_compressor.h"
#include "kvwire/compress/spec.h"
#include "kvwire/kernels/thread_pool.h"

namespace kvwire::bench {
namespace {

namespace kc = ::kvwire::kernels::cuda;
using compress::gpu::DeviceCompressor;

constexpr int kWarmups = 2;
constexpr uint32_t kSeed = 11;

struct Shape {
  const char* name;
  int heads, kv_heads, dim;
};
constexpr Shape kShapes[] = {{"smollm2", 9, 3, 64}, {"llama3_8b", 32, 8, 128}};
constexpr int64_t kLengths[] = {2048, 8192};  // ascending: the CPU skip predicts from the previous
constexpr float kBudgets[] = {0.1f, 0.2f};
constexpr const char* kMethods[] = {compress::kDefaultMethod, "snapkv/uniform/merge",
                                    "window/uniform/none"};

// One layer's keys, values and window queries on the host and the device.
struct Layer {
  Shape shape;
  int64_t length = 0, window = 0;
  std::vector<float> keys, values, queries;
  kc::DeviceBuffer d_keys, d_values, d_queries;

  template <typename In>
  In WithShape() const {
    In in;
    in.n_tokens = length;
    in.n_heads = shape.heads;
    in.n_kv_heads = shape.kv_heads;
    in.head_dim = shape.dim;
    in.scale = 1.0f / std::sqrt(static_cast<float>(shape.dim));
    return in;
  }
  compress::LayerInput Cpu() const {
    auto in = WithShape<compress::LayerInput>();
    in.keys = keys.data();
    in.values = values.data();
    in.queries = queries.data();
    in.n_queries = window;
    return in;
  }
  compress::gpu::DeviceLayerInput Device() const {
    auto in = WithShape<compress::gpu::DeviceLayerInput>();
    in.keys = d_keys.as<float>();
    in.values = d_values.as<float>();
    in.window = window;
    in.window_queries = d_queries.as<float>();
    return in;
  }
};

std::vector<float> Normal(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

absl::StatusOr<Layer> MakeLayer(kc::Context& ctx, const Shape& s, int64_t length, int64_t window,
                                std::mt19937& rng) {
  Layer l{s, length, window};
  const size_t kv = static_cast<size_t>(length) * s.kv_heads * s.dim;
  l.keys = Normal(kv, rng);
  l.values = Normal(kv, rng);
  l.queries = Normal(static_cast<size_t>(window) * s.heads * s.dim, rng);
  KVWIRE_ASSIGN_OR_RETURN(l.d_keys, kc::ToDevice(ctx, l.keys));
  KVWIRE_ASSIGN_OR_RETURN(l.d_values, kc::ToDevice(ctx, l.values));
  KVWIRE_ASSIGN_OR_RETURN(l.d_queries, kc::ToDevice(ctx, l.queries));
  return l;
}

// Both device figures of one row.
absl::Status MeasureDevice(kc::Context& ctx, const Layer& l, const DeviceCompressor& dc,
                           int repeats, GpuCompressRow* row) {
  const compress::gpu::DeviceLayerInput in = l.Device();
  compress::LayerStats stats;
  KVWIRE_ASSIGN_OR_RETURN(row->device_ms, MedianWallMillis(kWarmups, repeats, [&] {
                            return dc.CompressLayer(ctx, in, &stats);
                          }));
  row->device_kept = stats.kept;
  const compress::gpu::DeviceEncodeOptions encode;  // f16 K/V, f32 votes
  KVWIRE_ASSIGN_OR_RETURN(row->encode_ms, MedianWallMillis(kWarmups, repeats, [&] {
                            return dc.CompressAndEncode(ctx, in, encode);
                          }));
  return absl::OkStatus();
}

// The CPU figure of one row, or a note saying why not; `previous` is this row's CPU time at
// `previous_length` (NaN when none).
absl::Status MeasureCpu(const Layer& l, const compress::Compressor& c, kernels::ThreadPool& pool,
                        const GpuCompressOptions& o, double previous, int64_t previous_length,
                        GpuCompressRow* row) {
  row->cpu_ms = NAN;
  if (std::isfinite(previous)) {
    const double growth = double(l.length) / double(previous_length);
    const double predicted_s = previous * growth * growth * (1 + o.cpu_repeats) / 1e3;
    if (predicted_s > o.cpu_limit_s) {
      row->cpu_note = absl::StrFormat(
          "skipped: predicted %.0f s for %d calls (%.0f ms at L=%d x (L/%d)^2) > %.0f s",
          predicted_s, 1 + o.cpu_repeats, previous, previous_length, previous_length,
          o.cpu_limit_s);
      return absl::OkStatus();
    }
  }
  const compress::LayerInput in = l.Cpu();
  compress::LayerStats stats;
  KVWIRE_ASSIGN_OR_RETURN(row->cpu_ms, MedianWallMillis(1, o.cpu_repeats, [&] {
                            return c.CompressLayer(in, &pool, &stats);
                          }));
  row->cpu_kept = stats.kept;
  return absl::OkStatus();
}

void PrintProgress(const GpuCompressRow& r) {
  std::printf(
      "compress: %s L=%lld b=%.2f %s: device %.3f ms, encode %.3f ms, cpu %s\n", r.model.c_str(),
      static_cast<long long>(r.length), r.budget, r.method.c_str(), r.device_ms, r.encode_ms,
      std::isfinite(r.cpu_ms) ? absl::StrFormat("%.2f ms", r.cpu_ms).c_str() : r.cpu_note.c_str());
  std::fflush(stdout);
}

// The largest window any method reads at this length.
absl::StatusOr<int64_t> WindowFor(int64_t length) {
  int64_t window = 1;
  for (const char* m : kMethods) {
    KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec,
                            compress::CompressionSpec::Parse(m));
    window = std::max(window, spec.QueryRows(length));
  }
  return window;
}

std::string Num(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }

}  // namespace

absl::StatusOr<GpuCompressResult> MeasureGpuCompress(kc::Context& ctx,
                                                     const GpuCompressOptions& o) {
  kernels::ThreadPool pool(0);
  GpuCompressResult result;
  result.note =
      "one layer per row; device_ms: DeviceCompressor::CompressLayer wall time including the "
      "download of the kept entries; encode_ms: CompressAndEncode (f16 K/V, f32 votes) to a device "
      "payload; cpu_ms: compress::Compressor::CompressLayer on a pool of cpu_threads; speedup: "
      "cpu_ms / device_ms; device_gbps: raw K/V bytes (L*n_kv_heads*head_dim*4*2) / device_ms; "
      "fraction_of_copy: device_gbps / copy_gbps";
  result.cpu_threads = pool.size();
  result.repeats = std::max(7, o.repeats);
  result.cpu_repeats = std::max(3, o.cpu_repeats);
  GpuCompressOptions cpu_options = o;
  cpu_options.cpu_repeats = result.cpu_repeats;
  std::mt19937 rng(kSeed);
  std::printf("compress: %zu rows, device median of %d, cpu (%d threads) median of %d\n",
              std::size(kShapes) * std::size(kLengths) * std::size(kMethods) * std::size(kBudgets),
              result.repeats, result.cpu_threads, result.cpu_repeats);
  for (const Shape& s : kShapes) {
    // CPU ms of each (method, budget) at the previous length, for the skip prediction.
    std::vector<double> previous(std::size(kMethods) * std::size(kBudgets), NAN);
    int64_t previous_length = 0;
    for (int64_t length : kLengths) {
      KVWIRE_ASSIGN_OR_RETURN(const int64_t window, WindowFor(length));
      KVWIRE_ASSIGN_OR_RETURN(const Layer layer, MakeLayer(ctx, s, length, window, rng));
      std::vector<double> current(previous.size(), NAN);
      for (size_t m = 0; m < std::size(kMethods); ++m) {
        KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec,
                                compress::CompressionSpec::Parse(kMethods[m]));
        for (size_t b = 0; b < std::size(kBudgets); ++b) {
          GpuCompressRow row{s.name, s.heads, s.kv_heads, s.dim, length, kBudgets[b], kMethods[m]};
          row.kv_bytes = double(length) * s.kv_heads * s.dim * sizeof(float) * 2;
          KVWIRE_ASSIGN_OR_RETURN(const DeviceCompressor dc,
                                  DeviceCompressor::Create(spec, kBudgets[b]));
          KVWIRE_RETURN_IF_ERROR(MeasureDevice(ctx, layer, dc, result.repeats, &row));
          KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor c,
                                  compress::Compressor::Create(spec, kBudgets[b]));
          const size_t k = m * std::size(kBudgets) + b;
          KVWIRE_RETURN_IF_ERROR(
              MeasureCpu(layer, c, pool, cpu_options, previous[k], previous_length, &row));
          current[k] = row.cpu_ms;
          PrintProgress(row);
          result.rows.push_back(std::move(row));
        }
      }
      previous = std::move(current);
      previous_length = length;
    }
  }
  return result;
}

void PrintGpuCompress(const GpuCompressResult& r, double copy_gbps) {
  std::printf(
      "prefill compression, one layer (device: median of %d, wall incl. download; cpu: %d "
      "threads, median of %d)\n",
      r.repeats, r.cpu_threads, r.cpu_repeats);
  std::printf("%-10s %5s %5s %-32s %15s %10s %10s %10s %8s %8s %7s\n", "model", "L", "b", "method",
              "kept dev/cpu", "device ms", "encode ms", "cpu ms", "speedup", "dev GB/s", "of copy");
  for (const GpuCompressRow& x : r.rows) {
    const double gbps = x.kv_bytes / x.device_ms / 1e6;
    std::printf(
        "%-10s %5lld %5.2f %-32s %7lld/%-7s %10.3f %10.3f %10s %8s %8.1f %7.3f\n", x.model.c_str(),
        static_cast<long long>(x.length), x.budget, x.method.c_str(),
        static_cast<long long>(x.device_kept),
        x.cpu_kept < 0 ? "-" : absl::StrCat(x.cpu_kept).c_str(), x.device_ms, x.encode_ms,
        std::isfinite(x.cpu_ms) ? absl::StrFormat("%.2f", x.cpu_ms).c_str() : "skipped",
        std::isfinite(x.cpu_ms) ? absl::StrFormat("%.1fx", x.cpu_ms / x.device_ms).c_str() : "-",
        gbps, gbps / copy_gbps);
  }
  for (const GpuCompressRow& x : r.rows) {
    if (!x.cpu_note.empty()) {
      std::printf("  %s L=%lld b=%.2f %s: cpu %s\n", x.model.c_str(),
                  static_cast<long long>(x.length), x.budget, x.method.c_str(), x.cpu_note.c_str());
    }
  }
}

std::string GpuCompressJson(const GpuCompressResult& r, double copy_gbps) {
  std::string out = "[";
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const GpuCompressRow& x = r.rows[i];
    const double gbps = x.kv_bytes / x.device_ms / 1e6;
    absl::StrAppend(
        &out, i ? "," : "", "\n    {\"model\": \"", x.model, "\", \"n_heads\": ", x.n_heads,
        ", \"n_kv_heads\": ", x.n_kv_heads, ", \"head_dim\": ", x.head_dim,
        ", \"length\": ", x.length, ", \"budget\": ", Num(x.budget), ", \"method\": \"", x.method,
        "\", \"kv_bytes\": ", Num(x.kv_bytes), ", \"device_ms\": ", Num(x.device_ms),
        ", \"encode_ms\": ", Num(x.encode_ms), ", \"cpu_ms\": ", Num(x.cpu_ms),
        ", \"speedup\": ", Num(x.cpu_ms / x.device_ms), ", \"device_gbps\": ", Num(gbps),
        ", \"fraction_of_copy\": ", Num(gbps / copy_gbps), ", \"kept_device\": ", x.device_kept,
        ", \"kept_cpu\": ", x.cpu_kept < 0 ? "null" : absl::StrCat(x.cpu_kept),
        ", \"cpu_threads\": ", r.cpu_threads, ", \"device_repeats\": ", r.repeats,
        ", \"cpu_repeats\": ", r.cpu_repeats, ", \"cpu_note\": \"", x.cpu_note, "\"}");
  }
  absl::StrAppend(&out, r.rows.empty() ? "]" : "\n  ]");
  return out;
}

}  // namespace kvwire::bench
