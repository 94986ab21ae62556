// kvwire/control/grant_table.h — the decode node's grants: slots, one-time tokens, leases and the
// data-plane admission check.
//
// Reserve() hands out a slot with a fresh 16-byte token, a byte allowance and a lease. The
// transport Acceptor calls Accept() for every incoming frame, before any payload byte is written:
//   unknown request, expired lease, consumed grant or wrong token -> PERMISSION_DENIED;
//   the frame would take the request past its granted bytes       -> RESOURCE_EXHAUSTED;
// nothing is installed for a rejected frame. An accepted frame's destination is owned by the
// table and laid out as [frame header | payload] in one allocation (ContiguousFrame() recovers
// it). The first accepted frame starts the stream (the lease no longer applies); Finish() marks
// the stream over (the token is consumed: later frames are refused); Release() frees the slot.
// A grant whose lease ran out before its stream started is dropped by ExpireLeases() and by every
// other call. Small Abort frames are admitted past the byte allowance so a sender that ran out
// can still say so.
//
// Thread-safety: all methods are thread-safe; Accept only takes a short lock (transport-thread
// safe). Error codes: Reserve -> RESOURCE_EXHAUSTED (no free slot), ALREADY_EXISTS (the request
// already holds a grant), INVALID_ARGUMENT (zero bytes or non-positive lease); Release / Finish
// -> NOT_FOUND.
#ifndef KVWIRE_CONTROL_GRANT_TABLE_H_
#define KVWIRE_CONTROL_GRANT_TABLE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvwire/base/ids.h"
#include "kvwire/transport/transport.h"

namespace kvwire::control {

struct GrantTableOptions {
  uint32_t capacity = 8;  // concurrent grants (slots)
  // Clock used for leases; injectable so tests control time.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

struct GrantInfo {
  RequestId request_id = 0;
  uint64_t slot_id = 0;
  Token token;
  uint64_t max_bytes = 0;  // frame header + payload bytes over the whole stream
  absl::Time lease_expiry;
};

class GrantTable {
 public:
  explicit GrantTable(GrantTableOptions options = {});

  absl::StatusOr<GrantInfo> Reserve(RequestId request_id, uint64_t max_bytes, absl::Duration lease);

  // The Acceptor check (see the banner). `frame_header` is the sender's format header bytes.
  absl::StatusOr<transport::Destination> Accept(const transport::FrameInfo& info,
                                                absl::Span<const uint8_t> frame_header);
  // An Acceptor bound to this table (the table must outlive the transport's use of it).
  transport::Acceptor MakeAcceptor();

  // The stream of `request_id` is over (committed or failed): refuse further frames.
  absl::Status Finish(RequestId request_id);
  // Frees the slot and the frame buffers still held for `request_id`. `slot_id` must match.
  absl::Status Release(RequestId request_id, uint64_t slot_id);
  // Returns the buffer of a frame the receiver has consumed (bounds memory during a stream).
  void FreeFrame(RequestId request_id, const uint8_t* payload);
  // Drops grants whose lease ran out before their stream started; returns how many.
  int ExpireLeases();

  size_t live_grants();
  // Whether `request_id` holds a grant (false once its lease lapsed or it was released).
  bool Contains(RequestId request_id);
  uint32_t capacity() const { return options_.capacity; }
  // Bytes granted and not yet used, over all live grants.
  uint64_t free_bytes_granted();

  // The [frame header | payload] bytes of a frame received into a destination from this table.
  static absl::Span<const uint8_t> ContiguousFrame(const transport::ReceivedFrame& frame);

 private:
  enum class State { kReserved, kStreaming, kFinished };
  struct Grant {
    GrantInfo info;
    State state = State::kReserved;
    uint64_t used_bytes = 0;
    std::vector<std::unique_ptr<uint8_t[]>> buffers;
  };
  int ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAdmission(const Grant& grant, const transport::FrameInfo& info,
                              absl::Span<const uint8_t> frame_header)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GrantTableOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<RequestId, Grant> grants_ ABSL_GUARDED_BY(mu_);
  uint64_t next_slot_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace kvwire::control

#endif  // KVWIRE_CONTROL_GRANT_TABLE_H_
