// The UCX transport. One progress thread per transport owns the UCP worker; user threads hand it
// work through a command queue and wait on per-operation completion cells. Protocol (all UCP
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
#include "kvwire/transport/ucx/ucx_transport.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>

#include <atomic>
#include <cstring>
#include <functional>
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
#include "kvwire/transport/ucx/ucx_handles.h"
#include "kvwire/transport/ucx/ucx_status.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport {
namespace ucx {
namespace {

constexpr unsigned kAmHello = 1;
constexpr unsigned kAmHelloAck = 2;
constexpr unsigned kAmFrame = 3;
constexpr unsigned kAmReply = 4;
constexpr unsigned kAmBye = 5;
constexpr unsigned kAmGoodbye = 6;
constexpr absl::string_view kAddressMagic = "ucx1";
constexpr size_t kReplyFixedBytes = 24;
constexpr size_t kEnvelopeBytes = 16;
// How long shutdown and abandoned operations wait for UCX to let go of buffers.
constexpr absl::Duration kReleaseGrace = absl::Seconds(5);
constexpr int kMaxSleepMillis = 100;

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
template <typename T>
T GetLe(const void* data, size_t offset) {
  const auto* p = static_cast<const uint8_t*>(data) + offset;
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[i]) << (8 * i);
  return v;
}

// Whether a UCX_TLS list can select the posix/sysv shared-memory transports (UCX warns about
// their settings otherwise).
bool UsesSharedMemory(absl::string_view tls) {
  if (tls.empty()) return true;
  for (absl::string_view name : {"posix", "sysv", "sm", "shm", "all", "mm"}) {
    if (absl::StrContains(tls, name)) return true;
  }
  return false;
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
  std::shared_ptr<ConnState> conn;
  SendCompletion completion;
  // Progress thread only:
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
  // Progress thread only:
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

// One rendezvous payload being pulled into its destination.
struct RecvOp {
  UcxTransport* owner = nullptr;
  uint64_t peer = 0;
  uint64_t send_id = 0;
  FrameInfo info;
  std::string frame_header;
  absl::Span<uint8_t> dest;
};

class UcxRegion final : public MemoryRegion {
 public:
  UcxRegion(ucp_context_h context, ucp_mem_h memh, void* data, size_t size, MemoryKind kind)
      : context_(context), memh_(memh), data_(data), size_(size), kind_(kind) {}
  ~UcxRegion() override {
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
};

class UcxTransport final : public Transport {
 public:
  static absl::StatusOr<std::unique_ptr<Transport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  Capabilities capabilities() const override { return caps_; }
  std::string LocalAddress() const override { return address_; }
  absl::StatusOr<std::unique_ptr<Connection>> Connect(absl::string_view peer_address,
                                                      Deadline deadline) override;
  absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(void* data, size_t bytes,
                                                               MemoryKind kind) override;
  void SetAcceptor(Acceptor acceptor) override { inbox_.SetAcceptor(std::move(acceptor)); }
  absl::StatusOr<ReceivedFrame> Receive(RequestId request_id, Deadline deadline) override {
    return inbox_.Receive(request_id, deadline);
  }
  absl::Status CancelReceive(RequestId request_id, Deadline deadline) override {
    return inbox_.CancelReceive(request_id, deadline);
  }

  // Runs `fn` on the progress thread.
  void Post(std::function<void()> fn);
  absl::StatusOr<std::shared_ptr<SendOp>> StartSendOp(const std::shared_ptr<ConnState>& conn,
                                                      std::shared_ptr<SendOp> op);
  void CancelOpOnWorker(SendOp* op);
  void CancelRequestOnWorker(ConnState* conn, RequestId request_id);
  void CloseConnOnWorker(const std::shared_ptr<ConnState>& conn);

 private:
  UcxTransport() = default;
  absl::Status Init(const UcxOptions& options);
  absl::Status InitContext(const UcxOptions& options);
  absl::Status InitWorker();
  absl::Status InitWakeup();

  void Loop();
  bool RunCommands();
  void SleepUntilActivity();
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
  Inbox inbox_;
  // Progress thread only:
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

// ---------------------------------------------------------------------------------------------
// Initialisation

absl::StatusOr<std::unique_ptr<Transport>> UcxTransport::Create(const UcxOptions& options) {
  std::unique_ptr<UcxTransport> t(new UcxTransport());
  KVWIRE_RETURN_IF_ERROR(t->Init(options));
  return std::unique_ptr<Transport>(std::move(t));
}

absl::Status UcxTransport::Init(const UcxOptions& options) {
  busy_poll_ = options.busy_poll;
  KVWIRE_RETURN_IF_ERROR(InitContext(options));
  KVWIRE_RETURN_IF_ERROR(InitWorker());
  KVWIRE_RETURN_IF_ERROR(InitWakeup());
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

absl::Status UcxTransport::InitContext(const UcxOptions& options) {
  ucp_config_t* raw_config = nullptr;
  KVWIRE_RETURN_IF_ERROR(
      FromUcs(ucp_config_read(nullptr, nullptr, &raw_config), "ucp_config_read"));
  ConfigHandle config(raw_config);
  std::vector<std::pair<std::string, std::string>> settings = {{"KEEPALIVE_INTERVAL", "1s"}};
  if (!options.transports.empty()) settings.emplace_back("TLS", options.transports);
  if (UsesSharedMemory(options.transports)) {
    settings.emplace_back("MM_ERROR_HANDLING", "y");
  }
  settings.insert(settings.end(), options.config.begin(), options.config.end());
  for (const auto& [name, value] : settings) {
    if (ucs_status_t s = ucp_config_modify(config.get(), name.c_str(), value.c_str());
        s != UCS_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("UCX setting ", name, "=", value, ": ", ucs_status_string(s)));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 0;
  ucp_context_h context = nullptr;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_init(&params, config.get(), &context), "ucp_init"));
  context_.reset(context);

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_context_query(context_.get(), &attr), "ucp_context_query"));
  caps_.name = "ucx";
  caps_.supports_gpu_memory = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  caps_.zero_copy_receive = true;
  caps_.max_payload_bytes = kMaxPayloadBytes;
  return absl::OkStatus();
}

absl::Status UcxTransport::InitWorker() {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // Only the progress thread touches the worker after construction.
  params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  ucp_worker_h worker = nullptr;
  KVWIRE_RETURN_IF_ERROR(
      FromUcs(ucp_worker_create(context_.get(), &params, &worker), "ucp_worker_create"));
  worker_.reset(worker);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS | UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_worker_query(worker, &attr), "ucp_worker_query"));
  address_ = absl::StrCat(
      kAddressMagic,
      absl::string_view(reinterpret_cast<const char*>(attr.address), attr.address_length));
  ucp_worker_release_address(worker, attr.address);
  caps_.max_frame_header_bytes =
      std::min(kMaxFrameHeaderBytes, attr.max_am_header - kTransportHeaderBytes);

