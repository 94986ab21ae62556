// The in-process loopback transport: a send runs the receiver's Acceptor and copies the payload on
// the sender's thread, so every SendOperation is finished when StartSend returns.
#include <atomic>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kvwire/transport/inbox.h"
#include "kvwire/transport/send_state.h"
#include "kvwire/transport/transport.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport {
namespace {

constexpr absl::string_view kAddressPrefix = "loopback:";

// The receiving half of one loopback transport; shared with the connections that point at it so
// a send racing the transport's destruction sees "closed" instead of freed memory.
class LoopbackCore {
 public:
  explicit LoopbackCore(uint64_t id) : id_(id) {}
  uint64_t id() const { return id_; }
  Inbox& inbox() { return inbox_; }

  absl::Status Deliver(PeerId sender, absl::Span<const uint8_t> wire,
                       absl::Span<const uint8_t> frame_header, absl::Span<const uint8_t> payload) {
    absl::ReaderMutexLock lock(&close_mu_);
    if (closed_) return absl::UnavailableError(absl::StrCat("loopback:", id_, " is closed"));
    absl::StatusOr<TransportHeader> header = DecodeTransportHeader(wire, kMaxPayloadBytes);
    if (!header.ok()) return header.status();
    if (header->frame_header_bytes != frame_header.size() ||
        header->info.payload_bytes != payload.size()) {
      return absl::DataLossError(absl::StrCat("transport header announces ",
                                              header->frame_header_bytes, "+",
                                              header->info.payload_bytes, " bytes, message has ",
                                              frame_header.size(), "+", payload.size()));
    }
    absl::StatusOr<Destination> dest = inbox_.Admit(sender, header->info, frame_header);
    if (!dest.ok()) return dest.status();
    if (!payload.empty()) std::memcpy(dest->buffer.data(), payload.data(), payload.size());
    inbox_.Complete(
        sender, ReceivedFrame{header->info, std::string(frame_header.begin(), frame_header.end()),
                              dest->buffer.first(payload.size())});
    return absl::OkStatus();
  }

  // After Close() returns no Deliver is running or will write anything.
  void Close() {
    absl::WriterMutexLock lock(&close_mu_);
    closed_ = true;
  }

  void NoteContacted(const std::shared_ptr<LoopbackCore>& peer) {
    absl::MutexLock lock(&contacted_mu_);
    contacted_.push_back(peer);
  }
  std::vector<std::weak_ptr<LoopbackCore>> Contacted() {
    absl::MutexLock lock(&contacted_mu_);
    return contacted_;
  }

 private:
  const uint64_t id_;
  Inbox inbox_;
  absl::Mutex close_mu_;
  bool closed_ ABSL_GUARDED_BY(close_mu_) = false;
  absl::Mutex contacted_mu_;
  std::vector<std::weak_ptr<LoopbackCore>> contacted_ ABSL_GUARDED_BY(contacted_mu_);
};

struct Registry {
  absl::Mutex mu;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  absl::flat_hash_map<uint64_t, std::weak_ptr<LoopbackCore>> cores ABSL_GUARDED_BY(mu);
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

class FinishedOperation final : public SendOperation {
 public:
  explicit FinishedOperation(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait(Deadline) override { return status_; }
  bool Done() const override { return true; }

 private:
  absl::Status status_;
};

class LoopbackConnection final : public Connection {
 public:
  LoopbackConnection(std::shared_ptr<LoopbackCore> self, std::weak_ptr<LoopbackCore> peer)
      : self_(std::move(self)), peer_(std::move(peer)) {}

  absl::StatusOr<std::unique_ptr<SendOperation>> StartSend(const FrameInfo& info,
                                                           absl::Span<const uint8_t> frame_header,
                                                           absl::Span<const uint8_t> payload,
                                                           MemoryKind kind) override {
    if (kind != MemoryKind::kHost) {
      return absl::InvalidArgumentError("loopback transport carries host memory only");
    }
    absl::Status valid =
        CheckOutgoingFrame(info, frame_header.size(), payload.size(), kMaxPayloadBytes);
    if (!valid.ok()) return valid;
    if (IsCancelled(info.request_id)) {
      return absl::CancelledError(absl::StrCat("request ", info.request_id, " was cancelled"));
    }
    TransportHeader header{self_->id(), next_send_id_++, info,
                           static_cast<uint32_t>(frame_header.size())};
    return StartSendRawForTesting(EncodeTransportHeader(header), frame_header, payload);
  }

