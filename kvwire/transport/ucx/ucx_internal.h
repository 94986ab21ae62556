// kvwire/transport/ucx/ucx_internal.h — the UCX transport's internals, shared by
// ucx_transport.cc (set-up, progress thread, sending side) and ucx_receive.cc (receiving side).
// Not a public header: included only inside kvwire/transport/ucx.
//
// One progress thread per transport owns the UCP worker; user threads hand it work through a
// command queue and wait on per-operation completion cells. Protocol (all UCP
// active messages; integers little-endian):
//   kAmHello    sender -> receiver  header: u64 connection id; data: sender worker address
//   kAmHelloAck receiver -> sender  header: u64 connection id (over the receiver's back endpoint)
//   kAmFrame    sender -> receiver  header: u64 connection id, u64 send id (the envelope that
//                                   routes the reply), transport header (wire_header.h),
//                                   frame header; data: payload (eager or rendezvous)
//   kAmReply    receiver -> sender  header: u64 connection id, u64 send id, u32 status code,
//                                   u32 message length, message bytes
//   kAmBye      sender -> receiver  header: u64 connection id (the sender closed the connection)
//   kAmGoodbye  receiver -> sender  header: u64 connection id (the receiver is shutting down;
//                                   needed where UCX cannot see a peer go, e.g. shared memory
//                                   inside one process)
#ifndef KVWIRE_TRANSPORT_UCX_UCX_INTERNAL_H_
#define KVWIRE_TRANSPORT_UCX_UCX_INTERNAL_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/inbox.h"
#include "kvwire/transport/send_state.h"
#include "kvwire/transport/staging_pool.h"
#include "kvwire/transport/ucx/ucx_handles.h"
#include "kvwire/transport/ucx/ucx_status.h"
#include "kvwire/transport/ucx/ucx_transport.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport::ucx {

inline constexpr unsigned kAmHello = 1;
inline constexpr unsigned kAmHelloAck = 2;
inline constexpr unsigned kAmFrame = 3;
inline constexpr unsigned kAmReply = 4;
inline constexpr unsigned kAmBye = 5;
inline constexpr unsigned kAmGoodbye = 6;
inline constexpr absl::string_view kAddressMagic = "ucx1";
inline constexpr size_t kReplyFixedBytes = 24;
inline constexpr size_t kEnvelopeBytes = 16;
// How long shutdown and abandoned operations wait for UCX to let go of buffers.
inline constexpr absl::Duration kReleaseGrace = absl::Seconds(5);
inline constexpr int kMaxSleepMillis = 100;

inline void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
inline void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
template <typename T>
T GetLe(const void* data, size_t offset) {
  const auto* p = static_cast<const uint8_t*>(data) + offset;
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[i]) << (8 * i);
  return v;
}

class UcxTransport;

struct ConnState;

// One frame being sent. Owned jointly by the user's SendOperation and, while it is unfinished, by
// its connection's `ops` map; `self_ref` keeps it alive while UCX holds its request.
struct SendOp {
  uint64_t send_id = 0;
  RequestId request_id = 0;
  std::vector<uint8_t> am_header;  // envelope + transport + frame header; UCX reads it until done
  const void* payload = nullptr;
  size_t payload_bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  ucp_mem_h memh = nullptr;  // set when the payload lies in a registered region
  // The pinned copy of a device payload (UcxTransport staging); `payload` points into it.
  std::optional<StagingPool::Lease> staging;
  std::shared_ptr<ConnState> conn;
  SendCompletion completion;
  // Worker only (under UcxTransport::worker_mu_):
  RequestHandle request;
  std::shared_ptr<SendOp> self_ref;
  bool local_done = false;
  bool reply_done = false;
  bool cancel = false;
  absl::Status status;
};

// The sending side of a Connection.
struct ConnState {
  UcxTransport* owner = nullptr;
  uint64_t id = 0;
  std::atomic<uint64_t> next_send_id{1};
  // Worker only (under UcxTransport::worker_mu_):
  ucp_ep_h ep = nullptr;
  absl::flat_hash_map<uint64_t, std::shared_ptr<SendOp>> ops;
  // Shared with user threads:
  absl::Mutex mu;
  bool ready ABSL_GUARDED_BY(mu) = false;
  absl::Status broken ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<RequestId> cancelled ABSL_GUARDED_BY(mu);
};