  struct Handler {
    unsigned id;
    ucp_am_recv_callback_t cb;
  };
  for (const Handler& h :
       {Handler{kAmHello, &OnHello}, Handler{kAmHelloAck, &OnHelloAck}, Handler{kAmFrame, &OnFrame},
        Handler{kAmReply, &OnReply}, Handler{kAmBye, &OnBye}, Handler{kAmGoodbye, &OnGoodbye}}) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                   UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    p.id = h.id;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    p.cb = h.cb;
    p.arg = this;
    KVWIRE_RETURN_IF_ERROR(
        FromUcs(ucp_worker_set_am_recv_handler(worker, &p), "ucp_worker_set_am_recv_handler"));
  }
  return absl::OkStatus();
}

absl::Status UcxTransport::InitWakeup() {
  int worker_fd = -1;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_worker_get_efd(worker_.get(), &worker_fd), "get_efd"));
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  wake_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!epoll_fd_ || !wake_fd_) {
    return absl::ResourceExhaustedError(absl::StrCat("epoll/eventfd: ", std::strerror(errno)));
  }
  for (int fd : {worker_fd, wake_fd_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Progress thread

void UcxTransport::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&cmd_mu_);
    cmds_.push_back(std::move(fn));
  }
  has_cmds_.store(true);
  if (sleeping_.load()) {
    const uint64_t one = 1;
    if (::write(wake_fd_.get(), &one, sizeof(one)) < 0 && errno != EAGAIN) {
      KVWIRE_LOG(ERROR) << "waking the UCX progress thread: " << std::strerror(errno);
    }
  }
}

