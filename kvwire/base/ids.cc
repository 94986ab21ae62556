#include "kvwire/base/ids.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"

namespace kvwire {
namespace {

void FillRandom(void* out, size_t n) {
  auto* p = static_cast<uint8_t*>(out);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      std::abort();  // No entropy source: nothing secure can be issued (programmer/system error).
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
}

}  // namespace

RequestId NewRequestId() {
  RequestId id = 0;
  while (id == 0) FillRandom(&id, sizeof(id));
  return id;
}

Token NewToken() {
  Token t;
  FillRandom(t.bytes.data(), t.bytes.size());
  return t;
}

std::string Token::ToHex() const {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

bool Token::FromHex(absl::string_view hex, Token* out) {
  if (hex.size() != 32) return false;
  for (char c : hex) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!ok) return false;
  }
  const std::string raw = absl::HexStringToBytes(hex);
  std::memcpy(out->bytes.data(), raw.data(), out->bytes.size());
  return true;
}

bool TokensEqual(const Token& a, const Token& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.bytes.size(); ++i) diff |= a.bytes[i] ^ b.bytes[i];
  return diff == 0;
}

}  // namespace kvwire
