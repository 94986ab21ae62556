// Fuzz target for the wire-format decoders. The first input byte picks what the rest is:
//   0: a stream of frames fed to a CacheAssembler (frames split by their own length fields);
//   1: a Manifest payload; 2: a Layer payload (decoded and expanded); 3: Commit; 4: Abort.
// Modes 1-4 bypass the integrity hashes so the fuzzer reaches the payload parsers directly.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvwire/cache/frames.h"
#include "kvwire/format/messages.h"

namespace {

using namespace kvwire;

format::Limits FuzzLimits() {
  format::Limits limits;
  limits.max_payload_bytes = 1 << 20;
  limits.max_entries_per_head = 1 << 14;
  return limits;
}

void FuzzStream(const uint8_t* data, size_t size) {
  cache::CacheAssembler assembler(FuzzLimits());
  size_t pos = 0;
  while (size - pos >= format::kFrameHeaderSize) {
    uint64_t len = 0;
    std::memcpy(&len, data + pos + 24, sizeof(len));
    const size_t avail = size - pos - format::kFrameHeaderSize;
    const size_t take = format::kFrameHeaderSize + (len < avail ? static_cast<size_t>(len) : avail);
    auto event = assembler.OnFrame(absl::MakeConstSpan(data + pos, take));
    if (!event.ok()) return;
    pos += take;
  }
  if (assembler.committed()) {
    auto cache = assembler.TakeCache();
    if (!cache.ok() || !cache->Validate().ok()) __builtin_trap();  // Committed implies valid.
  }
}

void FuzzLayer(absl::Span<const uint8_t> payload) {
  auto view = format::DecodeLayer(payload, FuzzLimits());
  if (!view.ok()) return;
  const int d = view->layout.head_dim;
  for (const auto& head : view->heads) {
    std::vector<int32_t> positions(head.count);
    std::vector<float> votes(head.count), keys(size_t{head.count} * d), values(keys.size());
    (void)format::ExpandHead(view->layout, head, positions.data(), votes.data(), keys.data(),
                             values.data());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::Span<const uint8_t> rest(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0: FuzzStream(rest.data(), rest.size()); break;
    case 1: (void)format::DecodeManifest(rest, FuzzLimits()); break;
    case 2: FuzzLayer(rest); break;
    case 3: (void)format::DecodeCommit(rest); break;
    case 4: (void)format::DecodeAbort(rest, FuzzLimits()); break;
  }
  return 0;
}
