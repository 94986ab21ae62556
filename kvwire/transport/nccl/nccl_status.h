// kvwire/transport/nccl/nccl_status.h — NCCL and CUDA runtime results as absl::Status.
//
// FromNccl: ncclRemoteError and ncclSystemError (the peer or the network went away) ->
// UNAVAILABLE; ncclInvalidArgument -> INVALID_ARGUMENT; ncclInvalidUsage -> FAILED_PRECONDITION;
// ncclUnhandledCudaError / ncclInternalError -> INTERNAL; ncclInProgress (not a final result) and
// anything unknown -> UNKNOWN. FromCudaRuntime: cudaErrorMemoryAllocation -> RESOURCE_EXHAUSTED,
// no device -> FAILED_PRECONDITION, everything else INTERNAL. Messages name `what` and the
// library's own error string. Thread-safe. Included only inside kvwire/transport/nccl.
#ifndef KVWIRE_TRANSPORT_NCCL_NCCL_STATUS_H_
#define KVWIRE_TRANSPORT_NCCL_NCCL_STATUS_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvwire::transport::nccl {

absl::StatusCode NcclToCode(ncclResult_t result);
absl::Status FromNccl(ncclResult_t result, absl::string_view what);
absl::Status FromCudaRuntime(cudaError_t error, absl::string_view what);

}  // namespace kvwire::transport::nccl

#endif  // KVWIRE_TRANSPORT_NCCL_NCCL_STATUS_H_
