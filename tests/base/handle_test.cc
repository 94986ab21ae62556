#include "kvwire/base/handle.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvwire {
namespace {

std::vector<int>& Closed() {
  static std::vector<int> closed;
  return closed;
}

struct FdTraits {
  static constexpr int kNull = -1;
  static void Close(int fd) noexcept { Closed().push_back(fd); }
};
using Fd = UniqueHandle<int, FdTraits>;

TEST(UniqueHandle, ClosesExactlyOnceOnDestruction) {
  Closed().clear();
  { Fd fd(7); EXPECT_TRUE(fd); }
  EXPECT_EQ(Closed(), std::vector<int>{7});
}

TEST(UniqueHandle, MoveTransfersOwnership) {
  Closed().clear();
  {
    Fd a(3);
    Fd b(std::move(a));
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from state is specified.
    EXPECT_EQ(b.get(), 3);
    Fd c(4);
    c = std::move(b);  // Closes 4, takes 3.
    EXPECT_EQ(Closed(), std::vector<int>{4});
  }
  EXPECT_EQ(Closed(), (std::vector<int>{4, 3}));
}

TEST(UniqueHandle, ReleaseGivesUpOwnership) {
  Closed().clear();
  {
    Fd fd(9);
    EXPECT_EQ(fd.release(), 9);
    EXPECT_FALSE(fd);
  }
  EXPECT_TRUE(Closed().empty());
}

TEST(UniqueHandle, DefaultIsEmptyAndClosesNothing) {
  Closed().clear();
  { Fd fd; EXPECT_EQ(fd.get(), -1); }
  EXPECT_TRUE(Closed().empty());
}

}  // namespace
}  // namespace kvwire
