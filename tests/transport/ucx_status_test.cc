#include "kvwire/transport/ucx/ucx_status.h"

#include "gtest/gtest.h"

namespace kvwire::transport::ucx {
namespace {

TEST(FromUcs, MapsEveryStatusOntoKvwireCodes) {
  using C = absl::StatusCode;
  const std::pair<ucs_status_t, C> table[] = {
      {UCS_OK, C::kOk},
      {UCS_ERR_NO_MESSAGE, C::kNotFound},
      {UCS_ERR_NO_RESOURCE, C::kResourceExhausted},
      {UCS_ERR_IO_ERROR, C::kUnavailable},
      {UCS_ERR_NO_MEMORY, C::kResourceExhausted},
      {UCS_ERR_INVALID_PARAM, C::kInvalidArgument},
      {UCS_ERR_UNREACHABLE, C::kUnavailable},
      {UCS_ERR_INVALID_ADDR, C::kInvalidArgument},
      {UCS_ERR_NOT_IMPLEMENTED, C::kUnimplemented},
      {UCS_ERR_MESSAGE_TRUNCATED, C::kDataLoss},
      {UCS_ERR_NO_PROGRESS, C::kInternal},
      {UCS_ERR_BUFFER_TOO_SMALL, C::kInvalidArgument},
      {UCS_ERR_NO_ELEM, C::kNotFound},
      {UCS_ERR_SOME_CONNECTS_FAILED, C::kUnavailable},
      {UCS_ERR_NO_DEVICE, C::kFailedPrecondition},
      {UCS_ERR_BUSY, C::kUnavailable},
      {UCS_ERR_CANCELED, C::kCancelled},
      {UCS_ERR_SHMEM_SEGMENT, C::kUnavailable},
      {UCS_ERR_ALREADY_EXISTS, C::kAlreadyExists},
      {UCS_ERR_OUT_OF_RANGE, C::kOutOfRange},
      {UCS_ERR_TIMED_OUT, C::kDeadlineExceeded},
      {UCS_ERR_EXCEEDS_LIMIT, C::kResourceExhausted},
      {UCS_ERR_UNSUPPORTED, C::kUnimplemented},
      {UCS_ERR_REJECTED, C::kUnavailable},
      {UCS_ERR_NOT_CONNECTED, C::kUnavailable},
      {UCS_ERR_CONNECTION_RESET, C::kUnavailable},
      {UCS_ERR_FIRST_LINK_FAILURE, C::kUnavailable},
      {UCS_ERR_LAST_LINK_FAILURE, C::kUnavailable},
      {UCS_ERR_FIRST_ENDPOINT_FAILURE, C::kUnavailable},
      {UCS_ERR_ENDPOINT_TIMEOUT, C::kUnavailable},
      {UCS_ERR_LAST_ENDPOINT_FAILURE, C::kUnavailable},
      {static_cast<ucs_status_t>(-99), C::kUnknown},
  };
  for (const auto& [ucs, code] : table) {
    EXPECT_EQ(FromUcs(ucs, "op").code(), code) << ucs_status_string(ucs);
  }
}

TEST(FromUcs, MessageNamesOperationAndUcxReason) {
  absl::Status s = FromUcs(UCS_ERR_CONNECTION_RESET, "sending layer 3");
  EXPECT_NE(s.message().find("sending layer 3"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(ucs_status_string(UCS_ERR_CONNECTION_RESET)), absl::string_view::npos)
      << s;
}

}  // namespace
}  // namespace kvwire::transport::ucx
