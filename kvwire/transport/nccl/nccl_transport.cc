// The NCCL transport. Each end runs one protocol thread that owns the communicator and the CUDA
// stream; user threads queue sends and wait on completion cells. Waiting on the GPU polls
// cudaStreamQuery and ncclCommGetAsyncError (NCCL has no blocking wait with a timeout): it
// yields for the first ~50 µs, then backs off to 1 ms naps so an idle receiver costs little CPU.
#include "kvwire/transport/nccl/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/base/handle.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/inbox.h"
#include "kvwire/transport/nccl/nccl_status.h"
#include "kvwire/transport/send_state.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport {
namespace nccl {
namespace {

constexpr absl::string_view kAddressMagic = "nccl1";
constexpr size_t kCtrlBytes = kTransportHeaderBytes + kMaxFrameHeaderBytes;
constexpr size_t kStatusBytes = 256;        // u32 code, u32 message length, message
constexpr uint32_t kByeMagic = 0x4257564B;  // "KVWB": the sender is done with the pair
constexpr int kSenderRank = 0;
constexpr int kReceiverRank = 1;
constexpr absl::Duration kSpinPhase = absl::Microseconds(50);
constexpr absl::Duration kMaxNap = absl::Milliseconds(1);

// An unexplicitly released communicator is aborted: the safe teardown for any state.
struct CommTraits {
  static constexpr ncclComm_t kNull = nullptr;
  static void Close(ncclComm_t comm) noexcept { (void)ncclCommAbort(comm); }
};
struct StreamTraits {
  static constexpr cudaStream_t kNull = nullptr;
  static void Close(cudaStream_t stream) noexcept { (void)cudaStreamDestroy(stream); }
};
struct DeviceMemoryTraits {
  static constexpr void* kNull = nullptr;
  static void Close(void* ptr) noexcept { (void)cudaFree(ptr); }
};
using CommHandle = UniqueHandle<ncclComm_t, CommTraits>;
using StreamHandle = UniqueHandle<cudaStream_t, StreamTraits>;
using DeviceMemory = UniqueHandle<void*, DeviceMemoryTraits>;

// A growable device buffer.
class DeviceBuffer {
 public:
  absl::Status Reserve(size_t bytes) {
    if (bytes <= size_ && memory_) return absl::OkStatus();
    memory_.reset();
    void* ptr = nullptr;
    KVWIRE_RETURN_IF_ERROR(FromCudaRuntime(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)),
                                           absl::StrCat("cudaMalloc(", bytes, ")")));
    memory_.reset(ptr);
    size_ = bytes;
    return absl::OkStatus();
  }
  void* get() const { return memory_.get(); }

 private:
  DeviceMemory memory_;
  size_t size_ = 0;
};