bool UcxTransport::RunCommands() {
  if (!has_cmds_.load(std::memory_order_acquire)) return false;
  std::vector<std::function<void()>> cmds;
  {
    absl::MutexLock lock(&cmd_mu_);
    cmds.swap(cmds_);
    has_cmds_.store(false);
  }
  for (auto& fn : cmds) fn();
  return !cmds.empty();
}

void UcxTransport::Loop() {
  auto last_activity = absl::Now();
  while (!stop_.load(std::memory_order_acquire)) {
    const bool ran = RunCommands();
    const unsigned progressed = ucp_worker_progress(worker_.get());
    if (ran || progressed != 0) {
      last_activity = absl::Now();
    } else if (absl::Now() - last_activity >= busy_poll_) {
      SleepUntilActivity();
      last_activity = absl::Now();
    } else {
      // Busy-polling: let a runnable thread on this core (typically the one that waits for this
      // completion) run first instead of waiting for the scheduler to preempt the poll.
      sched_yield();
    }
  }
  Shutdown();
}

void UcxTransport::SleepUntilActivity() {
  // ucp_worker_arm reports BUSY while events are pending; then keep polling instead.
  if (ucp_worker_arm(worker_.get()) != UCS_OK) return;
  sleeping_.store(true);
  if (!has_cmds_.load() && !stop_.load()) {
    epoll_event events[2];
    (void)epoll_wait(epoll_fd_.get(), events, 2, kMaxSleepMillis);
  }
  sleeping_.store(false);
  uint64_t drained = 0;
  while (::read(wake_fd_.get(), &drained, sizeof(drained)) > 0) {
  }
}

void UcxTransport::Shutdown() {
  RunCommands();
  std::vector<std::shared_ptr<ConnState>> conns;
  for (auto& [id, conn] : conns_) conns.push_back(conn);
  for (auto& conn : conns) CloseConnOnWorker(conn);
  for (auto& [id, peer] : peers_) {
    std::string goodbye;
    PutU64(&goodbye, id);
    SendSmall(peer->ep, kAmGoodbye, std::move(goodbye));
    CloseEp(peer->ep, /*force=*/false);  // Flushes the goodbye.
  }
  peers_.clear();
  const Deadline deadline = Deadline::In(kReleaseGrace);
  auto busy = [this] {
    if (inbox_.Drain(Deadline::In(absl::ZeroDuration())).ok() == false) return true;
    for (auto& req : closing_) {
      if (req && ucp_request_check_status(req.get()) == UCS_INPROGRESS) return true;
    }
    return false;
  };
  while (busy() && !deadline.Expired()) ucp_worker_progress(worker_.get());
  if (busy()) KVWIRE_LOG(WARNING) << "UCX transport shut down with operations still in flight";
  closing_.clear();
}

UcxTransport::~UcxTransport() {
  if (thread_.joinable()) {
    stop_.store(true);
    Post([] {});
    thread_.join();
  }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

ucs_status_t UcxTransport::CreateEp(const void* address, ucp_err_handler_cb_t cb, void* arg,
                                    ucp_ep_h* ep) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = static_cast<const ucp_address_t*>(address);
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = cb;
  params.err_handler.arg = arg;
  return ucp_ep_create(worker_.get(), &params, ep);
}

