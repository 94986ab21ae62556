// The UCX transport: set-up, the progress thread, endpoints and the sending side. The protocol is
// described in ucx_internal.h; the receiving side lives in ucx_receive.cc.
#include "kvwire/transport/ucx/ucx_transport.h"

#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/base/ids.h"
#include "kvwire/base/log.h"
#include "kvwire/base/status.h"
#include "kvwire/transport/ucx/ucx_internal.h"
#include "kvwire/transport/ucx/ucx_status.h"
#include "kvwire/transport/wire_header.h"

namespace kvwire::transport {
namespace ucx {
namespace {

// Whether a UCX_TLS list can select the posix/sysv shared-memory transports (UCX warns about
// their settings otherwise).
bool UsesSharedMemory(absl::string_view tls) {
  if (tls.empty()) return true;
  for (absl::string_view name : {"posix", "sysv", "sm", "shm", "all", "mm"}) {
    if (absl::StrContains(tls, name)) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Initialisation

absl::StatusOr<std::unique_ptr<Transport>> UcxTransport::Create(const UcxOptions& options) {
  std::unique_ptr<UcxTransport> t(new UcxTransport());
  KVWIRE_RETURN_IF_ERROR(t->Init(options));
  return std::unique_ptr<Transport>(std::move(t));
}

absl::Status UcxTransport::Init(const UcxOptions& options) {
  busy_poll_ = options.busy_poll;
  drive_window_ = options.drive_window;
  KVWIRE_RETURN_IF_ERROR(InitContext(options));
  KVWIRE_RETURN_IF_ERROR(InitWorker());
  KVWIRE_RETURN_IF_ERROR(InitWakeup());
  staging_copy_timeout_ = options.staging_copy_timeout;
  if (options.device_copier != nullptr && !caps_.supports_gpu_memory) {
    StagingPool::Options pool;
    pool.limit_bytes = options.staging_limit_bytes;
    pool.keep_bytes = options.staging_keep_bytes;
    pool.register_block = [this](void* data, size_t bytes) {
      return RegisterMemory(data, bytes, MemoryKind::kHost);
    };
    staging_ = std::make_unique<StagingPool>(options.device_copier, std::move(pool));
    caps_.supports_gpu_memory = true;
    caps_.gpu_memory_staged = true;
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

absl::StatusOr<StagingPool::Lease> UcxTransport::StageOutgoing(const void* device, size_t bytes) {
  KVWIRE_ASSIGN_OR_RETURN(StagingPool::Lease lease, staging_->Acquire(bytes));
  absl::Status copied = staging_->copier().ToHost(lease.data(), device, bytes,
                                                  Deadline::In(staging_copy_timeout_));
  if (absl::IsDeadlineExceeded(copied)) lease.Quarantine();  // The copy may still land there.
  if (!copied.ok()) {
    return absl::Status(copied.code(),
                        absl::StrCat("staging a device payload of ", bytes,
                                     " bytes to pinned host memory: ", copied.message()));
  }
  return lease;
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
    if (drivers_.load() > 0) {
      StandAside();
      last_activity = absl::Now();
      continue;
    }
    bool active = false;
    {
      absl::MutexLock lock(&worker_mu_);
      active = RunCommands();
      active = ucp_worker_progress(worker_.get()) != 0 || active;
    }
    if (active) {
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
  absl::MutexLock lock(&worker_mu_);
  Shutdown();
}

bool UcxTransport::TryDrive() {
  if (!worker_mu_.TryLock()) return false;
  RunCommands();
  ucp_worker_progress(worker_.get());
  worker_mu_.Unlock();
  return true;
}

void UcxTransport::EndDriving() {
  if (drivers_.fetch_sub(1) == 1 && sleeping_.load()) {
    const uint64_t one = 1;  // Hand the worker back to the progress thread.
    (void)!::write(wake_fd_.get(), &one, sizeof(one));
  }
}

// While a waiter drives the worker the progress thread sleeps rather than spins: on a machine
// with few cores a third spinning thread would starve the peer it is waiting for.
void UcxTransport::StandAside() {
  sleeping_.store(true);
  if (drivers_.load() > 0) {
    pollfd p{wake_fd_.get(), POLLIN, 0};
    (void)poll(&p, 1, /*timeout_ms=*/1);
  }
  sleeping_.store(false);
  uint64_t drained = 0;
  while (::read(wake_fd_.get(), &drained, sizeof(drained)) > 0) {
  }
}

void UcxTransport::SleepUntilActivity() {
  {
    // ucp_worker_arm reports BUSY while events are pending; then keep polling instead.
    absl::MutexLock lock(&worker_mu_);
    if (ucp_worker_arm(worker_.get()) != UCS_OK) return;
  }
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
    if (inbox().Drain(Deadline::In(absl::ZeroDuration())).ok() == false) return true;
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
  staging_.reset();  // Deregisters its blocks while the UCP context still exists.
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

namespace {

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
    UcxTransport* owner = op_->conn->owner;
    if (!op_->completion.Done() && owner->drive_window() > absl::ZeroDuration()) {
      owner->BeginDriving();
      const Deadline drive_until =
          Deadline::Earliest(deadline, Deadline::In(owner->drive_window()));
      while (!op_->completion.Done() && !drive_until.Expired()) {
        if (!owner->TryDrive()) sched_yield();
      }
      owner->EndDriving();
    }
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
    // A device payload through a UCX without CUDA support crosses in a pinned host copy.
    std::optional<StagingPool::Lease> staged;
    if (kind == MemoryKind::kCuda && caps.gpu_memory_staged) {
      if (!payload.empty()) {
        KVWIRE_ASSIGN_OR_RETURN(staged, conn_->owner->StageOutgoing(payload.data(), payload.size()));
        payload = absl::Span<const uint8_t>(staged->data(), payload.size());
      }
      kind = MemoryKind::kHost;
    }
    const uint64_t send_id = conn_->next_send_id++;
    TransportHeader header{conn_->id, send_id, info, static_cast<uint32_t>(frame_header.size())};
    auto encoded = EncodeTransportHeader(header);
    return Start(encoded, frame_header, payload, kind, send_id, info.request_id,
                 std::move(staged));
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
                 0, std::nullopt);
  }

 private:
  absl::StatusOr<std::unique_ptr<SendOperation>> Start(absl::Span<const uint8_t> transport_header,
                                                       absl::Span<const uint8_t> frame_header,
                                                       absl::Span<const uint8_t> payload,
                                                       MemoryKind kind, uint64_t send_id,
                                                       RequestId request_id,
                                                       std::optional<StagingPool::Lease> staged) {
    auto op = std::make_shared<SendOp>();
    op->staging = std::move(staged);
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

}  // namespace

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
  op->memh = regions_->Find(op->payload, op->payload_bytes);
  // Sending inline saves a hand-over to the progress thread; queued commands go first so frames
  // keep their order.
  if (!has_cmds_.load() && worker_mu_.TryLock()) {
    RunCommands();
    SendOnWorker(op);
    worker_mu_.Unlock();
  } else {
    Post([this, op] { SendOnWorker(op); });
  }
  return op;
}

void UcxTransport::SendOnWorker(const std::shared_ptr<SendOp>& op) {
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
  if (op->memh != nullptr) {
    params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    params.memh = op->memh;
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
}

void UcxTransport::OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  op->conn->owner->LocalDone(op, status);
}

void UcxTransport::LocalDone(SendOp* op, ucs_status_t status) {
  std::shared_ptr<SendOp> keep = std::move(op->self_ref);
  op->request.reset();
  op->local_done = true;
  op->staging.reset();  // UCX is done with the payload: its pinned block goes back to the pool.
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

}  // namespace ucx

absl::StatusOr<std::unique_ptr<Transport>> MakeUcxTransport(const UcxOptions& options) {
  return ucx::UcxTransport::Create(options);
}

}  // namespace kvwire::transport
