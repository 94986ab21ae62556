// kvwire/transport/transport.h — the data-plane transport interface.
//
// A Transport moves *frames* between processes. A frame is an opaque message made of a small
// frame header (the kvwire/format header bytes, at most kMaxFrameHeaderBytes) and a payload
// (any number of bytes up to Capabilities::max_payload_bytes). The transport wraps each frame in
// its own fixed 72-byte transport header (wire_header.h: request id, stream, sequence, lengths,
// a 16-byte credential) and never interprets the frame bytes.
//
// Shape of a transfer (push model, see ARCHITECTURE.md §1, §3):
//   receiver: t = MakeXxxTransport(); t->SetAcceptor(...); hand t->LocalAddress() to the sender
//             (bytes; carried in the gRPC grant);
//   sender:   c = t->Connect(address, deadline); c->StartSend(frame...)->Wait(deadline) ...
//   receiver: t->Receive(request_id, deadline) returns each completed frame of that request.
// Every Transport both sends (through Connections) and receives (through its Acceptor).
//
// Receive path: when a frame's transport header arrives, the Acceptor sees the FrameInfo (request
// id, stream, sequence, payload length, credential) and the frame header bytes *before any
// payload byte is written anywhere*, and returns the destination buffer or an error. An error is
// sent back to the sender, whose send then fails with that status, and nothing is written. This
// is where grant/token checks (PERMISSION_DENIED, RESOURCE_EXHAUSTED) plug in. Accepted payloads
// land directly in the destination (UCX rendezvous: no intermediate copy).
//
// Thread-safety: Transport, Connection and SendOperation methods are thread-safe unless noted.
// The Acceptor runs on a thread that drives the transport (its progress thread; for UCX with
// UcxOptions::drive_window, possibly a thread waiting in SendOperation::Wait; for loopback, the
// sending thread): it must be quick and must not block or call back into the transport.
//
// Error codes: INVALID_ARGUMENT (bad caller arguments, unparsable address), DEADLINE_EXCEEDED
// (a wait ran out), UNAVAILABLE (peer gone, connection broken, transport shut down), DATA_LOSS
// (malformed transport header from a peer), CANCELLED (Cancel / CancelReceive), and whatever
// status the receiver's Acceptor returned when it rejected a frame.
#ifndef KVWIRE_TRANSPORT_TRANSPORT_H_
#define KVWIRE_TRANSPORT_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/ids.h"

namespace kvwire::transport {

// Largest frame header (format bytes) a transport carries beside the payload.
inline constexpr size_t kMaxFrameHeaderBytes = 4096;
// Largest payload any transport accepts (a transport may advertise less).
inline constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 34;  // 16 GiB

// Opaque credential carried by every frame (16 bytes: a grant's one-time token, or zeros).
using Credential = Token;

// What the receiver learns about a frame before it provides a destination.
struct FrameInfo {
  RequestId request_id = 0;
  uint32_t stream = 0;    // Caller-defined sub-stream of the request (e.g. a layer index).
  uint32_t sequence = 0;  // Caller-defined order within the stream.
  uint64_t payload_bytes = 0;
  Credential credential;
};

enum class MemoryKind { kHost, kCuda };

struct Capabilities {
  std::string name;                  // "loopback", "ucx", "nccl".
  bool supports_gpu_memory = false;  // Payloads and destinations may be CUDA device memory.
  bool gpu_memory_staged = false;    // ... copied through pinned host memory on each side.
  bool zero_copy_receive = false;    // Large payloads land in the destination with no copy.
  uint64_t max_payload_bytes = 0;
  size_t max_frame_header_bytes = kMaxFrameHeaderBytes;
};

// A registered memory range. Registration is optional: it saves the transport a registration (or
// a bounce-buffer copy) per transfer. Sends whose payload lies inside a region registered with the
// sending transport use it automatically; receives use it when the Acceptor names it in the
// Destination. Destroying the region deregisters it; it must outlive every transfer that uses
// its memory.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual void* data() const = 0;
  virtual size_t size() const = 0;
  virtual MemoryKind kind() const = 0;
};

// A region that records its range and registers nothing, for transports (or memory kinds) that
// need no registration.
std::unique_ptr<MemoryRegion> MakeUnregisteredRegion(void* data, size_t bytes, MemoryKind kind);

// Where an accepted payload goes: `buffer` (at least FrameInfo::payload_bytes bytes, of kind
// `kind`), optionally inside a region registered with this transport.
struct Destination {
  absl::Span<uint8_t> buffer;
  MemoryKind kind = MemoryKind::kHost;
  const MemoryRegion* region = nullptr;
};