void UcxTransport::CloseEp(ucp_ep_h ep, bool force) {
  if (ep == nullptr) return;
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &params);
  if (UCS_PTR_IS_PTR(req)) closing_.emplace_back(req);
  // Reap finished close requests so the list stays short.
  std::erase_if(closing_, [](const RequestHandle& r) {
    return ucp_request_check_status(r.get()) != UCS_INPROGRESS;
  });
}

// Sends a small header-only message; the header buffer lives until UCX is done with it.
void UcxTransport::SendSmall(ucp_ep_h ep, unsigned id, std::string header) {
  auto* buffer = new std::string(std::move(header));
  ucp_request_param_t params{};
  params.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = UCP_AM_SEND_FLAG_EAGER;
  params.user_data = buffer;
  params.cb.send = [](void* request, ucs_status_t, void* user_data) {
    delete static_cast<std::string*>(user_data);
    ucp_request_free(request);
  };
  ucs_status_ptr_t req =
      ucp_am_send_nbx(ep, id, buffer->data(), buffer->size(), nullptr, 0, &params);
  if (!UCS_PTR_IS_PTR(req)) delete buffer;
}

void UcxTransport::SendReply(uint64_t peer_id, uint64_t send_id, const absl::Status& status) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;  // The sender is gone; nobody to tell.
  std::string header;
  PutU64(&header, peer_id);
  PutU64(&header, send_id);
  PutU32(&header, static_cast<uint32_t>(status.code()));
  PutU32(&header, static_cast<uint32_t>(status.message().size()));
  header.append(status.message().data(), status.message().size());
  SendSmall(it->second->ep, kAmReply, std::move(header));
}

// ---------------------------------------------------------------------------------------------
// Connections (sending side)

class UcxSendOperation final : public SendOperation {
 public:
  explicit UcxSendOperation(std::shared_ptr<SendOp> op) : op_(std::move(op)) {}
  ~UcxSendOperation() override {
    if (op_->completion.Done()) return;
    UcxTransport* owner = op_->conn->owner;
    owner->Post([op = op_, owner] { owner->CancelOpOnWorker(op.get()); });
    absl::Status s = op_->completion.Wait(Deadline::In(kReleaseGrace), "cancelling a send");
    if (absl::IsDeadlineExceeded(s)) {
      KVWIRE_LOG(ERROR) << "send " << op_->send_id << " of request " << op_->request_id
                        << " still holds its buffers after cancellation";
    }
  }
  absl::Status Wait(Deadline deadline) override {
    return op_->completion.Wait(deadline, absl::StrCat("send of request ", op_->request_id));
  }
  bool Done() const override { return op_->completion.Done(); }

 private:
  std::shared_ptr<SendOp> op_;
};

class UcxConnection final : public Connection {
 public:
  explicit UcxConnection(std::shared_ptr<ConnState> conn) : conn_(std::move(conn)) {}
  ~UcxConnection() override {
    UcxTransport* owner = conn_->owner;
    owner->Post([conn = conn_, owner] { owner->CloseConnOnWorker(conn); });
  }