// One end of the communicator. Used only by the protocol thread.
class Pair {
 public:
  absl::Status Init(const ncclUniqueId& id, int rank, Deadline deadline,
                    const std::atomic<bool>& stop) {
    cudaStream_t stream = nullptr;
    KVWIRE_RETURN_IF_ERROR(FromCudaRuntime(
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    stream_.reset(stream);
    KVWIRE_RETURN_IF_ERROR(ctrl_.Reserve(kCtrlBytes));
    KVWIRE_RETURN_IF_ERROR(status_.Reserve(kStatusBytes));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // Lets a deadline or shutdown abort a join that never completes.
    ncclComm_t comm = nullptr;
    ncclResult_t r = ncclCommInitRankConfig(&comm, 2, id, rank, &config);
    comm_.reset(comm);
    if (r != ncclSuccess && r != ncclInProgress) return FromNccl(r, "ncclCommInitRankConfig");
    return Poll(deadline, stop, /*stream_too=*/false, "joining the NCCL communicator");
  }

  // Waits until the queued stream work (or, without `stream_too`, the communicator) is done.
  absl::Status Poll(Deadline deadline, const std::atomic<bool>& stop, bool stream_too,
                    absl::string_view what) {
    const absl::Time start = absl::Now();
    absl::Duration nap = absl::Microseconds(10);
    while (true) {
      ncclResult_t async = ncclSuccess;
      KVWIRE_RETURN_IF_ERROR(FromNccl(ncclCommGetAsyncError(comm_.get(), &async), what));
      if (async != ncclSuccess && async != ncclInProgress) return FromNccl(async, what);
      if (async == ncclSuccess) {
        if (!stream_too) return absl::OkStatus();
        const cudaError_t q = cudaStreamQuery(stream_.get());
        if (q == cudaSuccess) return absl::OkStatus();
        if (q != cudaErrorNotReady) return FromCudaRuntime(q, what);
      }
      if (stop.load()) return absl::UnavailableError(absl::StrCat(what, ": transport closing"));
      KVWIRE_RETURN_IF_ERROR(deadline.Check(what));
      if (absl::Now() - start < kSpinPhase) {
        sched_yield();
      } else {
        absl::SleepFor(nap);  // Polling the device: NCCL offers no blocking wait with a timeout.
        nap = std::min(nap * 2, kMaxNap);
      }
    }
  }

  absl::Status Send(const void* device_bytes, size_t n, int peer) {
    if (n == 0) return absl::OkStatus();
    return FromNccl(ncclSend(device_bytes, n, ncclUint8, peer, comm_.get(), stream_.get()),
                    "ncclSend");
  }
  absl::Status Recv(void* device_bytes, size_t n, int peer) {
    if (n == 0) return absl::OkStatus();
    return FromNccl(ncclRecv(device_bytes, n, ncclUint8, peer, comm_.get(), stream_.get()),
                    "ncclRecv");
  }
  absl::Status Copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    if (n == 0) return absl::OkStatus();
    return FromCudaRuntime(cudaMemcpyAsync(dst, src, n, kind, stream_.get()), "cudaMemcpyAsync");
  }

  // After a clean end of the protocol.
  void Destroy() {
    ncclComm_t comm = comm_.release();
    if (comm == nullptr) return;
    if (ncclCommFinalize(comm) != ncclSuccess || ncclCommDestroy(comm) != ncclSuccess) {
      KVWIRE_LOG(WARNING) << "NCCL communicator teardown failed; aborting it";
      (void)ncclCommAbort(comm);
    }
  }
  void Abort() { comm_.reset(); }

  void* ctrl() const { return ctrl_.get(); }
  void* status() const { return status_.get(); }
  DeviceBuffer& staging() { return staging_; }

 private:
  // Members in acquisition order (destroyed in reverse): stream, device buffers, communicator.
  StreamHandle stream_;
  DeviceBuffer ctrl_;
  DeviceBuffer status_;
  DeviceBuffer staging_;
  CommHandle comm_;
};

std::array<uint8_t, kStatusBytes> EncodeStatus(const absl::Status& s) {
  std::array<uint8_t, kStatusBytes> out{};
  const uint32_t code = static_cast<uint32_t>(s.code());
  const uint32_t len =
      static_cast<uint32_t>(std::min<size_t>(s.message().size(), kStatusBytes - 8));
  std::memcpy(out.data(), &code, 4);
  std::memcpy(out.data() + 4, &len, 4);
  std::memcpy(out.data() + 8, s.message().data(), len);
  return out;
}

absl::Status DecodeStatus(const std::array<uint8_t, kStatusBytes>& in) {
  uint32_t code = 0, len = 0;
  std::memcpy(&code, in.data(), 4);
  std::memcpy(&len, in.data() + 4, 4);
  if (code == 0) return absl::OkStatus();
  len = std::min<uint32_t>(len, kStatusBytes - 8);
  return absl::Status(
      static_cast<absl::StatusCode>(code),
      absl::StrCat("receiver rejected the frame: ",
                   absl::string_view(reinterpret_cast<const char*>(in.data() + 8), len)));
}

struct NcclSendOp {
  std::array<uint8_t, kCtrlBytes> ctrl{};
  RequestId request_id = 0;
  const void* payload = nullptr;
  size_t payload_bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  SendCompletion completion;
};

class NcclTransport;

class NcclSendOperation final : public SendOperation {
 public:
  explicit NcclSendOperation(std::shared_ptr<NcclSendOp> op) : op_(std::move(op)) {}
  // The protocol thread finishes or fails every queued operation before the transport is gone;
  // an operation cannot be pulled back from NCCL once posted, so destruction waits for it.
  ~NcclSendOperation() override {
    (void)op_->completion.Wait(Deadline::In(absl::Minutes(5)), "send being destroyed");
  }
  absl::Status Wait(Deadline deadline) override {
    return op_->completion.Wait(deadline, absl::StrCat("send of request ", op_->request_id));
  }
  bool Done() const override { return op_->completion.Done(); }

