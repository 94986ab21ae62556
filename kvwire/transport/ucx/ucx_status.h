// kvwire/transport/ucx/ucx_status.h — UCX status codes as absl::Status.
//
// FromUcs maps every ucs_status_t onto the kvwire code conventions: link and endpoint failures,
// resets, unreachable peers and vanished shared-memory segments -> UNAVAILABLE; UCS_ERR_TIMED_OUT
// -> DEADLINE_EXCEEDED; truncated messages -> DATA_LOSS; UCS_ERR_CANCELED -> CANCELLED; out of
// memory/resources -> RESOURCE_EXHAUSTED. The message names `what` and UCX's own status string.
// Thread-safe. Included only inside kvwire/transport/ucx (and its tests).
#ifndef KVWIRE_TRANSPORT_UCX_UCX_STATUS_H_
#define KVWIRE_TRANSPORT_UCX_UCX_STATUS_H_

#include <ucs/type/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvwire::transport::ucx {

absl::StatusCode UcsToCode(ucs_status_t status);
absl::Status FromUcs(ucs_status_t status, absl::string_view what);

}  // namespace kvwire::transport::ucx

#endif  // KVWIRE_TRANSPORT_UCX_UCX_STATUS_H_
