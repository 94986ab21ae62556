// kvwire/base/ids.h — request ids and one-time tokens.
//
// Request ids are random 64-bit values (never 0); grant tokens are 128 random bits drawn from the
// OS entropy source, rendered as 32 lowercase hex characters. Thread-safe.
#ifndef KVWIRE_BASE_IDS_H_
#define KVWIRE_BASE_IDS_H_

#include <array>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace kvwire {

using RequestId = uint64_t;

// A fresh non-zero random request id.
RequestId NewRequestId();

// 16 random bytes from a cryptographically secure source.
struct Token {
  std::array<uint8_t, 16> bytes{};
  bool operator==(const Token&) const = default;
  std::string ToHex() const;
  // Parses 32 hex characters; false on anything else.
  static bool FromHex(absl::string_view hex, Token* out);
};
Token NewToken();

// Constant-time comparison, for secrets.
bool TokensEqual(const Token& a, const Token& b);

}  // namespace kvwire

#endif  // KVWIRE_BASE_IDS_H_
