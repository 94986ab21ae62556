#include "kvwire/transport/inbox.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kvwire::transport {

void Inbox::SetAcceptor(Acceptor acceptor) {
  absl::MutexLock lock(&acceptor_mu_);
  acceptor_ = std::move(acceptor);
}

absl::StatusOr<Destination> Inbox::Admit(PeerId peer, const FrameInfo& info,
                                         absl::Span<const uint8_t> frame_header) {
  {
    absl::MutexLock lock(&mu_);
    auto it = requests_.find(info.request_id);
    if (it != requests_.end() && it->second.cancelled) {
      return absl::CancelledError(
          absl::StrCat("request ", info.request_id, " was cancelled by the receiver"));
    }
  }
  absl::StatusOr<Destination> dest;
  {
    absl::MutexLock lock(&acceptor_mu_);
    if (!acceptor_) return absl::FailedPreconditionError("receiver has no acceptor installed");
    dest = acceptor_(info, frame_header);
  }
  if (!dest.ok()) return dest.status();
  if (dest->buffer.size() < info.payload_bytes) {
    return absl::InternalError(absl::StrCat("receiver offered ", dest->buffer.size(),
                                            " bytes for a payload of ", info.payload_bytes));
  }
  absl::MutexLock lock(&mu_);
  Request& request = requests_[info.request_id];
  if (request.cancelled) {  // CancelReceive ran while the acceptor decided.
    return absl::CancelledError(
        absl::StrCat("request ", info.request_id, " was cancelled by the receiver"));
  }
  ++request.in_flight;
  ++total_in_flight_;
  peer_requests_[peer].insert(info.request_id);
  return dest;
}

void Inbox::Push(PeerId peer, RequestId request_id, absl::StatusOr<ReceivedFrame> item) {
  absl::MutexLock lock(&mu_);
  --total_in_flight_;
  Request& request = requests_[request_id];
  --request.in_flight;
  if (!request.cancelled) request.ready.push_back(std::move(item));
}

void Inbox::Complete(PeerId peer, ReceivedFrame frame) {
  const RequestId id = frame.info.request_id;
  Push(peer, id, std::move(frame));
}

void Inbox::Fail(PeerId peer, RequestId request_id, absl::Status status) {
  Push(peer, request_id, std::move(status));
}

void Inbox::PeerGone(PeerId peer, absl::string_view why) {
  absl::MutexLock lock(&mu_);
  auto it = peer_requests_.find(peer);
  if (it == peer_requests_.end()) return;
  for (RequestId id : it->second) {
    Request& request = requests_[id];
    if (request.cancelled) continue;
    request.ready.push_back(
        absl::UnavailableError(absl::StrCat("peer of request ", id, " is gone: ", why)));
  }
  peer_requests_.erase(it);
}

absl::StatusOr<ReceivedFrame> Inbox::Receive(RequestId request_id, Deadline deadline) {
  absl::MutexLock lock(&mu_);
  Request& request = requests_[request_id];
  auto ready = [&request] { return request.cancelled || !request.ready.empty(); };
  if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline.ToAbslTime())) {
    return absl::DeadlineExceededError(
        absl::StrCat("no frame of request ", request_id, " arrived before the deadline"));
  }
  if (request.cancelled) {
    return absl::CancelledError(absl::StrCat("request ", request_id, " was cancelled"));
  }
  absl::StatusOr<ReceivedFrame> item = std::move(request.ready.front());
  request.ready.pop_front();
  return item;
}

absl::Status Inbox::CancelReceive(RequestId request_id, Deadline deadline) {
  absl::MutexLock lock(&mu_);
  Request& request = requests_[request_id];
  if (!request.cancelled) {
    request.cancelled = true;
    request.ready.clear();
    cancel_order_.push_back(request_id);
    for (auto& [peer, ids] : peer_requests_) ids.erase(request_id);
  }
  auto idle = [&request] { return request.in_flight == 0; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&idle), deadline.ToAbslTime())) {
    return absl::DeadlineExceededError(absl::StrCat("request ", request_id, ": ", request.in_flight,
                                                    " payloads still being written"));
  }
  while (cancel_order_.size() > kMaxRememberedCancels) {
    auto old = requests_.find(cancel_order_.front());
    if (old != requests_.end() && old->second.in_flight == 0) requests_.erase(old);
    cancel_order_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status Inbox::Drain(Deadline deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return total_in_flight_ == 0; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&idle), deadline.ToAbslTime())) {
    return absl::DeadlineExceededError(
        absl::StrCat(total_in_flight_, " payloads still being written at shutdown"));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::transport