  absl::StatusOr<std::unique_ptr<SendOperation>> StartSend(const FrameInfo& info,
                                                           absl::Span<const uint8_t> frame_header,
                                                           absl::Span<const uint8_t> payload,
                                                           MemoryKind kind) override {
    const Capabilities caps = conn_->owner->capabilities();
    KVWIRE_RETURN_IF_ERROR(
        CheckOutgoingFrame(info, frame_header.size(), payload.size(), caps.max_payload_bytes));
    if (frame_header.size() > caps.max_frame_header_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("frame header of ", frame_header.size(),
                                                     " bytes exceeds this UCX build's ",
                                                     caps.max_frame_header_bytes));
    }
    if (kind == MemoryKind::kCuda && !caps.supports_gpu_memory) {
      return absl::InvalidArgumentError("this UCX build has no CUDA memory support");
    }
    const uint64_t send_id = conn_->next_send_id++;
    TransportHeader header{conn_->id, send_id, info, static_cast<uint32_t>(frame_header.size())};
    auto encoded = EncodeTransportHeader(header);
    return Start(encoded, frame_header, payload, kind, send_id, info.request_id);
  }

  void Cancel(RequestId request_id) override {
    {
      absl::MutexLock lock(&conn_->mu);
      conn_->cancelled.insert(request_id);
    }
    UcxTransport* owner = conn_->owner;
    owner->Post([conn = conn_, owner, request_id] {
      owner->CancelRequestOnWorker(conn.get(), request_id);
    });
  }

  absl::StatusOr<std::unique_ptr<SendOperation>> StartSendRawForTesting(
      absl::Span<const uint8_t> transport_header, absl::Span<const uint8_t> frame_header,
      absl::Span<const uint8_t> payload) override {
    return Start(transport_header, frame_header, payload, MemoryKind::kHost, conn_->next_send_id++,
                 0);
  }

 private:
  absl::StatusOr<std::unique_ptr<SendOperation>> Start(absl::Span<const uint8_t> transport_header,
                                                       absl::Span<const uint8_t> frame_header,
                                                       absl::Span<const uint8_t> payload,
                                                       MemoryKind kind, uint64_t send_id,
                                                       RequestId request_id) {
    auto op = std::make_shared<SendOp>();
    op->send_id = send_id;
    op->request_id = request_id;
    std::string envelope;
    PutU64(&envelope, conn_->id);
    PutU64(&envelope, send_id);
    op->am_header.assign(envelope.begin(), envelope.end());
    op->am_header.insert(op->am_header.end(), transport_header.begin(), transport_header.end());
    op->am_header.insert(op->am_header.end(), frame_header.begin(), frame_header.end());
    op->payload = payload.data();
    op->payload_bytes = payload.size();
    op->kind = kind;
    KVWIRE_ASSIGN_OR_RETURN(auto started, conn_->owner->StartSendOp(conn_, std::move(op)));
    return std::make_unique<UcxSendOperation>(std::move(started));
  }

  std::shared_ptr<ConnState> conn_;
};

absl::StatusOr<std::unique_ptr<Connection>> UcxTransport::Connect(absl::string_view peer_address,
                                                                  Deadline deadline) {
  if (!absl::StartsWith(peer_address, kAddressMagic) ||
      peer_address.size() <= kAddressMagic.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a UCX transport address (", peer_address.size(), " bytes)"));
  }
  auto conn = std::make_shared<ConnState>();
  conn->owner = this;
  conn->id = NewRequestId();
  std::string address(peer_address.substr(kAddressMagic.size()));
  Post([this, conn, address] {
    ucs_status_t s = CreateEp(address.data(), &OnConnError, conn.get(), &conn->ep);
    if (s != UCS_OK) {
      absl::MutexLock lock(&conn->mu);
      conn->broken = FromUcs(s, "creating a UCX endpoint");
      return;
    }
    conns_[conn->id] = conn;
    std::string hello;
    PutU64(&hello, conn->id);
    hello.append(address_.substr(kAddressMagic.size()));
    SendSmall(conn->ep, kAmHello, std::move(hello));
  });
  absl::MutexLock lock(&conn->mu);
  auto settled = [&conn]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn->mu) {
    return conn->ready || !conn->broken.ok();
  };
  if (!conn->mu.AwaitWithDeadline(absl::Condition(&settled), deadline.ToAbslTime())) {
    conn->broken = absl::DeadlineExceededError("connecting: the peer did not answer in time");
    Post([this, conn] { CloseConnOnWorker(conn); });
    return conn->broken;
  }
  if (!conn->broken.ok()) return conn->broken;
  return std::make_unique<UcxConnection>(conn);
}

