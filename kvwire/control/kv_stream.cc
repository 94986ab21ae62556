#include "kvwire/control/kv_stream.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/format/frame.h"

namespace kvwire::control {
namespace {

// The sender's status carried by an Abort frame (never OK), or DATA_LOSS if the frame is bad.
absl::Status AbortReason(absl::Span<const uint8_t> frame, const format::Limits& limits) {
  KVWIRE_ASSIGN_OR_RETURN(format::FrameView view, format::DecodeFrame(frame, limits));
  KVWIRE_ASSIGN_OR_RETURN(format::Abort abort, format::DecodeAbort(view.payload, limits));
  if (abort.code == absl::StatusCode::kOk) abort.code = absl::StatusCode::kAborted;
  return absl::Status(abort.code, absl::StrCat("sender aborted: ", abort.message));
}

}  // namespace

KvStreamSender::KvStreamSender(transport::Connection* connection, RequestId request_id,
                               const Token& token, format::Manifest manifest, SenderOptions options)
    : connection_(connection),
      request_id_(request_id),
      token_(token),
      options_(options),
      encoder_(request_id, std::move(manifest), options.encode) {}

KvStreamSender::~KvStreamSender() {
  if (started_ && !committed_) Abort(absl::CancelledError("sender destroyed before commit"));
}

absl::Status KvStreamSender::Fail(absl::Status status) {
  if (failure_.ok()) failure_ = status;
  Abort(status);
  return status;
}

absl::Status KvStreamSender::Enqueue(std::vector<uint8_t> frame) {
  if (frame.size() < format::kFrameHeaderSize) {
    return absl::InternalError("encoder produced a frame shorter than its header");
  }
  Pending pending{std::move(frame), nullptr, Deadline::In(options_.send_timeout)};
  uint32_t sequence = 0;
  std::memcpy(&sequence, pending.frame.data() + 16, sizeof(sequence));  // little-endian host
  const auto header = absl::MakeConstSpan(pending.frame).first(format::kFrameHeaderSize);
  const auto payload = absl::MakeConstSpan(pending.frame).subspan(format::kFrameHeaderSize);
  transport::FrameInfo info{request_id_, 0, sequence, payload.size(), token_};
  KVWIRE_ASSIGN_OR_RETURN(pending.op, connection_->StartSend(info, header, payload));
  stats_.wire_bytes += pending.frame.size();
  ++stats_.frames;
  pending_.push_back(std::move(pending));
  return absl::OkStatus();
}

absl::Status KvStreamSender::WaitOldest() {
  const absl::Time start = absl::Now();
  Pending& oldest = pending_.front();
  absl::Status status = oldest.op->Wait(oldest.deadline);
  stats_.wait_time += absl::Now() - start;
  pending_.pop_front();  // destroying the operation cancels it if it is still running
  if (absl::IsDeadlineExceeded(status)) {
    return absl::DeadlineExceededError(absl::StrCat("request ", request_id_, ": a frame was not ",
                                                    "delivered within ",
                                                    absl::FormatDuration(options_.send_timeout)));
  }
  return status;
}

absl::Status KvStreamSender::Start() {
  if (started_) return absl::FailedPreconditionError("stream already started");
  started_ = true;
  absl::Status status = Enqueue(encoder_.ManifestFrame());
  return status.ok() ? status : Fail(status);
}

absl::Status KvStreamSender::SendLayer(uint32_t layer, const cache::LayerCache& cache) {
  if (!failure_.ok()) return failure_;
  if (!started_ || committed_) return absl::FailedPreconditionError("stream not open");
  auto frame = encoder_.LayerFrame(layer, cache);
  if (!frame.ok()) return Fail(frame.status());
  if (absl::Status s = Enqueue(*std::move(frame)); !s.ok()) return Fail(s);
  // Reap finished sends; block only when too many are outstanding.
  while (!pending_.empty() &&
         (pending_.front().op->Done() || pending_.size() > options_.max_in_flight)) {
    if (absl::Status s = WaitOldest(); !s.ok()) return Fail(s);
  }
  stats_.entries = encoder_.entries_sent();
  return absl::OkStatus();
}

absl::Status KvStreamSender::Commit() {
  if (!failure_.ok()) return failure_;
  if (!started_ || committed_) return absl::FailedPreconditionError("stream not open");
  // The commit goes out only after every layer has landed, so a commit means a complete cache.
  while (!pending_.empty()) {
    if (absl::Status s = WaitOldest(); !s.ok()) return Fail(s);
  }
  if (absl::Status s = Enqueue(encoder_.CommitFrame()); !s.ok()) return Fail(s);
  if (absl::Status s = WaitOldest(); !s.ok()) return Fail(s);
  committed_ = true;
  stats_.entries = encoder_.entries_sent();
  return absl::OkStatus();
}

void KvStreamSender::Abort(const absl::Status& reason) {
  if (committed_ || aborted_ || !started_) return;
  aborted_ = true;
  pending_.clear();  // destroying the operations cancels the outstanding layer sends
  std::vector<uint8_t> frame = encoder_.AbortFrame(reason);
  absl::Status sent = Enqueue(std::move(frame));
  if (sent.ok()) sent = WaitOldest();
  KVWIRE_LOG(DEBUG) << "request " << request_id_ << ": abort (" << reason << ") sent: " << sent;
}

KvStreamReceiver::KvStreamReceiver(transport::Transport* transport, RequestId request_id,
                                   ReceiverOptions options)
    : transport_(transport),
      request_id_(request_id),
      options_(std::move(options)),
      assembler_(options_.limits) {}

absl::StatusOr<cache::KvCache> KvStreamReceiver::Run(Deadline deadline) {
  absl::StatusOr<cache::KvCache> result = Loop(deadline);
  // Bounded even when the caller's deadline has passed: the transport must stop writing first.
  absl::Status cancelled = transport_->CancelReceive(request_id_, Deadline::In(absl::Seconds(5)));
  if (!cancelled.ok()) {
    KVWIRE_LOG(WARNING) << "request " << request_id_ << ": CancelReceive: " << cancelled;
  }
  return result;
}

absl::StatusOr<cache::KvCache> KvStreamReceiver::Loop(Deadline deadline) {
  bool done = false;
  while (!done) {
    KVWIRE_ASSIGN_OR_RETURN(transport::ReceivedFrame frame,
                            transport_->Receive(request_id_, deadline));
    absl::Status consumed = Consume(frame, &done);
    if (options_.on_consumed) options_.on_consumed(frame);
    KVWIRE_RETURN_IF_ERROR(consumed);
  }
  stats_.committed = absl::Now();
  return assembler_.TakeCache();
}

absl::Status KvStreamReceiver::Consume(const transport::ReceivedFrame& frame, bool* done) {
  if (frame.frame_header.size() != format::kFrameHeaderSize) {
    return absl::DataLossError(absl::StrCat("request ", request_id_, ": frame header of ",
                                            frame.frame_header.size(), " bytes, expected ",
                                            format::kFrameHeaderSize));
  }
  if (stats_.frames++ == 0) stats_.first_frame = absl::Now();
  scratch_.resize(frame.frame_header.size() + frame.payload.size());
  std::memcpy(scratch_.data(), frame.frame_header.data(), frame.frame_header.size());
  if (!frame.payload.empty()) {
    std::memcpy(scratch_.data() + frame.frame_header.size(), frame.payload.data(),
                frame.payload.size());
  }
  stats_.wire_bytes += scratch_.size();
  if (scratch_[6] == static_cast<uint8_t>(format::FrameType::kAbort)) {
    // Decoded here rather than by the assembler: frames the receiver refused leave gaps in the
    // sequence, and the sender's reason matters more than the gap.
    *done = true;
    return AbortReason(scratch_, options_.limits);
  }
  KVWIRE_ASSIGN_OR_RETURN(cache::CacheAssembler::Event event, assembler_.OnFrame(scratch_));
  if (event == cache::CacheAssembler::Event::kManifest && options_.check_manifest) {
    absl::Status fit = options_.check_manifest(*assembler_.checker().manifest());
    if (!fit.ok()) return fit;
  }
  *done = event == cache::CacheAssembler::Event::kCommitted;
  return absl::OkStatus();
}

}  // namespace kvwire::control
