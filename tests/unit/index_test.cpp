#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "hashing.hpp"
#include "inferllama/index.hpp"

namespace inferllama {
namespace {

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("inferllama-index-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

BlobEntry make_blob(const std::string& etag, std::initializer_list<std::string> chunk_seeds) {
  BlobEntry b;
  b.etag = etag;
  b.lfs = true;
  b.chunk_size = 1024;
  for (const auto& seed : chunk_seeds) {
    ChunkRef c;
    c.id =
        cache::sha256(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(seed.data()), seed.size()));
    c.size = 1024;
    b.chunks.push_back(c);
    b.size += 1024;
  }
  return b;
}

TEST_F(IndexTest, CommitMakesFilesVisibleAndCountsChunkReferences) {
  RepoId repo{RepoType::model, "acme/x"};
  std::string commit(40, 'a');
  {
    auto index = open_rocksdb_index(dir_);
    EXPECT_FALSE(index->get_file(repo, commit, "a.bin"));
    auto blob = make_blob(std::string(64, 'b'), {"one", "two", "one"});
    index->commit_blob(blob, {{repo, commit, "a.bin"}, {repo, commit, "copy/a.bin"}});
    auto file = index->get_file(repo, commit, "copy/a.bin");
    ASSERT_TRUE(file);
    EXPECT_EQ(file->etag, blob.etag);
    EXPECT_EQ(file->size, 3072u);
    auto stored = index->get_blob(blob.etag);
    ASSERT_TRUE(stored);
    ASSERT_EQ(stored->chunks.size(), 3u);
    EXPECT_EQ(stored->chunks[2].id, blob.chunks[0].id);
    EXPECT_EQ(index->chunk_refcount(blob.chunks[0].id), 2u);
    EXPECT_EQ(index->chunk_refcount(blob.chunks[1].id), 1u);
    // A second blob sharing a chunk adds one reference to it; committing a known blob again adds none.
    index->commit_blob(make_blob(std::string(64, 'c'), {"two"}), {{repo, commit, "b.bin"}});
    index->commit_blob(blob, {{repo, std::string(40, 'd'), "a.bin"}});
    EXPECT_EQ(index->chunk_refcount(blob.chunks[1].id), 2u);
    EXPECT_EQ(index->chunk_refcount(blob.chunks[0].id), 2u);
    index->put_ref(repo, "main", RefEntry{commit, 1234});
    index->put_meta("k", "v");
  }
  // Everything survives a reopen.
  auto index = open_rocksdb_index(dir_);
  EXPECT_EQ(index->get_ref(repo, "main")->commit, commit);
  EXPECT_EQ(index->get_ref(repo, "main")->fetched_at_ms, 1234);
  EXPECT_EQ(index->get_meta("k"), "v");
  EXPECT_FALSE(index->get_ref(RepoId{RepoType::dataset, "acme/x"}, "main"));
  int listed = 0;
  index->list_files([&](const Index::ListedFile& f) {
    ++listed;
    EXPECT_EQ(f.repo_key, "model/acme/x");
    EXPECT_TRUE(f.cached);
  });
  EXPECT_EQ(listed, 4);
}

TEST_F(IndexTest, BlobV2RootIsKeptAndOptional) {
  RepoId repo{RepoType::model, "acme/x"};
  auto with_root = make_blob(std::string(64, 'e'), {"one"});
  with_root.v2_root = with_root.chunks[0].id;
  // A record without the root is byte for byte what the node wrote before it kept one.
  auto without_root = make_blob(std::string(64, 'f'), {"two"});
  {
    auto index = open_rocksdb_index(dir_);
    index->commit_blob(with_root, {{repo, std::string(40, 'a'), "a.bin"}});
    index->commit_blob(without_root, {{repo, std::string(40, 'a'), "b.bin"}});
  }
  auto index = open_rocksdb_index(dir_);
  EXPECT_EQ(index->get_blob(with_root.etag)->v2_root, with_root.v2_root);
  auto old = index->get_blob(without_root.etag);
  ASSERT_TRUE(old);
  EXPECT_FALSE(old->v2_root);
  ASSERT_EQ(old->chunks.size(), 1u);
  EXPECT_EQ(old->chunks[0].id, without_root.chunks[0].id);
}

}  // namespace
}  // namespace inferllama
