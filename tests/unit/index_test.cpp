#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "cache/hashing.hpp"
#include "inferllama/index.hpp"
#include "test_support.hpp"

namespace inferllama {
namespace {

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_test_dir("index"); }
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
    index->commit_blob(blob, {{repo, commit, "a.bin"}, {repo, commit, "copy/a.bin"}}, BlobScope{true, {}});
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
    index->commit_blob(make_blob(std::string(64, 'c'), {"two"}), {{repo, commit, "b.bin"}}, BlobScope{true, {}});
    index->commit_blob(blob, {{repo, std::string(40, 'd'), "a.bin"}}, BlobScope{true, {}});
    EXPECT_EQ(index->chunk_refcount(blob.chunks[1].id), 2u);
    EXPECT_EQ(index->chunk_refcount(blob.chunks[0].id), 2u);
    index->put_ref(repo, "main", RefEntry{commit, 1234});
    // A name's history keeps its kRefHistory newest commits.
    std::vector<std::string> before;
    for (std::size_t i = 0; i <= kRefHistory; ++i) before.push_back(std::string(40, static_cast<char>('0' + i)));
    index->put_ref(repo, "v2", RefEntry{commit, 5678, before});
    index->put_meta("k", "v");
  }
  // Everything survives a reopen.
  auto index = open_rocksdb_index(dir_);
  EXPECT_EQ(index->get_ref(repo, "main")->commit, commit);
  EXPECT_EQ(index->get_ref(repo, "main")->fetched_at_ms, 1234);
  EXPECT_TRUE(index->get_ref(repo, "main")->before.empty());
  const auto v2 = index->get_ref(repo, "v2");
  ASSERT_TRUE(v2);
  ASSERT_EQ(v2->before.size(), kRefHistory);
  EXPECT_EQ(v2->before.front(), std::string(40, '1'));
  EXPECT_EQ(v2->before.back(), std::string(40, static_cast<char>('0' + kRefHistory)));
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
    index->commit_blob(with_root, {{repo, std::string(40, 'a'), "a.bin"}}, BlobScope{true, {}});
    index->commit_blob(without_root, {{repo, std::string(40, 'a'), "b.bin"}}, BlobScope{true, {}});
  }
  auto index = open_rocksdb_index(dir_);
  EXPECT_EQ(index->get_blob(with_root.etag)->v2_root, with_root.v2_root);
  auto old = index->get_blob(without_root.etag);
  ASSERT_TRUE(old);
  EXPECT_FALSE(old->v2_root);
  ASSERT_EQ(old->chunks.size(), 1u);
  EXPECT_EQ(old->chunks[0].id, without_root.chunks[0].id);
}

TEST_F(IndexTest, BlobScopesSayWhichReposABlobAnswersFor) {
  const RepoId gated{RepoType::model, "acme/gated"};
  const RepoId open{RepoType::model, "acme/open"};
  const RepoId other{RepoType::dataset, "acme/gated"};
  auto restricted = make_blob(std::string(64, 'a'), {"one"});
  auto shared = make_blob(std::string(64, 'b'), {"two"});
  {
    auto index = open_rocksdb_index(dir_);
    index->commit_blob(restricted, {{gated, std::string(40, 'a'), "w.bin"}}, BlobScope{false, {gated}});
    index->commit_blob(shared, {}, BlobScope{true, {open}});
    EXPECT_TRUE(index->blob_serves(restricted.etag, gated));
    EXPECT_FALSE(index->blob_serves(restricted.etag, open));
    EXPECT_FALSE(index->blob_serves(restricted.etag, other));
    EXPECT_TRUE(index->blob_serves(shared.etag, other));
    // Verified for one more repo: the record and chunk references stay as they are.
    index->commit_blob(restricted, {{open, std::string(40, 'b'), "w.bin"}}, BlobScope{false, {open}});
    EXPECT_TRUE(index->blob_serves(restricted.etag, open));
    EXPECT_EQ(index->chunk_refcount(restricted.chunks[0].id), 1u);
    // Forgetting the blob forgets its scope: stored again, it answers only for whoever delivered it then.
    index->remove_blob(restricted.etag);
    index->commit_blob(restricted, {}, BlobScope{false, {gated}});
    EXPECT_FALSE(index->blob_serves(restricted.etag, open));
  }
  // An index written before scopes: its blobs answer for the repos whose file entries name them.
  {
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir_.string(), &names).ok());
    for (const auto& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir_.string(), families, &handles, &raw).ok());
    for (auto* h : handles) {
      if (h->GetName() == "blob_scopes") {
        EXPECT_TRUE(raw->DropColumnFamily(h).ok());
      }
      raw->DestroyColumnFamilyHandle(h);
    }
    delete raw;
  }
  auto index = open_rocksdb_index(dir_);
  EXPECT_TRUE(index->blob_serves(restricted.etag, gated));
  EXPECT_TRUE(index->blob_serves(restricted.etag, open));  // its file entry outlived the blob's eviction
  EXPECT_FALSE(index->blob_serves(restricted.etag, other));
  EXPECT_FALSE(index->blob_serves(shared.etag, other));  // no file entry names it, and nothing is shared
}

