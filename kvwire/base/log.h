// kvwire/base/log.h — leveled logging to stderr.
//
//   KVWIRE_LOG(INFO) << "listening on " << addr;
//
// Levels: DEBUG < INFO < WARNING < ERROR. The threshold comes from the environment variable
// KVWIRE_LOG_LEVEL (debug|info|warning|error, default info) or SetLogLevel(). A message below the
// threshold costs one comparison; its stream operands are not evaluated. Thread-safe: each line is
// written with one call so lines from different threads never interleave.
#ifndef KVWIRE_BASE_LOG_H_
#define KVWIRE_BASE_LOG_H_

#include <sstream>
#include "absl/strings/string_view.h"

namespace kvwire {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Current threshold; messages below it are dropped.
LogLevel GetLogLevel();
void SetLogLevel(LogLevel level);
// Parses "debug", "info", "warning"/"warn", "error" (case-insensitive). Returns false otherwise.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

namespace log_internal {

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Lets the macro be used as a statement: `cond ? (void)0 : Voidify() & stream`.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace log_internal
}  // namespace kvwire

#define KVWIRE_LOG_LEVEL_DEBUG ::kvwire::LogLevel::kDebug
#define KVWIRE_LOG_LEVEL_INFO ::kvwire::LogLevel::kInfo
#define KVWIRE_LOG_LEVEL_WARNING ::kvwire::LogLevel::kWarning
#define KVWIRE_LOG_LEVEL_ERROR ::kvwire::LogLevel::kError

#define KVWIRE_LOG(severity)                                                        \
  (KVWIRE_LOG_LEVEL_##severity < ::kvwire::GetLogLevel())                           \
      ? (void)0                                                                     \
      : ::kvwire::log_internal::Voidify() &                                         \
            ::kvwire::log_internal::LogMessage(KVWIRE_LOG_LEVEL_##severity, __FILE__, \
                                               __LINE__)                            \
                .stream()

#endif  // KVWIRE_BASE_LOG_H_