// Decides, per incoming frame, where its payload goes. Returns a Destination, or a non-OK status
// that rejects the frame: the sender's send fails with that status, nothing is written and the
// receiver's Receive() never sees the frame. `frame_header` (the sender's format header bytes)
// is valid only during the call.
using Acceptor = std::function<absl::StatusOr<Destination>(const FrameInfo& info,
                                                           absl::Span<const uint8_t> frame_header)>;

// A frame that has fully arrived. `payload` points into the Destination the Acceptor chose.
struct ReceivedFrame {
  FrameInfo info;
  std::string frame_header;  // A copy of the sender's frame header bytes.
  absl::Span<uint8_t> payload;
};

// One frame on its way out. Its buffers (frame header and payload) must stay valid until Wait
// returns a final status (anything but DEADLINE_EXCEEDED) or the operation is destroyed.
class SendOperation {
 public:
  // Destroying an unfinished operation cancels it and returns once the transport no longer
  // touches its buffers.
  virtual ~SendOperation() = default;
  // OK once the receiver has the whole frame in its destination; the receiver's rejection status;
  // UNAVAILABLE if the peer went away; CANCELLED; DEADLINE_EXCEEDED if `deadline` passes first
  // (the operation keeps going: Wait again or destroy it).
  virtual absl::Status Wait(Deadline deadline) = 0;
  virtual bool Done() const = 0;
};

// A sending channel to one peer transport.
class Connection {
 public:
  virtual ~Connection() = default;

  // Starts sending one frame. `frame_header` is at most kMaxFrameHeaderBytes;
  // `payload` may live in memory of kind `kind` (kCuda only if supports_gpu_memory).
  virtual absl::StatusOr<std::unique_ptr<SendOperation>> StartSend(
      const FrameInfo& info, absl::Span<const uint8_t> frame_header,
      absl::Span<const uint8_t> payload, MemoryKind kind = MemoryKind::kHost) = 0;

  // StartSend + Wait. INVALID_ARGUMENT if info.payload_bytes disagrees with payload.size().
  absl::Status Send(const FrameInfo& info, absl::Span<const uint8_t> frame_header,
                    absl::Span<const uint8_t> payload, Deadline deadline);

  // Fails this request's unfinished sends and all later ones with CANCELLED.
  virtual void Cancel(RequestId request_id) = 0;

  // Fault injection for tests and fuzzers: sends `transport_header` verbatim in place of the
  // encoded transport header (kTransportHeaderBytes expected, anything accepted).
  virtual absl::StatusOr<std::unique_ptr<SendOperation>> StartSendRawForTesting(
      absl::Span<const uint8_t> transport_header, absl::Span<const uint8_t> frame_header,
      absl::Span<const uint8_t> payload) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual Capabilities capabilities() const = 0;

  // This transport's address as opaque bytes (binary safe; use AddressToHex for text).
  virtual std::string LocalAddress() const = 0;

  // Opens a channel to the transport at `peer_address`. DEADLINE_EXCEEDED or UNAVAILABLE when
  // nobody answers there in time; INVALID_ARGUMENT for an address of another transport kind.
  virtual absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view peer_address,
                                                              Deadline deadline) = 0;

  virtual absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t bytes,
                                                                       MemoryKind kind) = 0;

  // Installs the receive-side hook. Frames arriving with no Acceptor are rejected with
  // FAILED_PRECONDITION. Replacing it while frames arrive is allowed.
  virtual void SetAcceptor(Acceptor acceptor) = 0;

  // The next completed frame of `request_id`, in completion order. Fails with UNAVAILABLE when a
  // peer that sent frames of this request is gone, CANCELLED after CancelReceive, DATA_LOSS or
  // INTERNAL when an accepted frame could not be delivered, DEADLINE_EXCEEDED on `deadline`.
  virtual absl::StatusOr<ReceivedFrame> Receive(RequestId request_id, Deadline deadline) = 0;

  // Ends the receive side of `request_id`: wakes its Receive() waiters with CANCELLED, rejects
  // later frames with CANCELLED, drops undelivered completions, and waits until no payload of
  // this request is still being written. Also the way to release a finished request's state.
  virtual absl::Status CancelReceive(RequestId request_id, Deadline deadline) = 0;
};

// Hex rendering of binary addresses, for logs, command lines and text protocols.
std::string AddressToHex(absl::string_view address);
absl::StatusOr<std::string> AddressFromHex(absl::string_view hex);

// The in-process transport: addresses are "loopback:<n>" and resolve only inside this process.
// Destroying a loopback transport makes its peers' sends fail with UNAVAILABLE and fails its
// peers' in-flight receives of requests it sent with UNAVAILABLE.
std::unique_ptr<Transport> MakeLoopbackTransport();

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_TRANSPORT_H_
