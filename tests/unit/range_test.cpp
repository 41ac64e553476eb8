#include "http/range.hpp"

#include <gtest/gtest.h>

namespace inferllama::http {
namespace {
using Kind = ByteRange::Kind;

TEST(Range, WholeFileWithoutOrWithUnsupportedHeader) {
  EXPECT_EQ(parse_range("", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("items=0-1", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("bytes=0-1,5-6", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("bytes=abc", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("bytes=5-2", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("bytes=-", 100).kind, Kind::whole);
}

TEST(Range, ClosedAndOpenRanges) {
  auto r = parse_range("bytes=0-0", 100);
  EXPECT_EQ(r.kind, Kind::partial);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.length(), 1u);
  r = parse_range("bytes=10-", 100);
  EXPECT_EQ(r.first, 10u);
  EXPECT_EQ(r.last, 99u);
  r = parse_range("bytes=90-1000", 100);  // clamped to the end
  EXPECT_EQ(r.last, 99u);
}

TEST(Range, SuffixRanges) {
  auto r = parse_range("bytes=-10", 100);
  EXPECT_EQ(r.kind, Kind::partial);
  EXPECT_EQ(r.first, 90u);
  EXPECT_EQ(r.last, 99u);
  r = parse_range("bytes=-1000", 100);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(parse_range("bytes=-0", 100).kind, Kind::unsatisfiable);
}

TEST(Range, Unsatisfiable) {
  EXPECT_EQ(parse_range("bytes=100-", 100).kind, Kind::unsatisfiable);
  EXPECT_EQ(parse_range("bytes=0-0", 0).kind, Kind::unsatisfiable);
  EXPECT_EQ(parse_range("bytes=-5", 0).kind, Kind::unsatisfiable);
}

TEST(Range, HugeNumbersDoNotOverflow) {
  EXPECT_EQ(parse_range("bytes=99999999999999999999999-", 100).kind, Kind::whole);
  EXPECT_EQ(parse_range("bytes=18446744073709551615-", 100).kind, Kind::unsatisfiable);
}

}  // namespace
}  // namespace inferllama::http
