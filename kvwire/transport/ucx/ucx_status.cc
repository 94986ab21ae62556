#include "kvwire/transport/ucx/ucx_status.h"

#include "absl/strings/str_cat.h"

namespace kvwire::transport::ucx {

absl::StatusCode UcsToCode(ucs_status_t status) {
  using C = absl::StatusCode;
  if (UCS_IS_LINK_ERROR(status) || UCS_IS_ENDPOINT_ERROR(status)) return C::kUnavailable;
  switch (status) {
    case UCS_OK:
      return C::kOk;
    case UCS_INPROGRESS:
      return C::kUnknown;  // Not a final status; a caller bug to translate it.
    case UCS_ERR_NO_MESSAGE:
      return C::kNotFound;
    case UCS_ERR_NO_RESOURCE:
      return C::kResourceExhausted;
    case UCS_ERR_IO_ERROR:
      return C::kUnavailable;
    case UCS_ERR_NO_MEMORY:
      return C::kResourceExhausted;
    case UCS_ERR_INVALID_PARAM:
      return C::kInvalidArgument;
    case UCS_ERR_UNREACHABLE:
      return C::kUnavailable;
    case UCS_ERR_INVALID_ADDR:
      return C::kInvalidArgument;
    case UCS_ERR_NOT_IMPLEMENTED:
      return C::kUnimplemented;
    case UCS_ERR_MESSAGE_TRUNCATED:
      return C::kDataLoss;
    case UCS_ERR_NO_PROGRESS:
      return C::kInternal;
    case UCS_ERR_BUFFER_TOO_SMALL:
      return C::kInvalidArgument;
    case UCS_ERR_NO_ELEM:
      return C::kNotFound;
    case UCS_ERR_SOME_CONNECTS_FAILED:
      return C::kUnavailable;
    case UCS_ERR_NO_DEVICE:
      return C::kFailedPrecondition;
    case UCS_ERR_BUSY:
      return C::kUnavailable;
    case UCS_ERR_CANCELED:
      return C::kCancelled;
    case UCS_ERR_SHMEM_SEGMENT:
      return C::kUnavailable;  // The peer's segment is gone.
    case UCS_ERR_ALREADY_EXISTS:
      return C::kAlreadyExists;
    case UCS_ERR_OUT_OF_RANGE:
      return C::kOutOfRange;
    case UCS_ERR_TIMED_OUT:
      return C::kDeadlineExceeded;
    case UCS_ERR_EXCEEDS_LIMIT:
      return C::kResourceExhausted;
    case UCS_ERR_UNSUPPORTED:
      return C::kUnimplemented;
    case UCS_ERR_REJECTED:
      return C::kUnavailable;
    case UCS_ERR_NOT_CONNECTED:
      return C::kUnavailable;
    case UCS_ERR_CONNECTION_RESET:
      return C::kUnavailable;
    default:
      return C::kUnknown;
  }
}

absl::Status FromUcs(ucs_status_t status, absl::string_view what) {
  if (status == UCS_OK) return absl::OkStatus();
  return absl::Status(UcsToCode(status),
                      absl::StrCat(what, ": ", ucs_status_string(status), " (ucs status ",
                                   static_cast<int>(status), ")"));
}

}  // namespace kvwire::transport::ucx
