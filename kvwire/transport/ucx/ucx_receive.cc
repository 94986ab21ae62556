// The UCX transport's receiving side: connection hellos from senders, incoming frames (checked,
// offered to the Acceptor, then copied or pulled by rendezvous into the destination), the reply
// for every frame, and memory registration.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvwire/base/log.h"
#include "kvwire/transport/ucx/ucx_internal.h"
#include "kvwire/transport/ucx/ucx_status.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport::ucx {

// ---------------------------------------------------------------------------------------------
// Peers (receiving side)

ucs_status_t UcxTransport::OnHello(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxTransport*>(arg);
  if (header_length < 8 + 1) return UCS_OK;
  const uint64_t id = GetLe<uint64_t>(header, 0);
  if (self->peers_.contains(id)) return UCS_OK;
  std::string address(static_cast<const char*>(header) + 8, header_length - 8);
  // Endpoint creation is deferred out of the callback, to the command loop.
  self->Post([self, id, address] {
    auto peer = std::make_unique<Peer>();
    peer->owner = self;
    peer->id = id;
    if (ucs_status_t s = self->CreateEp(address.data(), &OnPeerError, peer.get(), &peer->ep);
        s != UCS_OK) {
      KVWIRE_LOG(WARNING) << "cannot reach back to a connecting sender: " << ucs_status_string(s);
      return;
    }
    std::string ack;
    PutU64(&ack, id);
    self->SendSmall(peer->ep, kAmHelloAck, std::move(ack));
    self->peers_[id] = std::move(peer);
  });
  return UCS_OK;
}

ucs_status_t UcxTransport::OnBye(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxTransport*>(arg);
  if (header_length != 8) return UCS_OK;
  self->PeerFailed(GetLe<uint64_t>(header, 0), "the sender closed its connection");
  return UCS_OK;
}

void UcxTransport::OnPeerError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->owner->PeerFailed(peer->id, ucs_status_string(status));
}

void UcxTransport::PeerFailed(uint64_t peer_id, absl::string_view why) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  inbox().PeerGone(peer_id, why);
  CloseEp(it->second->ep, /*force=*/true);
  peers_.erase(it);
}

ucs_status_t UcxTransport::OnFrame(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
  auto* self = static_cast<UcxTransport*>(arg);
  return self->HandleFrame(
      absl::Span<const uint8_t>(static_cast<const uint8_t*>(header), header_length), data, length,
      param);
}

ucs_status_t UcxTransport::HandleFrame(absl::Span<const uint8_t> message, void* data, size_t length,
                                       const ucp_am_recv_param_t* param) {
  if (message.size() < kEnvelopeBytes) return UCS_OK;  // Not ours to answer: nobody to tell.
  const uint64_t peer_id = GetLe<uint64_t>(message.data(), 0);
  const uint64_t send_id = GetLe<uint64_t>(message.data(), 8);
  const auto am_header = message.subspan(kEnvelopeBytes);
  const auto wire = am_header.first(std::min(am_header.size(), kTransportHeaderBytes));
  if (!peers_.contains(peer_id)) {
    KVWIRE_LOG(WARNING) << "dropping a frame from unknown connection " << peer_id;
    return UCS_OK;  // For a rendezvous payload this releases it; the sender completes.
  }
  absl::StatusOr<TransportHeader> header = DecodeTransportHeader(wire, caps_.max_payload_bytes);
  if (header.ok() && (am_header.size() != kTransportHeaderBytes + header->frame_header_bytes ||
                      length != header->info.payload_bytes)) {
    header = absl::DataLossError(absl::StrCat(
        "transport header announces ", header->frame_header_bytes, "+", header->info.payload_bytes,
        " bytes, message has ", am_header.size() - kTransportHeaderBytes, "+", length));
  }
  if (!header.ok()) {
    SendReply(peer_id, send_id, header.status());
    return UCS_OK;
  }
  const auto frame_header = am_header.subspan(kTransportHeaderBytes);
  absl::StatusOr<Destination> dest = inbox().Admit(peer_id, header->info, frame_header);
  if (!dest.ok()) {
    SendReply(peer_id, send_id, dest.status());
    return UCS_OK;
  }
  auto* rx = new RecvOp{this,
                        peer_id,
                        send_id,
                        header->info,
                        std::string(frame_header.begin(), frame_header.end()),
                        dest->buffer.first(length)};
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  KVWIRE_LOG(DEBUG) << "frame of " << length << " bytes arrived "
                    << (rndv ? "by rendezvous" : "eagerly");
  if (dest->kind == MemoryKind::kCuda && staging_ != nullptr) {
    // Into device memory through a pinned host block; FinishRecv copies it to the device.
    rx->device_dest = rx->dest;
    if (length > 0) {
      absl::StatusOr<StagingPool::Lease> lease = staging_->Acquire(length);
      if (!lease.ok()) {
        FinishRecv(rx, lease.status());
        return UCS_OK;  // For a rendezvous payload this releases it.
      }
      rx->staging = std::move(*lease);
      rx->dest = absl::Span<uint8_t>(rx->staging->data(), length);
    }
    const Destination host{rx->dest, MemoryKind::kHost,
                           rx->staging ? rx->staging->region() : nullptr};
    if (rndv) {
      StartRecv(rx, data, host);
    } else {
      if (length > 0) std::memcpy(rx->dest.data(), data, length);
      FinishRecv(rx, UCS_OK);
    }
  } else if (rndv) {
    StartRecv(rx, data, *dest);
  } else if (dest->kind == MemoryKind::kCuda) {
    FinishRecv(rx, UCS_ERR_UNSUPPORTED);  // Eager bytes cannot be memcpy'd into device memory.
  } else {
    if (length > 0) std::memcpy(rx->dest.data(), data, length);
    FinishRecv(rx, UCS_OK);
  }
  return UCS_OK;
}