absl::StatusOr<std::shared_ptr<SendOp>> UcxTransport::StartSendOp(
    const std::shared_ptr<ConnState>& conn, std::shared_ptr<SendOp> op) {
  {
    absl::MutexLock lock(&conn->mu);
    if (!conn->broken.ok()) return conn->broken;
    if (op->request_id != 0 && conn->cancelled.contains(op->request_id)) {
      return absl::CancelledError(absl::StrCat("request ", op->request_id, " was cancelled"));
    }
  }
  op->conn = conn;
  Post([this, op] {
    ConnState* c = op->conn.get();
    if (c->ep == nullptr) {
      op->completion.Finish(absl::UnavailableError("connection is closed"));
      return;
    }
    c->ops[op->send_id] = op;
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.cb.send = &OnSendDone;
    params.user_data = op.get();
    if (op->kind == MemoryKind::kCuda) {
      params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMORY_TYPE;
      params.memory_type = UCS_MEMORY_TYPE_CUDA;
    }
    ucs_status_ptr_t req =
        ucp_am_send_nbx(c->ep, kAmFrame, op->am_header.data(), op->am_header.size(), op->payload,
                        op->payload_bytes, &params);
    if (UCS_PTR_IS_PTR(req)) {
      op->request.reset(req);
      op->self_ref = op;
    } else {
      LocalDone(op.get(), UCS_PTR_STATUS(req));
    }
  });
  return op;
}

void UcxTransport::OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  op->conn->owner->LocalDone(op, status);
}

void UcxTransport::LocalDone(SendOp* op, ucs_status_t status) {
  std::shared_ptr<SendOp> keep = std::move(op->self_ref);
  op->request.reset();
  op->local_done = true;
  if (status != UCS_OK) {
    if (op->status.ok()) op->status = FromUcs(status, "sending a frame");
    op->reply_done = true;  // A frame that did not leave gets no reply.
  }
  MaybeFinish(op);
}

void UcxTransport::MaybeFinish(SendOp* op) {
  if (!op->local_done || !(op->reply_done || op->cancel)) return;
  absl::Status status = op->status;
  if (op->cancel && (status.ok() || !op->reply_done)) {
    status = absl::CancelledError(absl::StrCat("send of request ", op->request_id, " cancelled"));
  }
  op->completion.Finish(std::move(status));
  op->conn->ops.erase(op->send_id);  // May drop the last reference to `op`.
}

void UcxTransport::CancelOpOnWorker(SendOp* op) {
  if (op->completion.Done()) return;
  op->cancel = true;
  if (!op->local_done && op->request) ucp_request_cancel(worker_.get(), op->request.get());
  MaybeFinish(op);
}

void UcxTransport::CancelRequestOnWorker(ConnState* conn, RequestId request_id) {
  std::vector<std::shared_ptr<SendOp>> victims;
  for (auto& [id, op] : conn->ops) {
    if (op->request_id == request_id) victims.push_back(op);
  }
  for (auto& op : victims) CancelOpOnWorker(op.get());
}

void UcxTransport::CloseConnOnWorker(const std::shared_ptr<ConnState>& conn) {
  if (conn->ep != nullptr) {
    std::string bye;
    PutU64(&bye, conn->id);
    SendSmall(conn->ep, kAmBye, std::move(bye));
  }
  // A graceful close flushes what is in flight; unfinished operations make it a forced one.
  ConnFailed(conn.get(), absl::UnavailableError("connection closed"), !conn->ops.empty());
}

void UcxTransport::ConnFailed(ConnState* conn, absl::Status why, bool force) {
  {
    absl::MutexLock lock(&conn->mu);
    if (conn->broken.ok()) conn->broken = why;
  }
  std::vector<std::shared_ptr<SendOp>> ops;
  for (auto& [id, op] : conn->ops) ops.push_back(op);
  for (auto& op : ops) {
    if (op->status.ok()) op->status = why;
    op->reply_done = true;
  }
  // Closing the endpoint completes every outstanding send (with an error if it was cut short).
  CloseEp(conn->ep, force);
  conn->ep = nullptr;
  for (auto& op : ops) MaybeFinish(op.get());
  conns_.erase(conn->id);
}

