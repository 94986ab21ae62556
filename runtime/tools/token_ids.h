// runtime/tools/token_ids.h — parsing of comma-separated token id lists for the runtime tools.
// Thread-safety: pure. Errors: INVALID_ARGUMENT naming the bad item.
#ifndef KVWIRE_RUNTIME_TOOLS_TOKEN_IDS_H_
#define KVWIRE_RUNTIME_TOOLS_TOKEN_IDS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvwire::runtime {

// "1, 2,3" -> {1, 2, 3}.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text);

}  // namespace kvwire::runtime

#endif  // KVWIRE_RUNTIME_TOOLS_TOKEN_IDS_H_