 private:
  std::shared_ptr<NcclSendOp> op_;
};

class NcclTransport final : public InboxTransport {
 public:
  explicit NcclTransport(const NcclOptions& options) : options_(options) {}
  ~NcclTransport() override;

  Capabilities capabilities() const override {
    return Capabilities{"nccl", true, false, true, kMaxPayloadBytes, kMaxFrameHeaderBytes};
  }
  std::string LocalAddress() const override;
  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view peer_address,
                                                      Deadline deadline) override;
  absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t bytes,
                                                               MemoryKind kind) override;

  absl::StatusOr<std::unique_ptr<SendOperation>> Enqueue(std::shared_ptr<NcclSendOp> op);
  void CancelRequest(RequestId request_id);

 private:
  enum class Role { kNone, kSender, kReceiver };

  void RunReceiver(ncclUniqueId id);
  void RunSender(ncclUniqueId id, Deadline join_deadline);
  absl::Status ReceiveOne(bool* bye);
  absl::Status SendOne(NcclSendOp& op);
  absl::Status ReadStatus(absl::Status* peer_status);
  absl::Status WriteStatus(const absl::Status& s);
  absl::Status Step(absl::string_view what) {
    return pair_.Poll(Deadline::In(options_.step_timeout), stop_, /*stream_too=*/true, what);
  }
  void FailAll(const absl::Status& why);

  const NcclOptions options_;
  Pair pair_;  // Protocol thread only.
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  mutable Role role_ ABSL_GUARDED_BY(mu_) = Role::kNone;
  mutable std::string address_ ABSL_GUARDED_BY(mu_);
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<NcclSendOp>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RequestId> cancelled_ ABSL_GUARDED_BY(mu_);
  mutable std::thread thread_;  // Started by the first LocalAddress() or Connect().
};

std::string NcclTransport::LocalAddress() const {
  absl::MutexLock lock(&mu_);
  if (role_ == Role::kNone) {
    ncclUniqueId id;
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      KVWIRE_LOG(ERROR) << FromNccl(r, "ncclGetUniqueId");
      return "";
    }
    role_ = Role::kReceiver;
    address_ = absl::StrCat(kAddressMagic, absl::string_view(id.internal, sizeof(id.internal)));
    auto* self = const_cast<NcclTransport*>(this);
    thread_ = std::thread([self, id] { self->RunReceiver(id); });
  }
  return address_;
}

class NcclConnection final : public Connection {
 public:
  explicit NcclConnection(NcclTransport* owner) : owner_(owner) {}
  absl::StatusOr<std::unique_ptr<SendOperation>> StartSend(const FrameInfo& info,
                                                           absl::Span<const uint8_t> frame_header,
                                                           absl::Span<const uint8_t> payload,
                                                           MemoryKind kind) override {
    KVWIRE_RETURN_IF_ERROR(
        CheckOutgoingFrame(info, frame_header.size(), payload.size(), kMaxPayloadBytes));
    TransportHeader header{0, next_send_id_++, info, static_cast<uint32_t>(frame_header.size())};
    auto op = Make(EncodeTransportHeader(header), frame_header, payload, kind);
    op->request_id = info.request_id;
    return owner_->Enqueue(std::move(op));
  }
  void Cancel(RequestId request_id) override { owner_->CancelRequest(request_id); }
  absl::StatusOr<std::unique_ptr<SendOperation>> StartSendRawForTesting(
      absl::Span<const uint8_t> transport_header, absl::Span<const uint8_t> frame_header,
      absl::Span<const uint8_t> payload) override {
    if (transport_header.size() != kTransportHeaderBytes ||
        frame_header.size() > kMaxFrameHeaderBytes) {
      return absl::InvalidArgumentError("raw NCCL frames keep the fixed control-block layout");
    }
    return owner_->Enqueue(Make(transport_header, frame_header, payload, MemoryKind::kHost));
  }

