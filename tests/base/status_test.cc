#include "kvwire/base/status.h"

#include <gtest/gtest.h>

namespace kvwire {
namespace {

absl::Status FailsWith(absl::StatusCode code) { return absl::Status(code, "boom"); }

absl::Status ReturnIfErrorPropagates(bool fail, int* reached) {
  KVWIRE_RETURN_IF_ERROR(fail ? FailsWith(absl::StatusCode::kDataLoss) : absl::OkStatus());
  ++*reached;
  return absl::OkStatus();
}

absl::StatusOr<int> MaybeInt(bool fail) {
  if (fail) return absl::InvalidArgumentError("no int");
  return 42;
}

absl::StatusOr<int> AddOne(bool fail) {
  KVWIRE_ASSIGN_OR_RETURN(int v, MaybeInt(fail));
  return v + 1;
}

TEST(StatusMacros, ReturnIfErrorStopsAtFirstError) {
  int reached = 0;
  EXPECT_EQ(ReturnIfErrorPropagates(true, &reached).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(reached, 0);
  EXPECT_TRUE(ReturnIfErrorPropagates(false, &reached).ok());
  EXPECT_EQ(reached, 1);
}

TEST(StatusMacros, AssignOrReturnMovesValueOrStatus) {
  EXPECT_EQ(*AddOne(false), 43);
  absl::StatusOr<int> bad = AddOne(true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "no int");
}

TEST(Annotate, PrependsContextAndKeepsCode) {
  const absl::Status s = Annotate(absl::DataLossError("bad hash"), "layer 3");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "layer 3: bad hash");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
}

}  // namespace
}  // namespace kvwire
