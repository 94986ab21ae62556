// kvwire/base/status.h — error propagation helpers over absl::Status.
//
// Library code returns absl::Status / absl::StatusOr<T>; exceptions never cross a module
// boundary. This Abseil version has no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so kvwire defines its
// own. Thread-safety: stateless macros.
//
// Code conventions (STYLE.md): malformed peer bytes -> DATA_LOSS; bad caller arguments ->
// INVALID_ARGUMENT; no common version/codec -> FAILED_PRECONDITION; out of credits/slots/memory ->
// RESOURCE_EXHAUSTED; peer gone -> UNAVAILABLE; deadline -> DEADLINE_EXCEEDED.
#ifndef KVWIRE_BASE_STATUS_H_
#define KVWIRE_BASE_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define KVWIRE_STATUS_CONCAT_INNER_(a, b) a##b
#define KVWIRE_STATUS_CONCAT_(a, b) KVWIRE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function when not OK.
#define KVWIRE_RETURN_IF_ERROR(expr)                                  \
  do {                                                                \
    ::absl::Status kvwire_status_ = (expr);                           \
    if (!kvwire_status_.ok()) return kvwire_status_;                  \
  } while (0)

// `KVWIRE_ASSIGN_OR_RETURN(auto x, MakeX());` — evaluates an absl::StatusOr<T>; on error returns
// its status, otherwise moves the value into the declaration `lhs`.
#define KVWIRE_ASSIGN_OR_RETURN(lhs, expr) \
  KVWIRE_ASSIGN_OR_RETURN_IMPL_(KVWIRE_STATUS_CONCAT_(kvwire_statusor_, __LINE__), lhs, expr)

#define KVWIRE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

namespace kvwire {

// Returns `status` with `context` prepended to its message ("context: message"); OK stays OK.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace kvwire

#endif  // KVWIRE_BASE_STATUS_H_