 private:
  static std::shared_ptr<NcclSendOp> Make(absl::Span<const uint8_t> transport_header,
                                          absl::Span<const uint8_t> frame_header,
                                          absl::Span<const uint8_t> payload, MemoryKind kind) {
    auto op = std::make_shared<NcclSendOp>();
    std::memcpy(op->ctrl.data(), transport_header.data(), transport_header.size());
    std::memcpy(op->ctrl.data() + kTransportHeaderBytes, frame_header.data(), frame_header.size());
    op->payload = payload.data();
    op->payload_bytes = payload.size();
    op->kind = kind;
    return op;
  }

  NcclTransport* owner_;
  std::atomic<uint64_t> next_send_id_{1};
};

absl::StatusOr<std::unique_ptr<Connection>> NcclTransport::Connect(absl::string_view address,
                                                                   Deadline deadline) {
  if (!absl::StartsWith(address, kAddressMagic) ||
      address.size() != kAddressMagic.size() + sizeof(ncclUniqueId)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an NCCL transport address (", address.size(), " bytes)"));
  }
  ncclUniqueId id;
  std::memcpy(id.internal, address.data() + kAddressMagic.size(), sizeof(id.internal));
  absl::MutexLock lock(&mu_);
  if (role_ != Role::kNone) {
    return absl::FailedPreconditionError("an NCCL transport serves exactly one pair");
  }
  role_ = Role::kSender;
  thread_ = std::thread([this, id, deadline] { RunSender(id, deadline); });
  auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ready_ || !broken_.ok(); };
  // RunSender settles within `deadline`; the margin covers its teardown after an expiry.
  if (!mu_.AwaitWithDeadline(absl::Condition(&settled), deadline.ToAbslTime() + absl::Seconds(5))) {
    return absl::DeadlineExceededError("joining the NCCL communicator: deadline exceeded");
  }
  if (!broken_.ok()) return broken_;
  return std::make_unique<NcclConnection>(this);
}

absl::StatusOr<std::unique_ptr<SendOperation>> NcclTransport::Enqueue(
    std::shared_ptr<NcclSendOp> op) {
  absl::MutexLock lock(&mu_);
  if (!broken_.ok()) return broken_;
  if (cancelled_.contains(op->request_id)) {
    return absl::CancelledError(absl::StrCat("request ", op->request_id, " was cancelled"));
  }
  queue_.push_back(op);
  return std::make_unique<NcclSendOperation>(std::move(op));
}

void NcclTransport::CancelRequest(RequestId request_id) {
  absl::MutexLock lock(&mu_);
  cancelled_.insert(request_id);
  // Queued operations of the request never reach NCCL.
  std::erase_if(queue_, [request_id](const std::shared_ptr<NcclSendOp>& op) {
    if (op->request_id != request_id) return false;
    op->completion.Finish(absl::CancelledError(absl::StrCat("request ", request_id, " cancelled")));
    return true;
  });
}

void NcclTransport::FailAll(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (broken_.ok()) broken_ = why;
  for (auto& op : queue_) op->completion.Finish(why);
  queue_.clear();
}

