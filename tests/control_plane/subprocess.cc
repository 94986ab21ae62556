#include "tests/control_plane/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace kvwire::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    return absl::InternalError("pipe failed");
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  std::unique_ptr<Subprocess> p(new Subprocess());
  p->pid_ = pid;
  p->out_fd_ = out[0];
  p->err_fd_ = err[0];
  return p;
}

Subprocess::~Subprocess() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
}

void Subprocess::Signal(int sig) {
  if (!exited_) ::kill(pid_, sig);
}

bool Subprocess::Pump(Deadline deadline) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  const int n = ::poll(fds, 2, deadline.RemainingMillisForPoll());
  if (n < 0 && errno == EINTR) return true;
  if (n <= 0) return false;
  int* fd_of[2] = {&out_fd_, &err_fd_};
  std::string* sink[2] = {&out_, &err_};
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0 || fds[i].revents == 0) continue;
    char buffer[4096];
    const ssize_t got = ::read(fds[i].fd, buffer, sizeof(buffer));
    if (got > 0) {
      sink[i]->append(buffer, static_cast<size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      ::close(*fd_of[i]);
      *fd_of[i] = -1;
    }
  }
  return true;
}

absl::StatusOr<std::string> Subprocess::WaitForStdout(const std::string& needle,
                                                      Deadline deadline) {
  while (out_.find(needle) == std::string::npos) {
    if ((out_fd_ < 0 && err_fd_ < 0) || !Pump(deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("no '", needle, "' on stdout; stderr: ", err_));
    }
  }
  return out_;
}

absl::StatusOr<std::string> Subprocess::WaitForStderr(const std::string& needle,
                                                      Deadline deadline) {
  const size_t start = err_.size();
  while (err_.find(needle, start) == std::string::npos) {
    if ((out_fd_ < 0 && err_fd_ < 0) || !Pump(deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("no '", needle, "' on stderr: ", err_));
    }
  }
  return err_;
}

absl::StatusOr<int> Subprocess::Wait(Deadline deadline) {
  while (out_fd_ >= 0 || err_fd_ >= 0) {
    if (!Pump(deadline)) return absl::DeadlineExceededError("child did not exit in time");
  }
  int status = 0;
  // Both pipes closed: the child has exited or is about to; waitpid returns promptly.
  if (::waitpid(pid_, &status, 0) != pid_) return absl::InternalError("waitpid failed");
  exited_ = true;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

absl::StatusOr<RunResult> RunToCompletion(const std::vector<std::string>& argv, Deadline deadline) {
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(argv);
  if (!p.ok()) return p.status();
  absl::StatusOr<int> code = (*p)->Wait(deadline);
  if (!code.ok()) return code.status();
  return RunResult{*code, (*p)->out(), (*p)->err()};
}

}  // namespace kvwire::testing
