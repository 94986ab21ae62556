// transport_peer: the other process in the cross-process transport contract tests.
//
//   transport_peer recv <kind> <request> <frames>
//       prints "ADDR <hex>", receives <frames> frames of <request>, checks every payload against
//       the test pattern, prints "OK <frames>" (exit 0) or "BAD <why>" (exit 1). <frames> 0 means
//       "forever" (the test kills it).
//   transport_peer send <kind> <address-hex> <request> <frames> <bytes>
//       connects, sends <frames> patterned frames of <bytes> bytes (0 frames: until killed), and
//       prints "SENT <i>" after each acknowledged frame and "DONE" at the end; exit 1 on error.
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "tests/transport/transport_test_util.h"

namespace kvwire::transport::testing {
namespace {

constexpr absl::Duration kStepTimeout = absl::Seconds(30);

int Fail(const absl::Status& status) {
  std::cout << "BAD " << status << std::endl;
  return 1;
}

int RunReceiver(Transport& transport, RequestId request, uint64_t frames) {
  absl::Mutex mu;
  std::deque<std::vector<uint8_t>> buffers;  // Stable addresses: deque never moves elements.
  transport.SetAcceptor(
      [&](const FrameInfo& info, absl::Span<const uint8_t>) -> absl::StatusOr<Destination> {
        if (info.request_id != request) return absl::NotFoundError("unknown request");
        absl::MutexLock lock(&mu);
        buffers.emplace_back(info.payload_bytes);
        return Destination{absl::MakeSpan(buffers.back())};
      });
  std::cout << "ADDR " << AddressToHex(transport.LocalAddress()) << std::endl;
  for (uint64_t i = 0; frames == 0 || i < frames; ++i) {
    absl::StatusOr<ReceivedFrame> frame = transport.Receive(request, Deadline::In(kStepTimeout));
    if (!frame.ok()) return Fail(frame.status());
    if (int64_t bad = FirstMismatch(frame->info, frame->payload); bad >= 0) {
      return Fail(absl::DataLossError(absl::StrCat("payload differs at byte ", bad)));
    }
    absl::MutexLock lock(&mu);
    buffers.pop_front();  // Frames of one sender complete in order here; free the oldest.
  }
  std::cout << "OK " << frames << std::endl;
  return 0;
}

int RunSender(Transport& transport, const std::string& address_hex, RequestId request,
              uint64_t frames, uint64_t bytes) {
  absl::StatusOr<std::string> address = AddressFromHex(address_hex);
  if (!address.ok()) return Fail(address.status());
  auto conn = transport.Connect(*address, Deadline::In(kStepTimeout));
  if (!conn.ok()) return Fail(conn.status());
  for (uint64_t i = 0; frames == 0 || i < frames; ++i) {
    FrameInfo info{request, 0, static_cast<uint32_t>(i), bytes, {}};
    const std::vector<uint8_t> payload = MakePayload(info);
    absl::Status s = (*conn)->Send(info, {}, payload, Deadline::In(kStepTimeout));
    if (!s.ok()) return Fail(s);
    std::cout << "SENT " << i << std::endl;
  }
  std::cout << "DONE" << std::endl;
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  uint64_t request = 0, frames = 0, bytes = 0;
  if (args.size() == 4 && args[0] == "recv" && absl::SimpleAtoi(args[2], &request) &&
      absl::SimpleAtoi(args[3], &frames)) {
    auto transport = MakeTransportByName(args[1]);
    if (!transport.ok()) return Fail(transport.status());
    return RunReceiver(**transport, request, frames);
  }
  if (args.size() == 6 && args[0] == "send" && absl::SimpleAtoi(args[3], &request) &&
      absl::SimpleAtoi(args[4], &frames) && absl::SimpleAtoi(args[5], &bytes)) {
    auto transport = MakeTransportByName(args[1]);
    if (!transport.ok()) return Fail(transport.status());
    return RunSender(**transport, args[2], request, frames, bytes);
  }
  std::cerr << "usage: transport_peer recv KIND REQUEST FRAMES | "
               "send KIND ADDRESS_HEX REQUEST FRAMES BYTES\n";
  return 2;
}

}  // namespace
}  // namespace kvwire::transport::testing

int main(int argc, char** argv) { return kvwire::transport::testing::Main(argc, argv); }