void NcclTransport::RunSender(ncclUniqueId id, Deadline join_deadline) {
  absl::Status s = FromCudaRuntime(cudaSetDevice(options_.cuda_device), "cudaSetDevice");
  if (s.ok()) s = pair_.Init(id, kSenderRank, join_deadline, stop_);
  {
    absl::MutexLock lock(&mu_);
    ready_ = s.ok();
    if (!s.ok()) broken_ = s;
  }
  while (s.ok()) {
    std::shared_ptr<NcclSendOp> op;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stop_.load();
      };
      mu_.Await(absl::Condition(&work));  // The destructor sets stop_ and wakes this wait.
      if (queue_.empty()) break;
      op = queue_.front();
      queue_.pop_front();
    }
    absl::Status result = SendOne(*op);
    const bool pair_broken =
        absl::IsUnavailable(result) || absl::IsDeadlineExceeded(result) || absl::IsInternal(result);
    op->completion.Finish(result);
    if (pair_broken) s = result;
  }
  if (s.ok()) {
    // Tell the receiver the pair is done so both ends can destroy (not abort) the communicator.
    NcclSendOp bye;
    std::memcpy(bye.ctrl.data(), &kByeMagic, sizeof(kByeMagic));
    s = pair_.Copy(pair_.ctrl(), bye.ctrl.data(), kCtrlBytes, cudaMemcpyHostToDevice);
    if (s.ok()) s = pair_.Send(pair_.ctrl(), kCtrlBytes, kReceiverRank);
    if (s.ok()) s = Step("sending goodbye");
  }
  if (s.ok()) {
    pair_.Destroy();
  } else {
    pair_.Abort();
    FailAll(absl::UnavailableError(absl::StrCat("NCCL pair aborted: ", s.message())));
  }
}

absl::Status NcclTransport::SendOne(NcclSendOp& op) {
  KVWIRE_RETURN_IF_ERROR(
      pair_.Copy(pair_.ctrl(), op.ctrl.data(), kCtrlBytes, cudaMemcpyHostToDevice));
  KVWIRE_RETURN_IF_ERROR(pair_.Send(pair_.ctrl(), kCtrlBytes, kReceiverRank));
  absl::Status verdict;
  KVWIRE_RETURN_IF_ERROR(ReadStatus(&verdict));
  if (!verdict.ok()) return verdict;  // Rejected: the payload never leaves.
  const void* source = op.payload;
  if (op.kind == MemoryKind::kHost && op.payload_bytes > 0) {
    KVWIRE_RETURN_IF_ERROR(pair_.staging().Reserve(op.payload_bytes));
    KVWIRE_RETURN_IF_ERROR(
        pair_.Copy(pair_.staging().get(), op.payload, op.payload_bytes, cudaMemcpyHostToDevice));
    source = pair_.staging().get();
  }
  KVWIRE_RETURN_IF_ERROR(pair_.Send(source, op.payload_bytes, kReceiverRank));
  absl::Status delivered;
  KVWIRE_RETURN_IF_ERROR(ReadStatus(&delivered));
  return delivered;
}

absl::Status NcclTransport::ReadStatus(absl::Status* peer_status) {
  KVWIRE_RETURN_IF_ERROR(pair_.Recv(pair_.status(), kStatusBytes, kReceiverRank));
  std::array<uint8_t, kStatusBytes> host{};
  KVWIRE_RETURN_IF_ERROR(
      pair_.Copy(host.data(), pair_.status(), kStatusBytes, cudaMemcpyDeviceToHost));
  KVWIRE_RETURN_IF_ERROR(Step("waiting for the receiver's status"));
  *peer_status = DecodeStatus(host);
  return absl::OkStatus();
}

absl::Status NcclTransport::WriteStatus(const absl::Status& s) {
  const auto host = EncodeStatus(s);
  KVWIRE_RETURN_IF_ERROR(
      pair_.Copy(pair_.status(), host.data(), kStatusBytes, cudaMemcpyHostToDevice));
  KVWIRE_RETURN_IF_ERROR(pair_.Send(pair_.status(), kStatusBytes, kSenderRank));
  return Step("sending a status to the sender");
}

