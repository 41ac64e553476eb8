#include "cache/hashing.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace inferllama::cache {
namespace {

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::vector<std::uint8_t> pattern(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i % 251);
  return v;
}

TEST(Hashing, KnownVectors) {
  EXPECT_EQ(sha256(bytes("abc")).hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha1(bytes("abc")).hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha256(std::string_view("abc")), sha256(bytes("abc")));
  EXPECT_EQ(sha1(std::string_view("abc")), sha1(bytes("abc")));
  EXPECT_EQ(sha256(bytes("")).hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Hashing, StreamsAreReusableAfterFinish) {
  Sha256Stream s;
  s.update(std::string_view("ab"));
  s.update(std::string_view("c"));
  EXPECT_EQ(s.finish().hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  s.update(std::string_view("abc"));
  EXPECT_EQ(s.finish().hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Hashing, GitBlobNamesMatchGit) {
  Sha1Stream s;
  start_git_blob(s, 12);
  s.update(std::string_view("hello world\n"));
  EXPECT_EQ(s.finish().hex(), "3b18e512dba79e4c8300dd08aeb37f8e728b8dad");
  start_git_blob(s, 0);
  EXPECT_EQ(s.finish().hex(), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}

TEST(Hashing, PieceRootPadsWithZeroLeaves) {
  // Computed independently (Python hashlib): leaves of 16 KiB blocks, zero leaf padding to 64 KiB.
  auto data = pattern(40000);
  EXPECT_EQ(piece_root(data, 64 * 1024).hex(), "ab671631a9fa97a1fdac651fff6c68773b9acf0735b9c7f6ecdd54cbf1bf5dc2");
  auto block = pattern(kMerkleBlock);
  EXPECT_EQ(piece_root(block, kMerkleBlock), sha256(block));
}

TEST(Hashing, ChunkHashesPadTheLastPiece) {
  auto data = pattern(40000);
  auto h = hash_chunk(data, 64 * 1024);
  EXPECT_EQ(h.piece_sha1.hex(), "a42317f69804ad9363a0e993c601e2a1f02fb990");
  EXPECT_EQ(h.padded_sha1.hex(), "8fc6be81aac3968a1330f0503263c569641d6f0a");
  auto full = pattern(64 * 1024);
  auto f = hash_chunk(full, 64 * 1024);
  EXPECT_EQ(f.piece_sha1, f.padded_sha1);
  EXPECT_EQ(f.piece_sha1, sha1(full));
}

Sha256 pair_hash(const Sha256& left, const Sha256& right) {
  std::vector<std::uint8_t> both(left.bytes.begin(), left.bytes.end());
  both.insert(both.end(), right.bytes.begin(), right.bytes.end());
  return sha256(both);
}

TEST(Hashing, FileRootIsTheNaturalWidthTree) {
  // 40000 bytes: three blocks, padded with one zero leaf to four, which is also a full 64 KiB piece.
  auto data = pattern(40000);
  auto leaf = [&](std::size_t i) {
    return sha256(std::span<const std::uint8_t>(data).subspan(i * kMerkleBlock,
                                                              std::min(kMerkleBlock, data.size() - i * kMerkleBlock)));
  };
  const Sha256 zero;
  const Sha256 four = pair_hash(pair_hash(leaf(0), leaf(1)), pair_hash(leaf(2), zero));
  EXPECT_EQ(hash_chunk(data, 64 * 1024).file_root, four);
  EXPECT_EQ(hash_chunk(data, 64 * 1024).root, four);
  // In a 128 KiB piece the chunk's address grows by an all-zero subtree; the file's root does not.
  const Sha256 zero_four = pair_hash(pair_hash(zero, zero), pair_hash(zero, zero));
  EXPECT_EQ(hash_chunk(data, 128 * 1024).root, pair_hash(four, zero_four));
  EXPECT_EQ(hash_chunk(data, 128 * 1024).file_root, four);
  // One block: the file's root is the block's hash.
  auto small = pattern(5000);
  EXPECT_EQ(hash_chunk(small, 64 * 1024).file_root, sha256(small));
  EXPECT_EQ(hash_chunk(small, 64 * 1024).root, pair_hash(pair_hash(sha256(small), zero), pair_hash(zero, zero)));
}

TEST(Hashing, PieceLayerRootPadsWithZeroPieces) {
  const std::vector<Sha256> layer = {sha256(pattern(1)), sha256(pattern(2)), sha256(pattern(3))};
  const Sha256 zero;
  const Sha256 zero_piece = pair_hash(pair_hash(zero, zero), pair_hash(zero, zero));  // 64 KiB: four leaves
  EXPECT_EQ(piece_layer_root(layer, 64 * 1024),
            pair_hash(pair_hash(layer[0], layer[1]), pair_hash(layer[2], zero_piece)));
  EXPECT_EQ(piece_layer_root(std::span(layer).first(2), 64 * 1024), pair_hash(layer[0], layer[1]));
}

TEST(Digest, HexRoundTrip) {
  auto d = Sha256::from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_FALSE(Sha256::from_hex("zz"));
  EXPECT_FALSE(Sha1::from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

TEST(Digest, HexOfAnyBytes) {
  EXPECT_EQ(hex(std::string_view("\x00\x7f\xff", 3)), "007fff");
  EXPECT_EQ(unhex("007FfF"), std::string("\x00\x7f\xff", 3));
  EXPECT_EQ(unhex(""), "");
  EXPECT_FALSE(unhex("abc"));  // odd
  EXPECT_FALSE(unhex("0g"));
  EXPECT_EQ(sha256(std::string_view("abc")).hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace inferllama::cache
