// bench/gpu_transfer.h — moving GPU-resident KV between two UCX transports, for `kvwire-bench
// gpu`: payloads of device memory sent into device memory (StartSend with MemoryKind::kCuda into
// a kCuda Destination), beside the same transport moving host memory into host memory, and beside
// the pinned copy bandwidths between host and device that staging spends (DeviceCopier).
//
// Both transports live in this process and talk over UCX shared memory ("posix,cma,self"), the
// path between a prefill and a decode worker on one node; each transfer is timed from StartSend
// to the frame's arrival at the receiver (Receive), one frame at a time, median of `repeats`
// after warm-up. With the UCX build here (no CUDA support) device payloads are staged: device ->
// pinned host -> UCX -> pinned host -> device; the report says which path ran.
//
// Thread-safety: single-threaded. Errors: UNAVAILABLE without a device; the transport's.
#ifndef KVWIRE_BENCH_GPU_TRANSFER_H_
#define KVWIRE_BENCH_GPU_TRANSFER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::bench {

struct GpuTransferOptions {
  int device = 0;
  int repeats = 20;
  std::vector<uint64_t> sizes = {uint64_t{1} << 20, uint64_t{16} << 20, uint64_t{64} << 20};
};

struct GpuTransferRow {
  uint64_t bytes = 0;
  double device_ms = 0;  // device -> device through the transport (median)
  double host_ms = 0;    // host -> host through the same transport (median)
};

struct GpuTransferResult {
  std::string transport;  // UCX_TLS of both transports
  std::string path;       // "staged through pinned host memory" or "native"
  double to_host_gbps = 0;    // pinned device -> host copy of the largest size (median)
  double to_device_gbps = 0;  // pinned host -> device
  std::vector<GpuTransferRow> rows;
};

absl::StatusOr<GpuTransferResult> MeasureGpuTransfer(const GpuTransferOptions& options);
void PrintGpuTransfer(const GpuTransferResult& result);
std::string GpuTransferJson(const GpuTransferResult& result);

}  // namespace kvwire::bench

#endif  // KVWIRE_BENCH_GPU_TRANSFER_H_
