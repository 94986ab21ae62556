// kvwire/transport/inbox.h — receive-side bookkeeping shared by every Transport implementation.
//
// The Inbox holds the Acceptor, admits incoming frames (cancelled requests and bad destinations
// are rejected before any byte is written), counts payloads still being written, queues completed
// frames per request for Receive(), and turns "peer gone" into UNAVAILABLE for every request that
// peer had sent frames of. Implementation detail of kvwire/transport; not a public API.
// Thread-safe.
#ifndef KVWIRE_TRANSPORT_INBOX_H_
#define KVWIRE_TRANSPORT_INBOX_H_

#include <cstdint>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport {

using PeerId = uint64_t;

class Inbox {
 public:
  void SetAcceptor(Acceptor acceptor);

  // Runs the Acceptor for a frame from `peer` and, if it accepts, records one payload in flight
  // for the request. Every OK result must be followed by exactly one Complete() or Fail().
  absl::StatusOr<Destination> Admit(PeerId peer, const FrameInfo& info,
                                    absl::Span<const uint8_t> frame_header);
  void Complete(PeerId peer, ReceivedFrame frame);
  void Fail(PeerId peer, RequestId request_id, absl::Status status);

  // Every request `peer` sent frames of (and did not end by CancelReceive) fails UNAVAILABLE.
  void PeerGone(PeerId peer, absl::string_view why);

  absl::StatusOr<ReceivedFrame> Receive(RequestId request_id, Deadline deadline);
  absl::Status CancelReceive(RequestId request_id, Deadline deadline);

  // Waits until no payload of any request is being written (used at shutdown).
  absl::Status Drain(Deadline deadline);

 private:
  struct Request {
    std::deque<absl::StatusOr<ReceivedFrame>> ready;
    int in_flight = 0;
    bool cancelled = false;
  };
  // Cancelled requests remembered so late frames are rejected; the oldest are forgotten first.
  static constexpr size_t kMaxRememberedCancels = 65536;

  void Push(PeerId peer, RequestId request_id, absl::StatusOr<ReceivedFrame> item);

  absl::Mutex acceptor_mu_;
  Acceptor acceptor_ ABSL_GUARDED_BY(acceptor_mu_);

  absl::Mutex mu_;
  // node_hash_map: waiters hold references to their Request across Await (pointer stability).
  absl::node_hash_map<RequestId, Request> requests_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<PeerId, absl::flat_hash_set<RequestId>> peer_requests_ ABSL_GUARDED_BY(mu_);
  std::deque<RequestId> cancel_order_ ABSL_GUARDED_BY(mu_);
  int total_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

// A Transport whose receive side is an Inbox: the receive half of the interface, shared by the
// implementations. The Inbox outlives the derived transport's threads (base destroyed last).
class InboxTransport : public Transport {
 public:
  void SetAcceptor(Acceptor acceptor) override { inbox_.SetAcceptor(std::move(acceptor)); }
  absl::StatusOr<ReceivedFrame> Receive(RequestId request_id, Deadline deadline) override {
    return inbox_.Receive(request_id, deadline);
  }
  absl::Status CancelReceive(RequestId request_id, Deadline deadline) override {
    return inbox_.CancelReceive(request_id, deadline);
  }

 protected:
  Inbox& inbox() { return inbox_; }

 private:
  Inbox inbox_;
};

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_INBOX_H_
