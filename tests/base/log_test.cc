#include "kvwire/base/log.h"

#include <gtest/gtest.h>

namespace kvwire {
namespace {

TEST(Log, ParsesLevelsCaseInsensitively) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(ParseLogLevel("DEBUG", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("warn", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_TRUE(ParseLogLevel("Error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
  EXPECT_EQ(level, LogLevel::kError);  // Unchanged on failure.
}

int Touch(int* counter) { return ++*counter; }

TEST(Log, MessagesBelowThresholdDoNotEvaluateOperands) {
  const LogLevel saved = GetLogLevel();
  SetLogLevel(LogLevel::kError);
  int evaluated = 0;
  KVWIRE_LOG(INFO) << Touch(&evaluated);
  EXPECT_EQ(evaluated, 0);
  testing::internal::CaptureStderr();
  KVWIRE_LOG(ERROR) << "visible " << Touch(&evaluated);
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(evaluated, 1);
  EXPECT_NE(out.find("visible 1"), std::string::npos);
  EXPECT_EQ(out[0], 'E');
  EXPECT_EQ(out.back(), '\n');
  SetLogLevel(saved);
}

}  // namespace
}  // namespace kvwire