void UcxTransport::StartRecv(RecvOp* rx, void* data_desc, const Destination& dest) {
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.recv_am = &OnRecvDone;
  params.user_data = rx;
  if (const auto* region = dynamic_cast<const UcxRegion*>(dest.region);
      region != nullptr && region->context() == context_.get()) {
    params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    params.memh = region->memh();
  }
  if (dest.kind == MemoryKind::kCuda) {
    params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    params.memory_type = UCS_MEMORY_TYPE_CUDA;
  }
  ucs_status_ptr_t req =
      ucp_am_recv_data_nbx(worker_.get(), data_desc, rx->dest.data(), rx->dest.size(), &params);
  if (!UCS_PTR_IS_PTR(req)) FinishRecv(rx, UCS_PTR_STATUS(req));
}

void UcxTransport::OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
  auto* rx = static_cast<RecvOp*>(user_data);
  rx->owner->FinishRecv(rx, status);
  ucp_request_free(request);
}

void UcxTransport::FinishRecv(RecvOp* rx, ucs_status_t status) {
  FinishRecv(rx, status == UCS_OK ? absl::OkStatus() : FromUcs(status, "receiving a payload"));
}

void UcxTransport::FinishRecv(RecvOp* rx, absl::Status status) {
  std::unique_ptr<RecvOp> owned(rx);
  if (status.ok() && rx->staging.has_value()) {
    // A staged receive: the bytes are in pinned host memory; move them to the device. This runs
    // on the progress thread, which pauses other transfers for the copy (~0.1 ms per 2.5 MB at
    // the 25 GB/s of a PCIe 4 x16 link).
    status = staging_->copier().ToDevice(rx->device_dest.data(), rx->dest.data(),
                                         rx->dest.size(), Deadline::In(staging_copy_timeout_));
    if (absl::IsDeadlineExceeded(status)) rx->staging->Quarantine();
    if (!status.ok()) {
      status = absl::Status(status.code(), absl::StrCat("copying a received payload of ",
                                                        rx->dest.size(), " bytes to the device: ",
                                                        status.message()));
    }
  }
  if (rx->staging.has_value()) rx->dest = rx->device_dest;
  rx->staging.reset();
  if (status.ok()) {
    SendReply(rx->peer, rx->send_id, absl::OkStatus());
    inbox().Complete(rx->peer, ReceivedFrame{rx->info, std::move(rx->frame_header), rx->dest});
    return;
  }
  SendReply(rx->peer, rx->send_id, status);
  inbox().Fail(rx->peer, rx->info.request_id, std::move(status));
}

absl::StatusOr<std::unique_ptr<MemoryRegion>> UcxTransport::RegisterMemory(void* data, size_t bytes,
                                                                           MemoryKind kind) {
  if (kind == MemoryKind::kCuda && !caps_.supports_gpu_memory) {
    return absl::InvalidArgumentError("this UCX build has no CUDA memory support");
  }
  if (kind == MemoryKind::kCuda && caps_.gpu_memory_staged) {
    // UCX never sees this memory (transfers are staged), so there is nothing to register.
    return MakeUnregisteredRegion(data, bytes, MemoryKind::kCuda);
  }
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = data;
  params.length = bytes;
  params.memory_type = kind == MemoryKind::kCuda ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
  ucp_mem_h memh = nullptr;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_mem_map(context_.get(), &params, &memh), "ucp_mem_map"));
  return std::make_unique<UcxRegion>(context_.get(), memh, data, bytes, kind, regions_);
}

}  // namespace kvwire::transport::ucx