// The receiving side's view of one sender: the endpoint replies go back on.
struct Peer {
  UcxTransport* owner = nullptr;
  uint64_t id = 0;
  ucp_ep_h ep = nullptr;
};

// One payload being received: pulled by rendezvous (or copied eagerly) into `dest`. A staged
// receive lands in `staging` first and is copied to `device_dest` when it is complete.
struct RecvOp {
  UcxTransport* owner = nullptr;
  uint64_t peer = 0;
  uint64_t send_id = 0;
  FrameInfo info;
  std::string frame_header;
  absl::Span<uint8_t> dest;
  std::optional<StagingPool::Lease> staging;
  absl::Span<uint8_t> device_dest;
};

// Registered ranges, so that a send from registered memory hands UCX its memory handle (UCX
// would otherwise register, or stage through a bounce buffer, per transfer). Thread-safe.
class RegionTable {
 public:
  void Add(const void* data, size_t size, ucp_mem_h memh) {
    absl::MutexLock lock(&mu_);
    ranges_[reinterpret_cast<uintptr_t>(data)] = {size, memh};
  }
  void Remove(const void* data) {
    absl::MutexLock lock(&mu_);
    ranges_.erase(reinterpret_cast<uintptr_t>(data));
  }
  // The handle of a registered range that contains [data, data + size), or nullptr.
  ucp_mem_h Find(const void* data, size_t size) const {
    const auto start = reinterpret_cast<uintptr_t>(data);
    absl::MutexLock lock(&mu_);
    auto it = ranges_.upper_bound(start);
    if (it == ranges_.begin()) return nullptr;
    --it;
    const auto [range_size, memh] = it->second;
    return start + size <= it->first + range_size ? memh : nullptr;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<uintptr_t, std::pair<size_t, ucp_mem_h>> ranges_ ABSL_GUARDED_BY(mu_);
};

class UcxRegion final : public MemoryRegion {
 public:
  UcxRegion(ucp_context_h context, ucp_mem_h memh, void* data, size_t size, MemoryKind kind,
            std::shared_ptr<RegionTable> table)
      : context_(context),
        memh_(memh),
        data_(data),
        size_(size),
        kind_(kind),
        table_(std::move(table)) {
    table_->Add(data_, size_, memh_);
  }
  ~UcxRegion() override {
    table_->Remove(data_);
    if (ucs_status_t s = ucp_mem_unmap(context_, memh_); s != UCS_OK) {
      KVWIRE_LOG(WARNING) << "ucp_mem_unmap: " << ucs_status_string(s);
    }
  }
  void* data() const override { return data_; }
  size_t size() const override { return size_; }
  MemoryKind kind() const override { return kind_; }
  ucp_mem_h memh() const { return memh_; }
  ucp_context_h context() const { return context_; }

