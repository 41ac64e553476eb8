#include "cache/blob_writer.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

#include "cache/hashing.hpp"
#include "test_support.hpp"

namespace inferllama::cache {
namespace {

constexpr std::uint32_t kChunk = 64 * 1024;

// Bytes that do not repeat from one chunk to the next, so that each chunk is stored on its own.
std::vector<std::uint8_t> pattern(std::size_t n, unsigned seed = 1) {
  std::mt19937 random(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& byte : v) byte = static_cast<std::uint8_t>(random());
  return v;
}

std::string git_blob_id(std::span<const std::uint8_t> bytes) {
  Sha1Stream stream;
  start_git_blob(stream, bytes.size());
  stream.update(bytes);
  return stream.finish().hex();
}

std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class BlobWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("blob-writer");
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
  }
  void TearDown() override {
    index_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Writes `data` in slices cycling through `slices`, then stores it as an LFS file at `path`.
  BlobEntry upload(const std::string& key, std::span<const std::uint8_t> data, const std::string& path,
                   std::initializer_list<std::size_t> slices = {kChunk}) {
    BlobWriter writer(*store_, kChunk, key, data.size());
    for (auto slice = slices.begin(); writer.written() < data.size();) {
      writer.write(data.subspan(writer.written(), std::min(*slice, data.size() - writer.written())));
      if (++slice == slices.end()) slice = slices.begin();
    }
    return writer.store(*index_, sha256(data).hex(), true, {{repo_, commit_, path}}, BlobScope{false, {repo_}});
  }

  // The blob as a download of the same bytes stores it.
  void expect_cache_hashing(const BlobEntry& blob, std::span<const std::uint8_t> data) {
    EXPECT_EQ(blob.size, data.size());
    EXPECT_EQ(blob.chunk_size, kChunk);
    ASSERT_EQ(blob.chunks.size(), (data.size() + kChunk - 1) / kChunk);
    std::vector<Sha256> piece_layer;
    for (std::size_t i = 0; i < blob.chunks.size(); ++i) {
      const auto bytes = data.subspan(i * kChunk, std::min<std::size_t>(kChunk, data.size() - i * kChunk));
      const ChunkHashes expected = hash_chunk(bytes, kChunk);
      EXPECT_EQ(blob.chunks[i].id, expected.root) << "chunk " << i;
      EXPECT_EQ(blob.chunks[i].piece_sha1, expected.piece_sha1) << "chunk " << i;
      EXPECT_EQ(blob.chunks[i].size, bytes.size()) << "chunk " << i;
      EXPECT_EQ(read_file(store_->chunk_path(expected.root)), std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
      if (i + 1 == blob.chunks.size()) {
        EXPECT_EQ(blob.last_padded_sha1, expected.padded_sha1);
      }
      piece_layer.push_back(expected.root);
    }
    if (blob.chunks.size() == 1) {
      EXPECT_EQ(blob.v2_root, hash_chunk(data, kChunk).file_root);
    } else {
      EXPECT_EQ(blob.v2_root, piece_layer_root(piece_layer, kChunk));
    }
  }

  std::size_t stored_chunk_files() {
    std::size_t n = 0;
    store_->for_each_chunk([&](const Sha256&) { ++n; });
    return n;
  }
  bool staging_empty() { return std::filesystem::is_empty(dir_ / "staging"); }

  std::filesystem::path dir_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  RepoId repo_{RepoType::model, "acme/hosted"};
  std::string commit_ = std::string(40, 'a');
};

TEST_F(BlobWriterTest, StoresChunksAsTheCacheHashesThem) {
  const auto data = pattern(3 * kChunk + 5000);
  // Slices that straddle chunk and merkle block boundaries in every way.
  const BlobEntry blob = upload("u1", data, "weights.bin", {1, 16383, 70001, 3, 65536, 4099});
  expect_cache_hashing(blob, data);
  EXPECT_EQ(blob.etag, sha256(data).hex());
  EXPECT_TRUE(blob.lfs);

  const auto stored = index_->get_blob(blob.etag);
  ASSERT_TRUE(stored);
  expect_cache_hashing(*stored, data);
  const auto file = index_->get_file(repo_, commit_, "weights.bin");
  ASSERT_TRUE(file);
  EXPECT_EQ(file->etag, blob.etag);
  EXPECT_EQ(file->size, data.size());
  EXPECT_TRUE(index_->blob_serves(blob.etag, repo_));
  EXPECT_FALSE(index_->blob_serves(blob.etag, RepoId{RepoType::model, "acme/other"}));
  for (const auto& chunk : blob.chunks) EXPECT_EQ(index_->chunk_refcount(chunk.id), 1u);
  EXPECT_TRUE(staging_empty());
}

TEST_F(BlobWriterTest, AnUploadIsNamedByItsSha256AndARegularFileByItsGitBlobId) {
  const auto data = pattern(2 * kChunk + 17);
  BlobWriter writer(*store_, kChunk, "u1", data.size());
  writer.write(std::span(data).first(100));
  writer.write(std::span(data).subspan(100));
  const auto& digests = writer.finish();
  EXPECT_EQ(digests.sha256, sha256(data));
  EXPECT_EQ(digests.size, data.size());
  // An upload is an LFS object: stored under any other name it is refused.
  EXPECT_THROW(writer.store(*index_, git_blob_id(data), false, {}, BlobScope{true, {}}), std::invalid_argument);

  // A regular file is stored under its git blob id.
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  const BlobEntry blob = store_bytes(*store_, *index_, kChunk, text, git_blob_id(data), false,
                                     {{repo_, commit_, "a.txt"}}, BlobScope{true, {}});
  EXPECT_FALSE(blob.lfs);
  expect_cache_hashing(blob, data);
  EXPECT_TRUE(index_->blob_serves(blob.etag, RepoId{RepoType::model, "anyone/else"}));
}

TEST_F(BlobWriterTest, EmptyFileHasNoChunksAndNoV2Root) {
  BlobWriter writer(*store_, kChunk, "empty", 0);
  EXPECT_EQ(writer.finish().sha256, sha256(std::string_view()));
  const BlobEntry blob = writer.store(*index_, sha256(std::string_view()).hex(), true, {{repo_, commit_, "empty.txt"}},
                                      BlobScope{true, {}});
  EXPECT_EQ(blob.size, 0u);
  EXPECT_TRUE(blob.chunks.empty());
  EXPECT_FALSE(blob.v2_root);
  const auto stored = index_->get_blob(blob.etag);
  ASSERT_TRUE(stored);
  EXPECT_TRUE(stored->chunks.empty());
  EXPECT_TRUE(index_->get_file(repo_, commit_, "empty.txt"));
  EXPECT_TRUE(staging_empty());
}

TEST_F(BlobWriterTest, FileOfExactlyOneChunk) {
  const auto data = pattern(kChunk);
  const BlobEntry blob = upload("one", data, "one.bin", {1000});
  ASSERT_EQ(blob.chunks.size(), 1u);
  expect_cache_hashing(blob, data);
  EXPECT_EQ(blob.last_padded_sha1, blob.chunks[0].piece_sha1);  // a full piece needs no padding
}

TEST_F(BlobWriterTest, AbandonedUploadLeavesNothing) {
  const auto data = pattern(2 * kChunk + 1);
  {
    BlobWriter writer(*store_, kChunk, "cut", data.size());
    writer.write(std::span(data).first(kChunk + 10));
    EXPECT_FALSE(staging_empty());
    writer.abandon();
    EXPECT_TRUE(staging_empty());
    EXPECT_THROW(writer.write(std::span(data).first(1)), std::logic_error);
  }
  {
    BlobWriter writer(*store_, kChunk, "dropped", data.size());
    writer.write(data);
    writer.finish();
  }  // destroyed without store()
  EXPECT_TRUE(staging_empty());
  EXPECT_FALSE(index_->get_blob(sha256(data).hex()));
  EXPECT_EQ(stored_chunk_files(), 0u);
}

TEST_F(BlobWriterTest, LeftoverStagingOfTheSameKeyIsWiped) {
  const auto data = pattern(kChunk + 3);
  const auto leftover = store_->staging_dir("upload-again");
  std::ofstream(leftover / "0") << "bytes of a cut attempt";
  std::ofstream(leftover / "7") << "more";
  const BlobEntry blob = upload("again", data, "a.bin", {333});
  expect_cache_hashing(blob, data);
  EXPECT_TRUE(staging_empty());
}

TEST_F(BlobWriterTest, StoringAStoredBlobAgainKeepsOneSetOfChunks) {
  const auto data = pattern(2 * kChunk + 99);
  const BlobEntry first = upload("u1", data, "a.bin");
  const BlobEntry second = upload("u2", data, "copy/a.bin", {12345});
  EXPECT_EQ(second.chunks.size(), first.chunks.size());
  EXPECT_EQ(second.v2_root, first.v2_root);
  EXPECT_EQ(stored_chunk_files(), first.chunks.size());
  for (const auto& chunk : first.chunks) EXPECT_EQ(index_->chunk_refcount(chunk.id), 1u);
  EXPECT_TRUE(index_->get_file(repo_, commit_, "a.bin"));
  EXPECT_TRUE(index_->get_file(repo_, commit_, "copy/a.bin"));
  EXPECT_TRUE(staging_empty());

  // Another file that begins with the same chunk adds a reference to it, not a copy.
  auto other = data;
  other.back() ^= 0xff;
  const BlobEntry third = upload("u3", other, "b.bin");
  EXPECT_EQ(third.chunks[0].id, first.chunks[0].id);
  EXPECT_EQ(index_->chunk_refcount(first.chunks[0].id), 2u);
  EXPECT_EQ(index_->chunk_refcount(third.chunks.back().id), 1u);
  EXPECT_EQ(stored_chunk_files(), first.chunks.size() + 1);
}

TEST_F(BlobWriterTest, WritesBeyondTheDeclaredSizeAreRefused) {
  const auto data = pattern(kChunk + 1);
  BlobWriter writer(*store_, kChunk, "long", 10);
  EXPECT_THROW(writer.write(std::span(data).first(11)), std::length_error);
  EXPECT_EQ(writer.written(), 0u);
  writer.write(std::span(data).first(4));
  EXPECT_THROW(writer.finish(), std::logic_error);  // 4 of 10 bytes
  writer.write(std::span(data).subspan(4, 6));
  EXPECT_THROW(writer.write(std::span(data).first(1)), std::length_error);
  EXPECT_EQ(writer.written(), 10u);
  EXPECT_EQ(writer.finish().sha256, sha256(std::span(data).first(10)));
}

TEST_F(BlobWriterTest, BytesThatDoNotHashToTheEtagAreNotStored) {
  const auto data = pattern(kChunk + 50);
  BlobWriter writer(*store_, kChunk, "liar", data.size());
  writer.write(data);
  const std::string claimed = sha256(std::string_view("something else")).hex();
  EXPECT_THROW(writer.store(*index_, claimed, true, {{repo_, commit_, "x.bin"}}, BlobScope{true, {}}),
               std::invalid_argument);
  // Nor under its git blob id as an LFS file: an LFS etag is the SHA-256.
  EXPECT_THROW(writer.store(*index_, git_blob_id(data), true, {}, BlobScope{true, {}}), std::invalid_argument);
  EXPECT_FALSE(index_->get_blob(claimed));
  EXPECT_FALSE(index_->get_file(repo_, commit_, "x.bin"));
  EXPECT_EQ(stored_chunk_files(), 0u);
}

TEST_F(BlobWriterTest, KeysAndChunkSizesThatCannotBeStagedAreRefused) {
  EXPECT_THROW(BlobWriter(*store_, kChunk, "../escape", 1), std::invalid_argument);
  EXPECT_THROW(BlobWriter(*store_, kChunk, "", 1), std::invalid_argument);
  EXPECT_THROW(BlobWriter(*store_, 3 * kChunk, "u1", 1), std::invalid_argument);
  EXPECT_THROW(BlobWriter(*store_, 4096, "u1", 1), std::invalid_argument);
  EXPECT_TRUE(staging_empty());
}

TEST_F(BlobWriterTest, StoreBytesStoresAnInlineFileAsAStreamWould) {
  const auto data = pattern(kChunk + 777);
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  const BlobEntry blob = store_bytes(*store_, *index_, kChunk, text, git_blob_id(data), false,
                                     {{repo_, commit_, "inline.txt"}}, BlobScope{true, {}});
  expect_cache_hashing(blob, data);
  EXPECT_EQ(blob.etag, git_blob_id(data));
  EXPECT_TRUE(index_->get_file(repo_, commit_, "inline.txt"));
  EXPECT_TRUE(staging_empty());
}

class MultipartTest : public BlobWriterTest {
 protected:
  void put_part(MultipartStaging& staging, std::size_t number, std::span<const std::uint8_t> bytes) {
    auto part = staging.begin_part(number);
    // In two writes, as a body arrives.
    part.write(bytes.first(bytes.size() / 2));
    part.write(bytes.subspan(bytes.size() / 2));
    EXPECT_EQ(part.written(), bytes.size());
    part.commit();
  }
};

TEST_F(MultipartTest, AssembledPartsStoreTheSameBlobAsOneStream) {
  const auto data = pattern(5 * kChunk + 1234);
  MultipartStaging staging(*store_, "oid-1");
  // Parts arrive out of order; each but the last is whole chunks.
  put_part(staging, 3, std::span(data).subspan(4 * kChunk));
  put_part(staging, 1, std::span(data).first(2 * kChunk));
  put_part(staging, 2, std::span(data).subspan(2 * kChunk, 2 * kChunk));
  EXPECT_TRUE(staging.has_part(2));
  EXPECT_FALSE(staging.has_part(4));
  EXPECT_EQ(staging.part_size(3), kChunk + 1234u);

  BlobWriter writer(*store_, kChunk, "oid-1", data.size());
  staging.assemble(3, writer);
  EXPECT_EQ(writer.finish().sha256, sha256(data));
  const BlobEntry blob = writer.store(*index_, sha256(data).hex(), true, {{repo_, commit_, "big.bin"}}, {true, {}});
  expect_cache_hashing(blob, data);
  staging.remove();
  EXPECT_TRUE(staging_empty());
}

TEST_F(MultipartTest, ARetriedPartReplacesTheOldOne) {
  const auto data = pattern(2 * kChunk + 10);
  MultipartStaging staging(*store_, "oid-2");
  put_part(staging, 1, pattern(kChunk, 9));  // bytes the client then sent again
  put_part(staging, 2, std::span(data).subspan(kChunk));
  put_part(staging, 1, std::span(data).first(kChunk));
  EXPECT_EQ(staging.part_size(1), kChunk);

  BlobWriter writer(*store_, kChunk, "oid-2", data.size());
  staging.assemble(2, writer);
  EXPECT_EQ(writer.finish().sha256, sha256(data));
}

TEST_F(MultipartTest, ACutPutLeavesNoPart) {
  MultipartStaging staging(*store_, "oid-3");
  const auto first = pattern(kChunk, 1);
  put_part(staging, 1, first);
  {
    auto part = staging.begin_part(1);
    part.write(pattern(100, 2));
  }  // the connection broke before the end: never committed
  {
    auto part = staging.begin_part(2);
    part.write(pattern(100, 3));
  }
  EXPECT_FALSE(staging.has_part(2));
  EXPECT_EQ(staging.part_size(1), kChunk);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir_ / "staging" / "multipart-oid-3")) {
    ++files;
  }
  EXPECT_EQ(files, 1u);

  BlobWriter writer(*store_, kChunk, "oid-3", 2 * kChunk);
  EXPECT_THROW(staging.assemble(2, writer), std::system_error);
}

TEST_F(MultipartTest, PartsOutliveTheNode) {
  const auto data = pattern(kChunk + 5);
  {
    MultipartStaging staging(*store_, "oid-4");
    put_part(staging, 1, std::span(data).first(kChunk));
  }
  store_ = std::make_unique<ChunkStore>(dir_);  // the node started again
  MultipartStaging staging(*store_, "oid-4");
  EXPECT_TRUE(staging.has_part(1));
  put_part(staging, 2, std::span(data).subspan(kChunk));
  BlobWriter writer(*store_, kChunk, "oid-4", data.size());
  staging.assemble(2, writer);
  expect_cache_hashing(writer.store(*index_, sha256(data).hex(), true, {}, {true, {}}), data);
}

}  // namespace
}  // namespace inferllama::cache
