#include "cache/evictor.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cache/hashing.hpp"
#include "inferllama/sync_point.hpp"
#include "test_support.hpp"

namespace inferllama::cache {
namespace {

constexpr std::uint64_t kFileSize = 1000;

class EvictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("evict");
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
  }
  void TearDown() override {
    index_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Puts `bytes` in the store as one chunk file, as a download's commit does; its content address.
  Sha256 put_chunk(const std::string& bytes) {
    const Sha256 id = sha256(bytes);
    const auto staged = store_->staging_dir("test") / id.hex();
    std::ofstream(staged, std::ios::binary) << bytes;
    store_->adopt(staged, id);
    return id;
  }

  // Stores a file of kFileSize bytes of `fill` at `path` of repo_ at `commit`, as a download commits it.
  std::string store_file(const std::string& path, char fill, const std::string& commit) {
    const std::string bytes(kFileSize, fill);
    BlobEntry blob;
    blob.etag = sha256(bytes).hex();
    blob.lfs = true;
    blob.size = bytes.size();
    blob.chunk_size = 4096;
    blob.chunks.push_back(ChunkRef{put_chunk(bytes), sha1(bytes), static_cast<std::uint32_t>(bytes.size())});
    index_->commit_blob(blob, {Index::FileRef{repo_, commit, path}}, BlobScope{true, {}});
    return blob.etag;
  }
  std::string store_file(const std::string& path, char fill) { return store_file(path, fill, commit_); }

  bool stored(const std::string& etag) {
    auto blob = index_->get_blob(etag);
    return blob && store_->contains(blob->chunks.front().id);
  }

  std::filesystem::path dir_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  RepoId repo_{RepoType::model, "acme/x"};
  std::string commit_ = std::string(40, 'a');
};

TEST_F(EvictorTest, OverBudgetTheLeastRecentlyUsedFilesGoFirst) {
  Evictor evictor(*store_, *index_, 2 * kFileSize + kFileSize / 2);
  const auto a = store_file("a.bin", 'a');
  evictor.stored(a);
  const auto b = store_file("b.bin", 'b');
  evictor.stored(b);
  const auto c = store_file("c.bin", 'c');
  evictor.stored(c);
  evictor.lease(a).reset();  // read again: now the most recent, b the least

  evictor.enforce();
  EXPECT_TRUE(stored(a));
  EXPECT_FALSE(stored(b));
  EXPECT_TRUE(stored(c));
  EXPECT_EQ(store_->bytes_stored(), 2 * kFileSize);
  EXPECT_EQ(evictor.counters().evicted_files.load(), 1u);
  EXPECT_EQ(evictor.counters().evicted_bytes.load(), kFileSize);
  // The path stays listed; its bytes are fetched again, and an evicted file gives no lease until then.
  EXPECT_TRUE(index_->get_file(repo_, commit_, "b.bin"));
  EXPECT_FALSE(evictor.lease(b));
  evictor.stored(b);
  EXPECT_TRUE(evictor.lease(b));
}

TEST_F(EvictorTest, WithoutABudgetNothingIsEvictedUnlessRoomIsAskedFor) {
  Evictor evictor(*store_, *index_, 0);
  const auto a = store_file("a.bin", 'a');
  const auto b = store_file("b.bin", 'b');
  evictor.stored(b);  // a was stored before start-up: the oldest
  evictor.enforce();
  EXPECT_TRUE(stored(a));
  EXPECT_TRUE(stored(b));
  evictor.make_room(kFileSize);  // a full disk: room for one more file
  EXPECT_FALSE(stored(a));
  EXPECT_TRUE(stored(b));
}

TEST_F(EvictorTest, PinnedSnapshotsAreNeverEvicted) {
  Evictor evictor(*store_, *index_, kFileSize);
  const std::string pinned_commit(40, 'b');
  const auto old_pinned = store_file("p.bin", 'p', pinned_commit);
  evictor.stored(old_pinned);
  const auto a = store_file("a.bin", 'a');
  evictor.stored(a);
  const auto b = store_file("b.bin", 'b');
  evictor.stored(b);
  index_->set_pinned(repo_, pinned_commit, true);

  evictor.enforce();  // even when the budget cannot be met without the pinned file
  EXPECT_TRUE(stored(old_pinned));
  EXPECT_FALSE(stored(a));
  EXPECT_FALSE(stored(b));
  EXPECT_EQ(store_->bytes_stored(), kFileSize);

  index_->set_pinned(repo_, pinned_commit, false);
  evictor.make_room(kFileSize);
  EXPECT_FALSE(stored(old_pinned));
}

TEST_F(EvictorTest, FilesOnlyACommitTheBranchMovedOnFromHoldsGoFirstOnceTheNewCommitIsCached) {
  Evictor evictor(*store_, *index_, 4 * kFileSize);
  const std::string old_commit = commit_, new_commit(40, 'b'), by_sha(40, 'c');
  const auto unrelated = store_file("x.bin", 'x', by_sha);  // a commit asked for by its sha: no branch
  evictor.stored(unrelated);
  const auto shared = store_file("shared.bin", 's', old_commit);
  index_->put_file(repo_, new_commit, "shared.bin", FileEntry{shared, true, kFileSize});
  evictor.stored(shared);
  const auto newer = store_file("new.bin", 'n', new_commit);
  evictor.stored(newer);
  const auto older = store_file("old.bin", 'o', old_commit);
  evictor.stored(older);  // the most recently used, but only the commit main left holds it
  index_->put_ref(repo_, "main", RefEntry{new_commit, 1, {old_commit}});

  EXPECT_EQ(evictor.eviction_order(10), (std::vector<std::string>{older, unrelated, shared, newer}));
  const auto other = store_file("y.bin", 'y', by_sha);
  evictor.stored(other);
  evictor.enforce();
  EXPECT_FALSE(stored(older));
  EXPECT_TRUE(stored(unrelated));
  EXPECT_TRUE(stored(shared)) << "the new commit holds it too";
  EXPECT_TRUE(stored(newer));
}

TEST_F(EvictorTest, AnOldCommitKeepsItsPlaceWhileTheBranchsNewCommitIsNotCached) {
  Evictor evictor(*store_, *index_, 0);
  const std::string new_commit(40, 'b'), by_sha(40, 'c');
  const auto unrelated = store_file("x.bin", 'x', by_sha);
  evictor.stored(unrelated);
  const auto older = store_file("old.bin", 'o');
  evictor.stored(older);
  // main moved, but nothing of its new commit is stored: the old one is the best the node has.
  index_->put_file(repo_, new_commit, "new.bin", FileEntry{std::string(64, 'e'), true, kFileSize});
  index_->put_ref(repo_, "main", RefEntry{new_commit, 1, {commit_}});
  EXPECT_EQ(evictor.eviction_order(10), (std::vector<std::string>{unrelated, older}));
  // A tag still naming the old commit keeps it current too.
  const auto newer = store_file("new.bin", 'n', new_commit);
  evictor.stored(newer);
  EXPECT_EQ(evictor.eviction_order(10).front(), older);
  index_->put_ref(repo_, "v1", RefEntry{commit_, 1, {}});
  EXPECT_EQ(evictor.eviction_order(10), (std::vector<std::string>{unrelated, older, newer}));
}

TEST_F(EvictorTest, AFileBeingReadIsRemovedOnlyOnceItsLeaseEnds) {
  Evictor evictor(*store_, *index_, kFileSize);
  const auto read = store_file("read.bin", 'r');
  evictor.stored(read);
  const auto other = store_file("other.bin", 'o');
  evictor.stored(other);
  std::string released;
  evictor.set_before_release([&](const std::string& etag) { released = etag; });

  auto lease = evictor.lease(read);
  ASSERT_TRUE(lease);
  auto second = evictor.lease(read);  // two readers of one file
  evictor.make_room(kFileSize);
  EXPECT_TRUE(stored(read));
  EXPECT_FALSE(stored(other));
  EXPECT_EQ(released, other);

  lease.reset();
  evictor.make_room(kFileSize);
  EXPECT_TRUE(stored(read)) << "one reader still holds it";
  second.reset();
  evictor.make_room(kFileSize);
  EXPECT_FALSE(stored(read));
  EXPECT_EQ(released, read);
}

TEST_F(EvictorTest, GarbageCollectionRemovesOnlyChunksNoFileReferences) {
  Evictor evictor(*store_, *index_, 0);
  const auto kept = store_file("kept.bin", 'k');
  const Sha256 orphan = put_chunk(std::string(300, 'x'));  // left by a crash before its commit
  const Sha256 shared = index_->get_blob(kept)->chunks.front().id;

  const GcReport report = evictor.collect_garbage();
  EXPECT_EQ(report.chunks_removed, 1u);
  EXPECT_EQ(report.bytes_freed, 300u);
  EXPECT_FALSE(store_->contains(orphan));
  EXPECT_TRUE(store_->contains(shared));
  EXPECT_TRUE(stored(kept));
  EXPECT_EQ(evictor.collect_garbage().chunks_removed, 0u);
}

#ifdef INFERLLAMA_SYNC_POINTS
// The races: each sync point runs the other party's step at the worst moment, on the evicting thread.

TEST_F(EvictorTest, ALeaseTakenAfterTheEvictionChoseTheFileKeepsIt) {
  Evictor evictor(*store_, *index_, 2 * kFileSize);
  const auto chosen = store_file("chosen.bin", 'c');
  evictor.stored(chosen);
  const auto next = store_file("next.bin", 'n');
  evictor.stored(next);
  const auto newest = store_file("newest.bin", 'w');
  evictor.stored(newest);

  std::shared_ptr<void> late_reader;
  sync_point::Scoped reader("Evictor::evict_until:selected", [&](void*) { late_reader = evictor.lease(chosen); });
  evictor.enforce();
  ASSERT_TRUE(late_reader) << "the sync point was not reached";
  EXPECT_TRUE(stored(chosen));
  EXPECT_FALSE(stored(next));
  EXPECT_TRUE(stored(newest)) << "the next candidates in order make up the room";
}

TEST_F(EvictorTest, AReaderArrivingWhileAFileIsBeingEvictedGetsNoLease) {
  Evictor evictor(*store_, *index_, kFileSize);
  const auto going = store_file("going.bin", 'g');
  evictor.stored(going);
  const auto staying = store_file("staying.bin", 's');
  evictor.stored(staying);

  int reached = 0;
  sync_point::Scoped reader("Evictor::evict_until:marked_gone", [&](void* arg) {
    ++reached;
    EXPECT_EQ(*static_cast<std::string*>(arg), going);
    EXPECT_FALSE(evictor.lease(going)) << "its chunks are about to go: the reader fetches it again";
    EXPECT_TRUE(stored(going));
  });
  evictor.enforce();
  EXPECT_EQ(reached, 1);
  EXPECT_FALSE(stored(going));
  EXPECT_TRUE(stored(staying));
}

TEST_F(EvictorTest, GarbageCollectionKeepsAChunkCommittedAfterItsScan) {
  Evictor evictor(*store_, *index_, 0);
  const std::string bytes(kFileSize, 'd');
  const Sha256 chunk = put_chunk(bytes);  // staged by a download that commits while gc runs

  bool committed = false;
  sync_point::Scoped download("Evictor::collect_garbage:scanned", [&](void*) {
    BlobEntry blob{sha256(bytes).hex(), true, bytes.size(), 4096, {ChunkRef{chunk, sha1(bytes), 1000}}, {}, {}};
    index_->commit_blob(blob, {Index::FileRef{repo_, commit_, "late.bin"}}, BlobScope{true, {}});
    committed = true;
  });
  const GcReport report = evictor.collect_garbage();
  ASSERT_TRUE(committed) << "the sync point was not reached";
  EXPECT_EQ(report.chunks_removed, 0u);
  EXPECT_TRUE(store_->contains(chunk));
}
#endif

}  // namespace
}  // namespace inferllama::cache