 private:
  ucp_context_h context_;
  ucp_mem_h memh_;
  void* data_;
  size_t size_;
  MemoryKind kind_;
  std::shared_ptr<RegionTable> table_;
};

class UcxTransport final : public InboxTransport {
 public:
  static absl::StatusOr<std::unique_ptr<Transport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  Capabilities capabilities() const override { return caps_; }
  std::string LocalAddress() const override { return address_; }
  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view peer_address,
                                                      Deadline deadline) override;
  absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t bytes,
                                                               MemoryKind kind) override;

  // A pinned copy of `bytes` bytes of device memory at `device`, for a send.
  absl::StatusOr<StagingPool::Lease> StageOutgoing(const void* device, size_t bytes);

  // Runs `fn` on the progress thread.
  void Post(std::function<void()> fn);
  absl::StatusOr<std::shared_ptr<SendOp>> StartSendOp(const std::shared_ptr<ConnState>& conn,
                                                      std::shared_ptr<SendOp> op);
  void SendOnWorker(const std::shared_ptr<SendOp>& op);
  void CancelOpOnWorker(SendOp* op);
  void CancelRequestOnWorker(ConnState* conn, RequestId request_id);
  void CloseConnOnWorker(const std::shared_ptr<ConnState>& conn);

  // A thread waiting for a send may drive the worker itself for a short while rather than wait
  // for the progress thread to notice the completion and wake it: on a small machine that saves
  // two thread switches per round trip. While anyone drives, the progress thread stands aside.
  absl::Duration drive_window() const { return drive_window_; }
  void BeginDriving() { drivers_.fetch_add(1); }
  void EndDriving();
  // Runs queued commands and one round of worker progress if the worker is free; false if not.
  bool TryDrive();

 private:
  UcxTransport() = default;
  absl::Status Init(const UcxOptions& options);
  absl::Status InitContext(const UcxOptions& options);
  absl::Status InitWorker();
  absl::Status InitWakeup();

  void Loop();
  bool RunCommands();
  void SleepUntilActivity();
  void StandAside();
  void Shutdown();

  ucs_status_t CreateEp(const void* address, ucp_err_handler_cb_t cb, void* arg, ucp_ep_h* ep);
  void CloseEp(ucp_ep_h ep, bool force);
  void SendSmall(ucp_ep_h ep, unsigned id, std::string header);
  void SendReply(uint64_t peer_id, uint64_t send_id, const absl::Status& status);

  static ucs_status_t OnHello(void* arg, const void* header, size_t header_length, void* data,
                              size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnHelloAck(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnFrame(void* arg, const void* header, size_t header_length, void* data,
                              size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnReply(void* arg, const void* header, size_t header_length, void* data,
                              size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnBye(void* arg, const void* header, size_t header_length, void* data,
                            size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t OnGoodbye(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static void OnConnError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static void OnPeerError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnRecvDone(void* request, ucs_status_t status, size_t length, void* user_data);

  ucs_status_t HandleFrame(absl::Span<const uint8_t> header, void* data, size_t length,
                           const ucp_am_recv_param_t* param);
  void StartRecv(RecvOp* rx, void* data_desc, const Destination& dest);
  void FinishRecv(RecvOp* rx, ucs_status_t status);
  void FinishRecv(RecvOp* rx, absl::Status status);
  void LocalDone(SendOp* op, ucs_status_t status);
  void MaybeFinish(SendOp* op);
  void ConnFailed(ConnState* conn, absl::Status why, bool force);
  void PeerFailed(uint64_t peer_id, absl::string_view why);

  // Members in acquisition order (destroyed in reverse): UCP context, then the worker, then the
  // epoll and wake-up descriptors. Endpoints live in conns_/peers_ and are closed by the progress
  // thread before it exits; the thread is started last and joined first.
  ContextHandle context_;
  WorkerHandle worker_;
  FdHandle epoll_fd_;
  FdHandle wake_fd_;
  std::string address_;
  Capabilities caps_;
  absl::Duration busy_poll_;
  absl::Duration drive_window_;
  std::shared_ptr<RegionTable> regions_ = std::make_shared<RegionTable>();
  // Staging of device payloads (see ucx_transport.h); null when UCX handles device memory itself
  // or no DeviceCopier was given. Destroyed before context_, with which its blocks are registered.
  std::unique_ptr<StagingPool> staging_;
  absl::Duration staging_copy_timeout_;
  // Whoever runs UCX (the progress thread or a driving waiter) holds worker_mu_; everything
  // marked "worker only" is touched only under it.
  absl::Mutex worker_mu_;
  std::atomic<int> drivers_{0};
  // Worker only:
  absl::flat_hash_map<uint64_t, std::shared_ptr<ConnState>> conns_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Peer>> peers_;
  std::vector<RequestHandle> closing_;  // endpoint close requests still in progress
  // Command queue:
  absl::Mutex cmd_mu_;
  std::vector<std::function<void()>> cmds_ ABSL_GUARDED_BY(cmd_mu_);
  std::atomic<bool> has_cmds_{false};
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace kvwire::transport::ucx

#endif  // KVWIRE_TRANSPORT_UCX_UCX_INTERNAL_H_
