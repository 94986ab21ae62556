#include "tests/transport/transport_test_util.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvwire/config.h"

#ifndef KVWIRE_TRANSPORT_TEST_LOOPBACK_ONLY
#include "kvwire/transport/ucx/ucx_transport.h"
#endif

namespace kvwire::transport::testing {

std::vector<uint8_t> MakePayload(const FrameInfo& info) {
  std::vector<uint8_t> bytes(info.payload_bytes);
  for (uint64_t i = 0; i < bytes.size(); ++i) bytes[i] = PatternByte(info, i);
  return bytes;
}

int64_t FirstMismatch(const FrameInfo& info, absl::Span<const uint8_t> bytes) {
  if (bytes.size() != info.payload_bytes) return 0;
  for (uint64_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != PatternByte(info, i)) return static_cast<int64_t>(i);
  }
  return -1;
}

absl::StatusOr<std::unique_ptr<Transport>> MakeTransportByName(const std::string& name) {
  if (name == "loopback") return MakeLoopbackTransport();
#ifndef KVWIRE_TRANSPORT_TEST_LOOPBACK_ONLY
  UcxOptions options;
  if (name == "tcp") {
    options.transports = "tcp";
    return MakeUcxTransport(options);
  }
  if (name == "shm") {
    options.transports = "posix,cma,self";
    options.drive_window = absl::Microseconds(100);  // Exercises waiter-driven progress too.
    return MakeUcxTransport(options);
  }
#endif
  return absl::InvalidArgumentError(absl::StrCat("unknown transport '", name, "'"));
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  child->out_fd_ = fds[0];
  return child;
}

ChildProcess::~ChildProcess() {
  Kill();
  if (out_fd_ >= 0) close(out_fd_);
}

void ChildProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

absl::StatusOr<std::string> ChildProcess::ReadLine(Deadline deadline) {
  while (true) {
    if (size_t nl = buffered_.find('\n'); nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    pollfd p{out_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, deadline.RemainingMillisForPoll());
    if (ready == 0) return absl::DeadlineExceededError("child printed no line in time");
    if (ready < 0 && errno != EINTR) return absl::InternalError(std::strerror(errno));
    if (ready < 0) continue;
    char buf[4096];
    const ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n <= 0) return absl::UnavailableError("child closed its stdout");
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::string> ChildProcess::ReadTagged(absl::string_view prefix, Deadline deadline) {
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(deadline);
    if (!line.ok()) return line.status();
    if (absl::StartsWith(*line, prefix)) return line->substr(prefix.size());
  }
}

absl::StatusOr<int> ChildProcess::Wait(Deadline deadline) {
  if (pid_ <= 0) return absl::FailedPreconditionError("child already reaped");
  // The child's exit closes the pipe: read until end of file, then reap.
  char buf[4096];
  while (true) {
    pollfd p{out_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, deadline.RemainingMillisForPoll());
    if (ready == 0) return absl::DeadlineExceededError("child did not exit in time");
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || read(out_fd_, buf, sizeof(buf)) <= 0) break;
  }
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace kvwire::transport::testing
