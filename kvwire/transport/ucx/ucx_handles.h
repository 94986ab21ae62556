// kvwire/transport/ucx/ucx_handles.h — move-only owners for UCX handles.
//
// Context, worker, config and request handles are UniqueHandles. Endpoints are not: closing one
// (ucp_ep_close_nbx) needs worker progress, so the transport's progress thread closes them
// explicitly. Deleters are noexcept and never fail loudly. Thread-compatible.
#ifndef KVWIRE_TRANSPORT_UCX_UCX_HANDLES_H_
#define KVWIRE_TRANSPORT_UCX_UCX_HANDLES_H_

#include <ucp/api/ucp.h>
#include <unistd.h>

#include "kvwire/base/handle.h"

namespace kvwire::transport::ucx {

struct ConfigTraits {
  static constexpr ucp_config_t* kNull = nullptr;
  static void Close(ucp_config_t* config) noexcept { ucp_config_release(config); }
};
struct ContextTraits {
  static constexpr ucp_context_h kNull = nullptr;
  static void Close(ucp_context_h context) noexcept { ucp_cleanup(context); }
};
struct WorkerTraits {
  static constexpr ucp_worker_h kNull = nullptr;
  static void Close(ucp_worker_h worker) noexcept { ucp_worker_destroy(worker); }
};
// A request returned by a *_nbx call; freed once its completion callback has run.
struct RequestTraits {
  static constexpr void* kNull = nullptr;
  static void Close(void* request) noexcept { ucp_request_free(request); }
};
struct FdTraits {
  static constexpr int kNull = -1;
  static void Close(int fd) noexcept { ::close(fd); }
};

using ConfigHandle = UniqueHandle<ucp_config_t*, ConfigTraits>;
using ContextHandle = UniqueHandle<ucp_context_h, ContextTraits>;
using WorkerHandle = UniqueHandle<ucp_worker_h, WorkerTraits>;
using RequestHandle = UniqueHandle<void*, RequestTraits>;
using FdHandle = UniqueHandle<int, FdTraits>;

}  // namespace kvwire::transport::ucx

#endif  // KVWIRE_TRANSPORT_UCX_UCX_HANDLES_H_