TEST_F(IndexTest, ABlobRecordWhoseChunksDoNotCoverItsSizeIsRefused) {
  auto index = open_rocksdb_index(dir_);
  auto blob = make_blob(std::string(64, 'c'), {"one", "two"});
  blob.size += 1;  // a position past the chunk list
  index->commit_blob(blob, {}, BlobScope{true, {}});
  EXPECT_THROW(index->get_blob(blob.etag), std::runtime_error);
}

std::vector<std::string> scan_keys(RecordStore& records, RecordTable table, std::string_view prefix) {
  std::vector<std::string> keys;
  records.scan(table, prefix, [&](std::string_view key, std::string_view) {
    keys.emplace_back(key);
    return true;
  });
  return keys;
}

TEST_F(IndexTest, RecordTablesWriteScanAndEraseRanges) {
  auto index = open_rocksdb_index(dir_);
  auto& records = index->records();
  const std::string high_prefix = "p\xff";
  records.write(RecordTable::usage,
                {{"d|2026-01-01|a", "1"},
                 {"d|2026-01-02|a", "2"},
                 {"d|2026-01-03|a", "3"},
                 {"e|x", "4"},
                 {high_prefix + "\xff", "5"},
                 {high_prefix + "\xff\x01", "6"},
                 {"q", "7"}},
                /*sync=*/true);
  records.write(RecordTable::identities, {{"d|2026-01-01|a", "other table"}}, /*sync=*/false);
  EXPECT_EQ(records.get(RecordTable::usage, "d|2026-01-02|a"), "2");
  EXPECT_EQ(records.get(RecordTable::identities, "d|2026-01-01|a"), "other table");
  EXPECT_FALSE(records.get(RecordTable::identities, "e|x"));

  EXPECT_EQ(scan_keys(records, RecordTable::usage, "d|"),
            (std::vector<std::string>{"d|2026-01-01|a", "d|2026-01-02|a", "d|2026-01-03|a"}));
  // A prefix ending in 0xff bytes has no simple upper bound: the scan still stops at the prefix.
  EXPECT_EQ(scan_keys(records, RecordTable::usage, high_prefix),
            (std::vector<std::string>{high_prefix + "\xff", high_prefix + "\xff\x01"}));
  EXPECT_EQ(scan_keys(records, RecordTable::usage, "").size(), 7u);
  int visited = 0;
  records.scan(RecordTable::usage, "", [&](std::string_view, std::string_view) { return ++visited < 2; });
  EXPECT_EQ(visited, 2);

  // One batch puts and deletes together.
  records.write(RecordTable::usage, {{"e|x", std::nullopt}, {"e|y", "8"}}, /*sync=*/true);
  EXPECT_EQ(scan_keys(records, RecordTable::usage, "e|"), (std::vector<std::string>{"e|y"}));

  // [begin, end): the end key stays, and the other table is untouched.
  records.erase_range(RecordTable::usage, "d|", "d|2026-01-03");
  EXPECT_EQ(scan_keys(records, RecordTable::usage, "d|"), (std::vector<std::string>{"d|2026-01-03|a"}));
  EXPECT_EQ(records.get(RecordTable::identities, "d|2026-01-01|a"), "other table");
  records.erase_range(RecordTable::usage, "z", "a");  // inverted: nothing
  EXPECT_EQ(scan_keys(records, RecordTable::usage, "").size(), 5u);
}

TEST_F(IndexTest, OpensAnIndexWrittenBeforeTheRecordTables) {
  {
    // The column families of an index from before identities and usage were kept.
    rocksdb::DBOptions options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {"default", "refs", "meta", "files", "blobs", "chunks"})
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir_.string(), families, &handles, &db).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[2], "k", "old").ok());
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  {
    // Read-only (`inferllama ls`): the missing tables read as empty and refuse changes.
    auto index = open_rocksdb_index(dir_, /*read_only=*/true);
    EXPECT_EQ(index->get_meta("k"), "old");
    EXPECT_FALSE(index->records().get(RecordTable::identities, "user|alice"));
    EXPECT_TRUE(scan_keys(index->records(), RecordTable::usage, "").empty());
    EXPECT_THROW(index->records().write(RecordTable::usage, {{"k", "v"}}, true), std::runtime_error);
  }
  {
    auto index = open_rocksdb_index(dir_);
    EXPECT_EQ(index->get_meta("k"), "old");
    index->records().write(RecordTable::identities, {{"user|alice", "{}"}}, /*sync=*/true);
  }
  auto index = open_rocksdb_index(dir_, /*read_only=*/true);
  EXPECT_EQ(index->records().get(RecordTable::identities, "user|alice"), "{}");
}

}  // namespace
}  // namespace inferllama
