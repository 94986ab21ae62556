// tests/control_plane/subprocess.h — runs a program as a child process with its stdout and
// stderr captured, for tests that drive the kvwire binaries. Every wait takes a deadline.
// Thread-compatible (one owner). Errors: INTERNAL when fork/pipe fail, DEADLINE_EXCEEDED.
#ifndef KVWIRE_TESTS_CONTROL_PLANE_SUBPROCESS_H_
#define KVWIRE_TESTS_CONTROL_PLANE_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwire/base/deadline.h"

namespace kvwire::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) with the given arguments.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv);
  ~Subprocess();  // kills the child if it still runs

  // Reads until `needle` appears in stdout (or stderr); returns everything read from it so far.
  absl::StatusOr<std::string> WaitForStdout(const std::string& needle, Deadline deadline);
  absl::StatusOr<std::string> WaitForStderr(const std::string& needle, Deadline deadline);
  // Waits for exit (reading both streams to EOF); returns the exit code, 128+signal if killed.
  absl::StatusOr<int> Wait(Deadline deadline);
  void Signal(int sig);

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  Subprocess() = default;
  // One poll round over the open pipes; false on deadline.
  bool Pump(Deadline deadline);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
  bool exited_ = false;
  int exit_code_ = -1;
};

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a program to completion.
absl::StatusOr<RunResult> RunToCompletion(const std::vector<std::string>& argv, Deadline deadline);

}  // namespace kvwire::testing

#endif  // KVWIRE_TESTS_CONTROL_PLANE_SUBPROCESS_H_