void NcclTransport::RunReceiver(ncclUniqueId id) {
  absl::Status s = FromCudaRuntime(cudaSetDevice(options_.cuda_device), "cudaSetDevice");
  // The sender may join at any time: only shutdown ends the wait.
  if (s.ok()) s = pair_.Init(id, kReceiverRank, Deadline::In(absl::InfiniteDuration()), stop_);
  bool bye = false;
  while (s.ok() && !bye) s = ReceiveOne(&bye);
  if (bye) {
    pair_.Destroy();
  } else {
    pair_.Abort();
    inbox().PeerGone(kSenderRank, s.message());
  }
}

absl::Status NcclTransport::ReceiveOne(bool* bye) {
  KVWIRE_RETURN_IF_ERROR(pair_.Recv(pair_.ctrl(), kCtrlBytes, kSenderRank));
  std::array<uint8_t, kCtrlBytes> ctrl{};
  KVWIRE_RETURN_IF_ERROR(pair_.Copy(ctrl.data(), pair_.ctrl(), kCtrlBytes, cudaMemcpyDeviceToHost));
  // Idle receivers wait here for the next frame; only shutdown or a peer failure ends it.
  KVWIRE_RETURN_IF_ERROR(
      pair_.Poll(Deadline::In(absl::InfiniteDuration()), stop_, true, "waiting for a frame"));
  uint32_t magic = 0;
  std::memcpy(&magic, ctrl.data(), sizeof(magic));
  if (magic == kByeMagic) {
    *bye = true;
    return absl::OkStatus();
  }
  absl::StatusOr<TransportHeader> header = DecodeTransportHeader(
      absl::MakeConstSpan(ctrl).first(kTransportHeaderBytes), kMaxPayloadBytes);
  if (!header.ok()) return WriteStatus(header.status());
  const auto frame_header =
      absl::MakeConstSpan(ctrl).subspan(kTransportHeaderBytes, header->frame_header_bytes);
  absl::StatusOr<Destination> dest = inbox().Admit(kSenderRank, header->info, frame_header);
  if (!dest.ok()) return WriteStatus(dest.status());
  KVWIRE_RETURN_IF_ERROR(WriteStatus(absl::OkStatus()));
  const size_t n = header->info.payload_bytes;
  void* target = dest->buffer.data();
  absl::Status landed;
  if (dest->kind == MemoryKind::kHost && n > 0) landed = pair_.staging().Reserve(n);
  if (landed.ok() && dest->kind == MemoryKind::kHost && n > 0) target = pair_.staging().get();
  if (landed.ok()) landed = pair_.Recv(target, n, kSenderRank);
  if (landed.ok() && target != dest->buffer.data()) {
    landed = pair_.Copy(dest->buffer.data(), target, n, cudaMemcpyDeviceToHost);
  }
  if (landed.ok()) landed = Step("receiving a payload");
  if (!landed.ok()) {
    inbox().Fail(kSenderRank, header->info.request_id, landed);
    return landed;  // The pair's byte stream is out of step now: abort it.
  }
  inbox().Complete(kSenderRank, ReceivedFrame{header->info,
                                              std::string(frame_header.begin(), frame_header.end()),
                                              dest->buffer.first(n)});
  return WriteStatus(absl::OkStatus());
}

absl::StatusOr<std::unique_ptr<MemoryRegion>> NcclTransport::RegisterMemory(void* data,
                                                                            size_t bytes,
                                                                            MemoryKind kind) {
  // NCCL needs no registration for point-to-point buffers; the region only records the range.
  return MakeUnregisteredRegion(data, bytes, kind);
}

NcclTransport::~NcclTransport() {
  stop_.store(true);
  {
    absl::MutexLock lock(&mu_);  // Wakes a sender thread waiting for work.
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace
}  // namespace nccl

absl::StatusOr<std::unique_ptr<Transport>> MakeNcclTransport(const NcclOptions& options) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices <= options.cuda_device) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", options.cuda_device, " (", devices, " visible)"));
  }
  return std::unique_ptr<Transport>(new nccl::NcclTransport(options));
}

}  // namespace kvwire::transport
