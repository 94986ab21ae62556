#include "kvwire/transport/nccl/nccl_status.h"

#include "absl/strings/str_cat.h"

namespace kvwire::transport::nccl {

absl::StatusCode NcclToCode(ncclResult_t result) {
  using C = absl::StatusCode;
  switch (result) {
    case ncclSuccess:
      return C::kOk;
    case ncclUnhandledCudaError:
      return C::kInternal;
    case ncclSystemError:
      return C::kUnavailable;
    case ncclInternalError:
      return C::kInternal;
    case ncclInvalidArgument:
      return C::kInvalidArgument;
    case ncclInvalidUsage:
      return C::kFailedPrecondition;
    case ncclRemoteError:
      return C::kUnavailable;
    case ncclInProgress:
      return C::kUnknown;
    default:
      return C::kUnknown;
  }
}

absl::Status FromNccl(ncclResult_t result, absl::string_view what) {
  if (result == ncclSuccess) return absl::OkStatus();
  return absl::Status(NcclToCode(result),
                      absl::StrCat(what, ": ", ncclGetErrorString(result), " (nccl result ",
                                   static_cast<int>(result), ")"));
}

absl::Status FromCudaRuntime(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  if (error == cudaErrorMemoryAllocation) code = absl::StatusCode::kResourceExhausted;
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) {
    code = absl::StatusCode::kFailedPrecondition;
  }
  return absl::Status(code, absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

}  // namespace kvwire::transport::nccl
