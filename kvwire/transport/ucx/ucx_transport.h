// kvwire/transport/ucx/ucx_transport.h — the Transport over UCX (UCP active messages).
//
// Frames travel as UCP active messages: the transport header and frame header ride in the AM
// header, the payload as AM data, which UCX sends eagerly when small and by rendezvous when
// large; rendezvous payloads are pulled straight into the Acceptor's destination
// (ucp_am_recv_data_nbx), so a large receive makes no intermediate copy. Endpoints use
// UCP_ERR_HANDLING_MODE_PEER: a peer that dies fails its transfers with UNAVAILABLE on the
// other side. The receiver opens its own endpoint back to each sender (the sender's worker
// address travels in the connection hello) and replies OK or the Acceptor's error per frame.
//
// Addresses: LocalAddress() is "ucx1" followed by the UCP worker address bytes; pass it to the
// peer out of band (e.g. hex-encoded in the gRPC grant).
//
// Progress: one thread per transport drives the UCP worker. It busy-polls for `busy_poll` after
// the last activity, then arms the worker and sleeps in epoll on the worker's event fd and a
// wake-up eventfd (100 ms cap), so an idle transport costs no CPU and a busy one adds no wake-up
// latency. Sends are issued inline by the calling thread when the worker is free, and a thread
// waiting for a send drives the worker itself for up to `drive_window` (the progress thread
// stands aside meanwhile); a mutex makes sure one thread at a time calls into UCX. Measured here
// (kvwire-bench transfer, 2 vCPUs): an idle transport uses 0 % CPU; the first 4 KiB send after 5 ms
// of idleness costs ~35-95 µs (TCP) and ~50-75 µs (shared memory) against ~13-20 µs / ~6 µs while
// busy.
//
// Device memory: payloads and destinations of MemoryKind::kCuda go straight through UCX when UCX
// was built with CUDA support. Otherwise, given UcxOptions::device_copier, they are staged through
// pinned host blocks (staging_pool.h): a send copies the payload to a block inside StartSend (so
// the caller's device buffer is free again when StartSend returns), a receive lands in a block
// and is copied to its device destination on the progress thread before the frame completes.
// Capabilities::gpu_memory_staged says which. Without either, kCuda is INVALID_ARGUMENT.
//
// Thread-safety: as the Transport interface. This header is UCX-free.
#ifndef KVWIRE_TRANSPORT_UCX_UCX_TRANSPORT_H_
#define KVWIRE_TRANSPORT_UCX_UCX_TRANSPORT_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvwire/base/device_copier.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport {

struct UcxOptions {
  // UCX_TLS for this transport's UCP context: "tcp", "posix,cma,self", "sm", ... Empty keeps
  // UCX's default (the UCX_TLS environment variable, else every transport UCX has, RDMA and
  // CUDA included).
  std::string transports;
  // Further UCX settings (names without the UCX_ prefix) applied with ucp_config_modify after
  // kvwire's defaults (KEEPALIVE_INTERVAL=1s; MM_ERROR_HANDLING=y so shared memory
  // qualifies for peer error handling).
  std::vector<std::pair<std::string, std::string>> config;
  // Busy-poll window of the progress thread after the last activity.
  absl::Duration busy_poll = absl::Microseconds(200);
  // How long a thread waiting in SendOperation::Wait drives the worker itself before sleeping
  // (zero: never). It saves two thread hand-overs per round trip and helps over shared memory
  // (4 KiB round trip ~4.3 -> ~2.5 us here), but over TCP UCX 1.13 only noticed the reply once
  // the progress thread polled again (~118 us), so it is off by default.
  absl::Duration drive_window = absl::ZeroDuration();
  // Carries kCuda payloads through pinned host memory when UCX cannot touch device memory itself
  // (the Debian UCX packages, for one). Unused when UCX has CUDA support.
  std::shared_ptr<DeviceCopier> device_copier;
  // Pinned bytes leased for staging at once; a transfer past it fails with RESOURCE_EXHAUSTED.
  size_t staging_limit_bytes = size_t{1} << 30;
  // Idle pinned bytes kept for reuse.
  size_t staging_keep_bytes = size_t{256} << 20;
  // Longest a staging copy may take before its transfer fails with DEADLINE_EXCEEDED.
  absl::Duration staging_copy_timeout = absl::Seconds(30);
};

// INVALID_ARGUMENT for a UCX setting UCX does not know; UCX initialisation errors via FromUcs.
absl::StatusOr<std::unique_ptr<Transport>> MakeUcxTransport(const UcxOptions& options = {});

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_UCX_UCX_TRANSPORT_H_
