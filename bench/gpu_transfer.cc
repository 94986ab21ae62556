#include "bench/gpu_transfer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/timing.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_copier.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/ucx/ucx_transport.h"

namespace kvwire::bench {
namespace {

namespace kc = ::kvwire::kernels::cuda;
using transport::Destination;
using transport::FrameInfo;
using transport::MemoryKind;

constexpr int kWarmups = 3;
constexpr char kTls[] = "posix,cma,self";

Deadline Soon() { return Deadline::In(absl::Seconds(60)); }

double Gbps(uint64_t bytes, double ms) { return bytes / ms / 1e6; }

// A receiver and a sender transport, and the sender's connection to the receiver.
struct Pair {
  std::unique_ptr<transport::Transport> receiver;
  std::unique_ptr<transport::Transport> sender;
  std::unique_ptr<transport::Connection> conn;
};

absl::StatusOr<Pair> MakePair(std::shared_ptr<DeviceCopier> copier) {
  transport::UcxOptions options;
  options.transports = kTls;
  options.device_copier = std::move(copier);
  Pair p;
  KVWIRE_ASSIGN_OR_RETURN(p.receiver, transport::MakeUcxTransport(options));
  KVWIRE_ASSIGN_OR_RETURN(p.sender, transport::MakeUcxTransport(options));
  return p;
}

// Median milliseconds from StartSend to arrival for one frame of `source` (of `kind`).
absl::StatusOr<double> TimeFrames(Pair& p, const uint8_t* source, uint64_t bytes, MemoryKind kind,
                                  int repeats) {
  const RequestId request = NewRequestId();
  uint32_t sequence = 0;
  absl::StatusOr<double> ms = MedianWallMillis(kWarmups, repeats, [&]() -> absl::Status {
    FrameInfo info{request, 0, sequence++, bytes, {}};
    KVWIRE_ASSIGN_OR_RETURN(auto op,
                            p.conn->StartSend(info, {}, absl::MakeConstSpan(source, bytes), kind));
    KVWIRE_RETURN_IF_ERROR(op->Wait(Soon()));
    return p.receiver->Receive(request, Soon()).status();
  });
  KVWIRE_RETURN_IF_ERROR(p.receiver->CancelReceive(request, Soon()));
  return ms;
}

}  // namespace

absl::StatusOr<GpuTransferResult> MeasureGpuTransfer(const GpuTransferOptions& o) {
  KVWIRE_ASSIGN_OR_RETURN(std::shared_ptr<DeviceCopier> copier, kc::MakeDeviceCopier(o.device));
  KVWIRE_ASSIGN_OR_RETURN(std::unique_ptr<kc::Context> ctx, kc::Context::Create(o.device));
  const uint64_t largest = *std::max_element(o.sizes.begin(), o.sizes.end());

  // A source and a destination on each side, of the largest size, reused by every frame.
  KVWIRE_ASSIGN_OR_RETURN(kc::DeviceBuffer device_source, kc::DeviceBuffer::Allocate(largest));
  KVWIRE_ASSIGN_OR_RETURN(kc::DeviceBuffer device_dest, kc::DeviceBuffer::Allocate(largest));
  std::vector<uint8_t> host_source(largest), host_dest(largest);
  for (uint64_t i = 0; i < largest; ++i) host_source[i] = static_cast<uint8_t>(i * 131 + 7);
  KVWIRE_RETURN_IF_ERROR(device_source.Upload(*ctx, host_source.data(), largest));
  KVWIRE_RETURN_IF_ERROR(ctx->Synchronize());

  GpuTransferResult result;
  result.transport = kTls;
  // The staging copies alone, pinned, at the largest size.
  KVWIRE_ASSIGN_OR_RETURN(void* pinned, copier->AllocatePinned(largest));
  absl::StatusOr<double> to_host = MedianWallMillis(kWarmups, o.repeats, [&] {
    return copier->ToHost(pinned, device_source.data(), largest, Soon());
  });
  absl::StatusOr<double> to_device = MedianWallMillis(kWarmups, o.repeats, [&] {
    return copier->ToDevice(device_dest.data(), pinned, largest, Soon());
  });
  copier->FreePinned(pinned);
  KVWIRE_RETURN_IF_ERROR(to_host.status());
  KVWIRE_RETURN_IF_ERROR(to_device.status());
  result.to_host_gbps = Gbps(largest, *to_host);
  result.to_device_gbps = Gbps(largest, *to_device);

  KVWIRE_ASSIGN_OR_RETURN(Pair p, MakePair(copier));
  result.path = p.sender->capabilities().gpu_memory_staged ? "staged through pinned host memory"
                                                           : "native";
  MemoryKind dest_kind = MemoryKind::kCuda;
  p.receiver->SetAcceptor([&](const FrameInfo& info, absl::Span<const uint8_t>)
                              -> absl::StatusOr<Destination> {
    if (info.payload_bytes > largest) return absl::InvalidArgumentError("frame too large");
    if (dest_kind == MemoryKind::kCuda) {
      return Destination{absl::MakeSpan(device_dest.as<uint8_t>(), info.payload_bytes),
                         MemoryKind::kCuda};
    }
    return Destination{absl::MakeSpan(host_dest.data(), info.payload_bytes)};
  });
  KVWIRE_ASSIGN_OR_RETURN(p.conn, p.sender->Connect(p.receiver->LocalAddress(), Soon()));
  for (uint64_t bytes : o.sizes) {
    GpuTransferRow row;
    row.bytes = bytes;
    dest_kind = MemoryKind::kCuda;
    KVWIRE_ASSIGN_OR_RETURN(row.device_ms, TimeFrames(p, device_source.as<uint8_t>(), bytes,
                                                      MemoryKind::kCuda, o.repeats));
    dest_kind = MemoryKind::kHost;
    KVWIRE_ASSIGN_OR_RETURN(row.host_ms,
                            TimeFrames(p, host_source.data(), bytes, MemoryKind::kHost, o.repeats));
    std::printf("gpu transfer: %6.1f MiB  device->device %8.3f ms (%6.2f GB/s)  host->host "
                "%8.3f ms (%6.2f GB/s)\n",
                bytes / 1048576.0, row.device_ms, Gbps(bytes, row.device_ms), row.host_ms,
                Gbps(bytes, row.host_ms));
    result.rows.push_back(row);
  }
  // The last frame landed in device_dest: check it is the source's bytes.
  std::vector<uint8_t> landed(o.sizes.back());
  KVWIRE_RETURN_IF_ERROR(device_dest.Download(*ctx, landed.data(), landed.size()));
  if (!std::equal(landed.begin(), landed.end(), host_source.begin())) {
    return absl::DataLossError("the device payload that arrived differs from the one sent");
  }
  p.conn.reset();
  return result;
}

void PrintGpuTransfer(const GpuTransferResult& r) {
  std::printf("gpu transfer (UCX %s, device memory %s): pinned copies device->host %.1f GB/s, "
              "host->device %.1f GB/s\n",
              r.transport.c_str(), r.path.c_str(), r.to_host_gbps, r.to_device_gbps);
  for (const GpuTransferRow& row : r.rows) {
    std::printf("  %8.1f MiB: device->device %.2f GB/s = %.2f of host->host (%.2f GB/s)\n",
                row.bytes / 1048576.0, Gbps(row.bytes, row.device_ms),
                row.host_ms / row.device_ms, Gbps(row.bytes, row.host_ms));
  }
}

std::string GpuTransferJson(const GpuTransferResult& r) {
  std::string out = absl::StrFormat(
      "{\"transport\": \"%s\", \"path\": \"%s\", \"to_host_gbps\": %.6g, \"to_device_gbps\": "
      "%.6g, \"rows\": [",
      r.transport, r.path, r.to_host_gbps, r.to_device_gbps);
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const GpuTransferRow& row = r.rows[i];
    absl::StrAppendFormat(&out,
                          "%s{\"bytes\": %d, \"device_ms\": %.6g, \"host_ms\": %.6g, "
                          "\"device_gbps\": %.6g, \"host_gbps\": %.6g, \"device_over_host\": "
                          "%.6g}",
                          i ? ", " : "", row.bytes, row.device_ms, row.host_ms,
                          Gbps(row.bytes, row.device_ms), Gbps(row.bytes, row.host_ms),
                          row.host_ms / row.device_ms);
  }
  out += "]}";
  return out;
}

}  // namespace kvwire::bench
