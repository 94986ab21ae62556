#include "kvwire/base/ids.h"

#include <gtest/gtest.h>

#include <set>

namespace kvwire {
namespace {

TEST(Ids, RequestIdsAreNonZeroAndDistinct) {
  std::set<RequestId> seen;
  for (int i = 0; i < 1000; ++i) {
    const RequestId id = NewRequestId();
    EXPECT_NE(id, 0u);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(Ids, TokenHexRoundTrips) {
  const Token t = NewToken();
  const std::string hex = t.ToHex();
  EXPECT_EQ(hex.size(), 32u);
  Token back;
  ASSERT_TRUE(Token::FromHex(hex, &back));
  EXPECT_TRUE(TokensEqual(t, back));
  EXPECT_FALSE(TokensEqual(t, NewToken()));
}

TEST(Ids, TokenFromHexRejectsMalformed) {
  Token t;
  EXPECT_FALSE(Token::FromHex("", &t));
  EXPECT_FALSE(Token::FromHex(std::string(31, 'a'), &t));
  EXPECT_FALSE(Token::FromHex(std::string(33, 'a'), &t));
  EXPECT_FALSE(Token::FromHex(std::string(31, 'a') + "g", &t));
  EXPECT_TRUE(Token::FromHex(std::string(32, 'F'), &t));
  EXPECT_EQ(t.bytes[0], 0xff);
}

}  // namespace
}  // namespace kvwire
