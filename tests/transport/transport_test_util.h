// Helpers shared by the transport tests and the cross-process peer helper: deterministic payload
// patterns, the transports under test, and a child process with a line-oriented stdout.
#ifndef KVWIRE_TESTS_TRANSPORT_TRANSPORT_TEST_UTIL_H_
#define KVWIRE_TESTS_TRANSPORT_TRANSPORT_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwire/base/deadline.h"
#include "kvwire/transport/transport.h"

namespace kvwire::transport::testing {

// Byte `i` of the payload of frame (request, stream, sequence).
inline uint8_t PatternByte(const FrameInfo& info, uint64_t i) {
  return static_cast<uint8_t>(i * 131 + info.sequence * 7 + info.stream * 13 + info.request_id);
}
std::vector<uint8_t> MakePayload(const FrameInfo& info);
// Index of the first wrong byte, or -1 when `bytes` matches the pattern of `info`.
int64_t FirstMismatch(const FrameInfo& info, absl::Span<const uint8_t> bytes);

// "loopback", "tcp" or "shm" -> a fresh transport of that kind.
absl::StatusOr<std::unique_ptr<Transport>> MakeTransportByName(const std::string& name);

// A child process whose stdout is read line by line with deadlines. The destructor SIGKILLs and
// reaps it if it is still running.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv);
  ~ChildProcess();
  absl::StatusOr<std::string> ReadLine(Deadline deadline);
  // The next line starting with `prefix`, without the prefix; other lines (UCX logs to stdout)
  // are skipped.
  absl::StatusOr<std::string> ReadTagged(absl::string_view prefix, Deadline deadline);
  // SIGKILLs the child and reaps it (so it is not left as a zombie that still looks alive).
  void Kill();
  // Sends `signal` (e.g. SIGSTOP, SIGCONT) without reaping; a no-op once the child is reaped.
  void Signal(int signal);
  // Exit code after waiting (bounded) for the child to end.
  absl::StatusOr<int> Wait(Deadline deadline);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffered_;
};

}  // namespace kvwire::transport::testing

#endif  // KVWIRE_TESTS_TRANSPORT_TRANSPORT_TEST_UTIL_H_
