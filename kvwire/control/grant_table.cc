#include "kvwire/control/grant_table.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvwire/format/frame.h"

namespace kvwire::control {
namespace {

// Abort frames are tiny (code + message); this much is always admitted for one.
constexpr uint64_t kAbortAllowance = 8192;

bool IsAbortFrame(absl::Span<const uint8_t> frame_header) {
  // Byte 6 of a v1 frame header is the frame type; the assembler validates the rest.
  return frame_header.size() == format::kFrameHeaderSize &&
         frame_header[6] == static_cast<uint8_t>(format::FrameType::kAbort);
}

}  // namespace

GrantTable::GrantTable(GrantTableOptions options) : options_(std::move(options)) {}

absl::StatusOr<GrantInfo> GrantTable::Reserve(RequestId request_id, uint64_t max_bytes,
                                              absl::Duration lease) {
  if (max_bytes == 0 || lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("grant needs bytes and a lease (max_bytes=", max_bytes,
                     ", lease=", absl::FormatDuration(lease), ")"));
  }
  absl::MutexLock lock(&mu_);
  ExpireLocked();
  if (grants_.contains(request_id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", request_id, " already holds a grant"));
  }
  if (grants_.size() >= options_.capacity) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", options_.capacity, " slots are in use"));
  }
  Grant& grant = grants_[request_id];
  grant.info = GrantInfo{request_id, next_slot_++, NewToken(), max_bytes, options_.now() + lease};
  return grant.info;
}

absl::Status GrantTable::CheckAdmission(const Grant& grant, const transport::FrameInfo& info,
                                        absl::Span<const uint8_t> frame_header) {
  if (!TokensEqual(grant.info.token, info.credential)) {
    return absl::PermissionDeniedError(
        absl::StrCat("wrong grant token for request ", info.request_id));
  }
  if (grant.state == State::kFinished) {
    return absl::PermissionDeniedError(
        absl::StrCat("grant of request ", info.request_id, " is already consumed"));
  }
  const uint64_t allowance =
      grant.info.max_bytes + (IsAbortFrame(frame_header) ? kAbortAllowance : 0);
  // Compared piecewise so a hostile payload length cannot wrap the sum.
  const bool fits = info.payload_bytes <= allowance &&
                    frame_header.size() <= allowance - info.payload_bytes &&
                    grant.used_bytes <= allowance - info.payload_bytes - frame_header.size();
  if (!fits) {
    const uint64_t frame_bytes = frame_header.size() + info.payload_bytes;
    return absl::ResourceExhaustedError(
        absl::StrCat("request ", info.request_id, ": frame of ", frame_bytes, " bytes after ",
                     grant.used_bytes, " exceeds the granted ", grant.info.max_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<transport::Destination> GrantTable::Accept(const transport::FrameInfo& info,
                                                          absl::Span<const uint8_t> frame_header) {
  absl::MutexLock lock(&mu_);
  ExpireLocked();
  auto it = grants_.find(info.request_id);
  if (it == grants_.end()) {
    return absl::PermissionDeniedError(absl::StrCat("no live grant for request ", info.request_id));
  }
  Grant& grant = it->second;
  if (absl::Status s = CheckAdmission(grant, info, frame_header); !s.ok()) return s;
  const uint64_t frame_bytes = frame_header.size() + info.payload_bytes;
  auto buffer = std::make_unique<uint8_t[]>(frame_bytes);
  if (!frame_header.empty()) std::memcpy(buffer.get(), frame_header.data(), frame_header.size());
  transport::Destination destination;
  destination.buffer = absl::MakeSpan(buffer.get() + frame_header.size(), info.payload_bytes);
  grant.buffers.push_back(std::move(buffer));
  grant.used_bytes += frame_bytes;
  grant.state = State::kStreaming;
  return destination;
}

transport::Acceptor GrantTable::MakeAcceptor() {
  return [this](const transport::FrameInfo& info, absl::Span<const uint8_t> frame_header) {
    return Accept(info, frame_header);
  };
}

absl::Status GrantTable::Finish(RequestId request_id) {
  absl::MutexLock lock(&mu_);
  auto it = grants_.find(request_id);
  if (it == grants_.end()) {
    return absl::NotFoundError(absl::StrCat("no grant for request ", request_id));
  }
  it->second.state = State::kFinished;
  it->second.buffers.clear();
  return absl::OkStatus();
}

absl::Status GrantTable::Release(RequestId request_id, uint64_t slot_id) {
  absl::MutexLock lock(&mu_);
  auto it = grants_.find(request_id);
  if (it == grants_.end() || it->second.info.slot_id != slot_id) {
    return absl::NotFoundError(
        absl::StrCat("no grant for request ", request_id, " in slot ", slot_id));
  }
  grants_.erase(it);
  return absl::OkStatus();
}

void GrantTable::FreeFrame(RequestId request_id, const uint8_t* payload) {
  absl::MutexLock lock(&mu_);
  auto it = grants_.find(request_id);
  if (it == grants_.end()) return;
  auto& buffers = it->second.buffers;
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i].get() + format::kFrameHeaderSize == payload || buffers[i].get() == payload) {
      buffers.erase(buffers.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
}

int GrantTable::ExpireLocked() {
  const absl::Time now = options_.now();
  int expired = 0;
  for (auto it = grants_.begin(); it != grants_.end();) {
    if (it->second.state == State::kReserved && it->second.info.lease_expiry <= now) {
      grants_.erase(it++);
      ++expired;
    } else {
      ++it;
    }
  }
  return expired;
}

int GrantTable::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  return ExpireLocked();
}

size_t GrantTable::live_grants() {
  absl::MutexLock lock(&mu_);
  ExpireLocked();
  return grants_.size();
}

bool GrantTable::Contains(RequestId request_id) {
  absl::MutexLock lock(&mu_);
  ExpireLocked();
  return grants_.contains(request_id);
}

uint64_t GrantTable::free_bytes_granted() {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [id, grant] : grants_) {
    if (grant.state != State::kFinished)
      total += grant.info.max_bytes - std::min(grant.info.max_bytes, grant.used_bytes);
  }
  return total;
}

absl::Span<const uint8_t> GrantTable::ContiguousFrame(const transport::ReceivedFrame& frame) {
  const size_t header = frame.frame_header.size();
  return absl::Span<const uint8_t>(frame.payload.data() - header, header + frame.payload.size());
}

}  // namespace kvwire::control