ucs_status_t UcxTransport::OnGoodbye(void* arg, const void* header, size_t header_length,
                                     void* data, size_t length, const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxTransport*>(arg);
  if (header_length != 8) return UCS_OK;
  auto it = self->conns_.find(GetLe<uint64_t>(header, 0));
  if (it == self->conns_.end()) return UCS_OK;
  std::shared_ptr<ConnState> conn = it->second;
  self->ConnFailed(conn.get(), absl::UnavailableError("the receiver shut down"), /*force=*/true);
  return UCS_OK;
}

void UcxTransport::OnConnError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* conn = static_cast<ConnState*>(arg);
  conn->owner->ConnFailed(conn, FromUcs(status, "peer failed"), /*force=*/true);
}

ucs_status_t UcxTransport::OnHelloAck(void* arg, const void* header, size_t header_length,
                                      void* data, size_t length, const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxTransport*>(arg);
  if (header_length != 8) return UCS_OK;
  auto it = self->conns_.find(GetLe<uint64_t>(header, 0));
  if (it == self->conns_.end()) return UCS_OK;
  absl::MutexLock lock(&it->second->mu);
  it->second->ready = true;
  return UCS_OK;
}

ucs_status_t UcxTransport::OnReply(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxTransport*>(arg);
  if (header_length < kReplyFixedBytes) return UCS_OK;
  const uint32_t message_bytes = GetLe<uint32_t>(header, 20);
  if (header_length != kReplyFixedBytes + message_bytes) return UCS_OK;
  auto conn = self->conns_.find(GetLe<uint64_t>(header, 0));
  if (conn == self->conns_.end()) return UCS_OK;
  auto op_it = conn->second->ops.find(GetLe<uint64_t>(header, 8));
  if (op_it == conn->second->ops.end()) return UCS_OK;
  SendOp* op = op_it->second.get();
  const auto code = static_cast<absl::StatusCode>(GetLe<uint32_t>(header, 16));
  if (code != absl::StatusCode::kOk && op->status.ok()) {
    op->status = absl::Status(
        code, absl::StrCat("receiver rejected the frame: ",
                           absl::string_view(static_cast<const char*>(header) + kReplyFixedBytes,
                                             message_bytes)));
  }
  op->reply_done = true;
  self->MaybeFinish(op);
  return UCS_OK;
}

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
  inbox_.PeerGone(peer_id, why);
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
  absl::StatusOr<Destination> dest = inbox_.Admit(peer_id, header->info, frame_header);
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
  if (rndv) {
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
  std::unique_ptr<RecvOp> owned(rx);
  if (status == UCS_OK) {
    SendReply(rx->peer, rx->send_id, absl::OkStatus());
    inbox_.Complete(rx->peer, ReceivedFrame{rx->info, std::move(rx->frame_header), rx->dest});
    return;
  }
  absl::Status failed = FromUcs(status, "receiving a payload");
  SendReply(rx->peer, rx->send_id, failed);
  inbox_.Fail(rx->peer, rx->info.request_id, std::move(failed));
}

absl::StatusOr<std::unique_ptr<MemoryRegion>> UcxTransport::RegisterMemory(void* data, size_t bytes,
                                                                           MemoryKind kind) {
  if (kind == MemoryKind::kCuda && !caps_.supports_gpu_memory) {
    return absl::InvalidArgumentError("this UCX build has no CUDA memory support");
  }
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = data;
  params.length = bytes;
  params.memory_type = kind == MemoryKind::kCuda ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
  ucp_mem_h memh = nullptr;
  KVWIRE_RETURN_IF_ERROR(FromUcs(ucp_mem_map(context_.get(), &params, &memh), "ucp_mem_map"));
  return std::make_unique<UcxRegion>(context_.get(), memh, data, bytes, kind);
}

}  // namespace
}  // namespace ucx

absl::StatusOr<std::unique_ptr<Transport>> MakeUcxTransport(const UcxOptions& options) {
  return ucx::UcxTransport::Create(options);
}

}  // namespace kvwire::transport
