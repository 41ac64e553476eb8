// A parent's piece dispatch: the children's want bitfield, each piece sent about once, the table's bound.
#include "http/piece_dispatch.hpp"

#include <gtest/gtest.h>

#include <set>

namespace inferllama::http {
namespace {

using Want = PieceDispatch::Want;
constexpr auto kStart = PieceDispatch::Clock::time_point{} + std::chrono::hours(1);

Want wanting(std::size_t pieces, std::initializer_list<std::size_t> wanted, bool any = false) {
  Want want;
  want.pieces.assign(pieces, false);
  for (std::size_t piece : wanted) want.pieces[piece] = true;
  want.any = any;
  return want;
}

TEST(PieceDispatchParse, ReadsTheBitfieldMostSignificantBitFirst) {
  auto want = PieceDispatch::parse("a0", 3);  // 1010 0000: pieces 0 and 2
  ASSERT_TRUE(want);
  EXPECT_EQ(want->pieces, (std::vector<bool>{true, false, true}));
  EXPECT_FALSE(want->any);
  want = PieceDispatch::parse("FF01;any", 16);
  ASSERT_TRUE(want);
  EXPECT_TRUE(want->any);
  EXPECT_TRUE(want->pieces[0] && want->pieces[7] && !want->pieces[8] && want->pieces[15]);
}

TEST(PieceDispatchParse, RefusesWhatIsNotTheFilesBitfield) {
  EXPECT_FALSE(PieceDispatch::parse("a0", 9));      // 9 pieces take two bytes
  EXPECT_FALSE(PieceDispatch::parse("a0a0", 3));    // too long
  EXPECT_FALSE(PieceDispatch::parse("a1", 3));      // a bit past the last piece
  EXPECT_FALSE(PieceDispatch::parse("g0", 3));      // not hex
  EXPECT_FALSE(PieceDispatch::parse("a0;all", 3));  // unknown flag
  EXPECT_FALSE(PieceDispatch::parse("", 0));        // a file without pieces
  EXPECT_FALSE(PieceDispatch::parse("a0;any;x", 3));
}

TEST(PieceDispatch, SendsEveryPieceOnceBeforeAnyTwice) {
  PieceDispatch dispatch;
  const Want all = wanting(8, {0, 1, 2, 3, 4, 5, 6, 7});
  std::set<std::size_t> sent;
  for (int child = 0; child < 8; ++child) {
    auto piece = dispatch.pick("etag", all, kStart);
    ASSERT_TRUE(piece);
    EXPECT_TRUE(sent.insert(*piece).second) << "piece " << *piece << " sent twice";
  }
  // Every piece is on its way to some child: the next asks are told to get them from peers.
  EXPECT_FALSE(dispatch.pick("etag", all, kStart + std::chrono::seconds(1)));
}

TEST(PieceDispatch, OnlyWantedPiecesAreSent) {
  PieceDispatch dispatch;
  EXPECT_EQ(dispatch.pick("etag", wanting(4, {2}), kStart), 2u);
  EXPECT_FALSE(dispatch.pick("etag", wanting(4, {}), kStart));
}

TEST(PieceDispatch, APieceSentLongAgoIsSentAgain) {
  PieceDispatch dispatch;
  const Want one = wanting(2, {1});
  EXPECT_EQ(dispatch.pick("etag", one, kStart), 1u);
  EXPECT_FALSE(dispatch.pick("etag", one, kStart + PieceDispatch::kInFlight - std::chrono::seconds(1)));
  // The child it went to never shared it (gone, say): after the in-flight time, another child gets it.
  EXPECT_EQ(dispatch.pick("etag", one, kStart + PieceDispatch::kInFlight), 1u);
}

TEST(PieceDispatch, AChildThatGotNothingForAWhileTakesAnyWantedPiece) {
  PieceDispatch dispatch;
  EXPECT_EQ(dispatch.pick("etag", wanting(2, {0}), kStart), 0u);
  EXPECT_EQ(dispatch.pick("etag", wanting(2, {0}, true), kStart), 0u);
}

TEST(PieceDispatch, PrefersThePieceSentLongestAgo) {
  PieceDispatch dispatch;
  const Want both = wanting(2, {0, 1}, true);
  const auto first = dispatch.pick("etag", both, kStart);
  const auto second = dispatch.pick("etag", both, kStart + std::chrono::seconds(1));
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
  EXPECT_EQ(dispatch.pick("etag", both, kStart + std::chrono::seconds(2)), first);
}

TEST(PieceDispatch, FilesAreApartAndAnotherSizeIsRefused) {
  PieceDispatch dispatch;
  EXPECT_EQ(dispatch.pick("a", wanting(1, {0}), kStart), 0u);
  EXPECT_EQ(dispatch.pick("b", wanting(1, {0}), kStart), 0u);
  EXPECT_FALSE(dispatch.pick("a", wanting(2, {0, 1}), kStart));  // not the file the parent holds as "a"
}

TEST(PieceDispatch, TheTableForgetsTheLeastRecentlyAskedFilesPastItsBound) {
  PieceDispatch dispatch;
  const std::size_t half = PieceDispatch::kMaxPieces / 2;
  Want big;
  big.pieces.assign(half, false);
  big.pieces[0] = true;
  EXPECT_EQ(dispatch.pick("old", big, kStart), 0u);
  EXPECT_EQ(dispatch.pick("recent", big, kStart), 0u);
  EXPECT_FALSE(dispatch.pick("old", big, kStart));  // remembered: sent lately
  // A third file does not fit beside both: the least recently asked ("recent", since "old" was just asked)
  // is forgotten, and its piece 0 counts as never sent.
  EXPECT_EQ(dispatch.pick("third", big, kStart), 0u);
  EXPECT_FALSE(dispatch.pick("old", big, kStart));
  EXPECT_EQ(dispatch.pick("recent", big, kStart), 0u);
}

}  // namespace
}  // namespace inferllama::http