  void Cancel(RequestId request_id) override {
    absl::MutexLock lock(&mu_);
    cancelled_.insert(request_id);
  }

  absl::StatusOr<std::unique_ptr<SendOperation>> StartSendRawForTesting(
      absl::Span<const uint8_t> transport_header, absl::Span<const uint8_t> frame_header,
      absl::Span<const uint8_t> payload) override {
    std::shared_ptr<LoopbackCore> peer = peer_.lock();
    absl::Status status = peer ? peer->Deliver(self_->id(), transport_header, frame_header, payload)
                               : absl::UnavailableError("loopback peer transport was destroyed");
    return std::make_unique<FinishedOperation>(std::move(status));
  }

 private:
  bool IsCancelled(RequestId id) {
    absl::MutexLock lock(&mu_);
    return cancelled_.contains(id);
  }

  std::shared_ptr<LoopbackCore> self_;
  std::weak_ptr<LoopbackCore> peer_;
  std::atomic<uint64_t> next_send_id_{1};
  absl::Mutex mu_;
  absl::flat_hash_set<RequestId> cancelled_ ABSL_GUARDED_BY(mu_);
};

class LoopbackTransport final : public Transport {
 public:
  LoopbackTransport() {
    Registry& registry = GetRegistry();
    absl::MutexLock lock(&registry.mu);
    core_ = std::make_shared<LoopbackCore>(registry.next_id++);
    registry.cores[core_->id()] = core_;
  }

  ~LoopbackTransport() override {
    {
      Registry& registry = GetRegistry();
      absl::MutexLock lock(&registry.mu);
      registry.cores.erase(core_->id());
    }
    core_->Close();
    for (const auto& weak : core_->Contacted()) {
      if (auto peer = weak.lock()) peer->inbox().PeerGone(core_->id(), "loopback sender destroyed");
    }
  }

  Capabilities capabilities() const override {
    return Capabilities{"loopback", false, false, false, kMaxPayloadBytes, kMaxFrameHeaderBytes};
  }

  std::string LocalAddress() const override { return absl::StrCat(kAddressPrefix, core_->id()); }

  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view peer_address,
                                                      Deadline deadline) override {
    uint64_t id = 0;
    if (!absl::ConsumePrefix(&peer_address, kAddressPrefix) ||
        !absl::SimpleAtoi(peer_address, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a loopback address: '", peer_address, "'"));
    }
    std::shared_ptr<LoopbackCore> peer;
    {
      Registry& registry = GetRegistry();
      absl::MutexLock lock(&registry.mu);
      auto it = registry.cores.find(id);
      if (it != registry.cores.end()) peer = it->second.lock();
    }
    if (!peer) return absl::UnavailableError(absl::StrCat("no loopback transport ", id));
    core_->NoteContacted(peer);
    return std::make_unique<LoopbackConnection>(core_, peer);
  }

  absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t bytes,
                                                               MemoryKind kind) override {
    if (kind != MemoryKind::kHost) {
      return absl::InvalidArgumentError("loopback transport registers host memory only");
    }
    return MakeUnregisteredRegion(data, bytes, MemoryKind::kHost);
  }

  void SetAcceptor(Acceptor acceptor) override { core_->inbox().SetAcceptor(std::move(acceptor)); }

  absl::StatusOr<ReceivedFrame> Receive(RequestId request_id, Deadline deadline) override {
    return core_->inbox().Receive(request_id, deadline);
  }

  absl::Status CancelReceive(RequestId request_id, Deadline deadline) override {
    return core_->inbox().CancelReceive(request_id, deadline);
  }

 private:
  std::shared_ptr<LoopbackCore> core_;
};

}  // namespace

std::unique_ptr<Transport> MakeLoopbackTransport() { return std::make_unique<LoopbackTransport>(); }

}  // namespace kvwire::transport
