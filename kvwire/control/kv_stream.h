// kvwire/control/kv_stream.h — one request's compressed KV cache over a Transport, layer by
// layer.
//
// Mapping onto the transport: every wire-format v1 frame travels as one transport frame whose
// frame header is the 48-byte format header and whose payload is the format payload; FrameInfo
// carries the request id, stream 0, the format sequence and the grant token as credential.
//
// KvStreamSender (prefill side): Start() sends the manifest, SendLayer() starts a layer's send
// as soon as the layer exists and returns without waiting for delivery (at most
// `max_in_flight` frames are outstanding, so layer l travels while layer l+1 computes),
// Commit() waits for every layer and sends the commit. Every send is bounded by
// `send_timeout`. On the first failure the sender sends an Abort frame best-effort, returns the
// failure and fails every later call with it. Destroying an uncommitted sender aborts it.
//
// KvStreamReceiver (decode side): Run() receives the request's frames, feeds a CacheAssembler and
// returns the installed KvCache on commit, the sender's status on an Abort, DATA_LOSS for a
// malformed frame, UNAVAILABLE when the sender went away, DEADLINE_EXCEEDED. It always calls
// CancelReceive on exit so the transport holds nothing for the request afterwards.
//
// Thread-compatible: one sender / receiver per request, used from one thread at a time.
#ifndef KVWIRE_CONTROL_KV_STREAM_H_
#define KVWIRE_CONTROL_KV_STREAM_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvwire/base/deadline.h"
#include "kvwire/base/ids.h"
#include "kvwire/cache/frames.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/format/messages.h"
#include "kvwire/transport/transport.h"

namespace kvwire::control {

struct SenderOptions {
  absl::Duration send_timeout = absl::Seconds(10);  // per frame, from its start
  size_t max_in_flight = 4;
  cache::EncodeOptions encode;
};

struct SenderStats {
  uint64_t wire_bytes = 0;  // format frames, headers included
  uint64_t frames = 0;
  uint64_t entries = 0;
  absl::Duration wait_time;  // time spent blocked on the transport
};

class KvStreamSender {
 public:
  // `connection` must outlive the sender.
  KvStreamSender(transport::Connection* connection, RequestId request_id, const Token& token,
                 format::Manifest manifest, SenderOptions options = {});
  ~KvStreamSender();
  KvStreamSender(const KvStreamSender&) = delete;
  KvStreamSender& operator=(const KvStreamSender&) = delete;

  absl::Status Start();
  absl::Status SendLayer(uint32_t layer, const cache::LayerCache& cache);
  absl::Status Commit();
  // Sends an Abort carrying `reason` (best effort, bounded by send_timeout) unless committed.
  void Abort(const absl::Status& reason);

  const SenderStats& stats() const { return stats_; }
  bool committed() const { return committed_; }

 private:
  struct Pending {
    std::vector<uint8_t> frame;
    std::unique_ptr<transport::SendOperation> op;
    Deadline deadline;
  };
  absl::Status Enqueue(std::vector<uint8_t> frame);
  absl::Status WaitOldest();
  absl::Status Fail(absl::Status status);

  transport::Connection* connection_;
  RequestId request_id_;
  Token token_;
  SenderOptions options_;
  cache::CacheStreamEncoder encoder_;
  std::deque<Pending> pending_;
  SenderStats stats_;
  absl::Status failure_;
  bool started_ = false;
  bool committed_ = false;
  bool aborted_ = false;
};

struct ReceiverOptions {
  format::Limits limits;
  // Checked on the manifest (model fingerprint, shape...); its error fails the stream.
  std::function<absl::Status(const format::Manifest&)> check_manifest;
  // Called after each frame has been consumed (to free its destination buffer).
  std::function<void(const transport::ReceivedFrame&)> on_consumed;
};

struct ReceiverStats {
  uint64_t wire_bytes = 0;
  uint64_t frames = 0;
  absl::Time first_frame;
  absl::Time committed;
};

class KvStreamReceiver {
 public:
  // `transport` must outlive the receiver.
  KvStreamReceiver(transport::Transport* transport, RequestId request_id,
                   ReceiverOptions options = {});

  absl::StatusOr<cache::KvCache> Run(Deadline deadline);

  const ReceiverStats& stats() const { return stats_; }
  const std::optional<format::Manifest>& manifest() const {
    return assembler_.checker().manifest();
  }

 private:
  absl::StatusOr<cache::KvCache> Loop(Deadline deadline);
  absl::Status Consume(const transport::ReceivedFrame& frame, bool* done);

  transport::Transport* transport_;
  RequestId request_id_;
  ReceiverOptions options_;
  cache::CacheAssembler assembler_;
  ReceiverStats stats_;
  std::vector<uint8_t> scratch_;
};

}  // namespace kvwire::control

#endif  // KVWIRE_CONTROL_KV_STREAM_H_
