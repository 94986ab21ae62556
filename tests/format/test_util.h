// Helpers for wire-format tests: tamper with a frame while keeping its integrity fields valid,
// so a test reaches the check it means to exercise.
#ifndef KVWIRE_TESTS_FORMAT_TEST_UTIL_H_
#define KVWIRE_TESTS_FORMAT_TEST_UTIL_H_

#include <cstring>
#include <vector>

#include "kvwire/format/frame.h"

namespace kvwire::format::testing {

// Recomputes the header hash after a test edited header bytes 0..39.
inline void RehashHeader(std::vector<uint8_t>& frame) {
  const uint64_t h = HashBytes(absl::MakeConstSpan(frame.data(), 40));
  std::memcpy(frame.data() + 40, &h, 8);
}

// Recomputes payload length and hash (then the header hash) after a test edited the payload.
inline void Reseal(std::vector<uint8_t>& frame) {
  const uint64_t len = frame.size() - kFrameHeaderSize;
  const uint64_t ph = HashBytes(absl::MakeConstSpan(frame.data() + kFrameHeaderSize, len));
  std::memcpy(frame.data() + 24, &len, 8);
  std::memcpy(frame.data() + 32, &ph, 8);
  RehashHeader(frame);
}

template <typename T>
void Poke(std::vector<uint8_t>& bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

}  // namespace kvwire::format::testing

#endif  // KVWIRE_TESTS_FORMAT_TEST_UTIL_H_
