#include "cache/download.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <thread>

#include "cache/hashing.hpp"
#include "fake_upstreams.hpp"
#include "inferllama/sync_point.hpp"
#include "test_support.hpp"

namespace inferllama::cache {
namespace {

using testing::MemoryUpstream;
using testing::Waiter;

// The file's BEP 52 pieces root, from its bytes: the merkle root of its 64 KiB pieces' roots.
Sha256 v2_root_of(std::span<const std::uint8_t> data) {
  std::vector<Sha256> layer;
  for (std::size_t at = 0; at < data.size(); at += 65536) {
    layer.push_back(piece_root(data.subspan(at, std::min<std::size_t>(65536, data.size() - at)), 65536));
  }
  return piece_layer_root(layer, 65536);
}

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("dl");
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
    data_.resize(5 * 64 * 1024 + 123);
    for (std::size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<std::uint8_t>((i * 7919) >> 5);
    upstream_ = std::make_unique<MemoryUpstream>(data_);
    settings_.chunk_size = 64 * 1024;
    settings_.connections = 3;
    settings_.parallel_threshold = 64 * 1024;
    settings_.backoff = std::chrono::milliseconds(1);
    downloads_ = std::make_unique<Downloads>(*store_, *index_, *upstream_, workers_, settings_);
  }
  void TearDown() override {
    downloads_.reset();
    workers_.join();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  BlobSource source(std::string etag) {
    return BlobSource{"mem://file", {}, std::move(etag), true, data_.size(), nullptr};
  }
  std::string real_etag() { return sha256(data_).hex(); }
  // Starts the download of `blob` for `claim` and waits until it has ended; null when none was started.
  std::shared_ptr<Download> download_to_the_end(const BlobSource& blob, const FileClaim& claim) {
    auto d = downloads_->get_or_start(blob, claim);
    if (d) {
      auto waiter = std::make_shared<Waiter>();
      d->subscribe(waiter);
      waiter->until_done(*d);
    }
    return d;
  }
  // The blob `etag` is stored as data_'s 64 KiB chunks, each under its hashes, with the file's v2 root.
  void expect_stored_as_chunks_of_data(const std::string& etag) {
    auto blob = index_->get_blob(etag);
    ASSERT_TRUE(blob);
    ASSERT_EQ(blob->chunks.size(), (data_.size() + 65535) / 65536);
    for (std::size_t i = 0; i < blob->chunks.size(); ++i) {
      auto part = std::span<const std::uint8_t>(data_).subspan(i * 65536, blob->chunks[i].size);
      EXPECT_EQ(blob->chunks[i].id, piece_root(part, 65536));
      EXPECT_EQ(blob->chunks[i].piece_sha1, sha1(part));
      EXPECT_TRUE(store_->contains(blob->chunks[i].id));
    }
    EXPECT_EQ(blob->v2_root, v2_root_of(data_));
  }

  std::filesystem::path dir_;
  std::vector<std::uint8_t> data_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<MemoryUpstream> upstream_;
  asio::thread_pool workers_{2};
  DownloadSettings settings_ = DownloadSettings::from(Config{});
  std::unique_ptr<Downloads> downloads_;
  RepoId repo_{RepoType::model, "acme/x"};
  std::string commit_ = std::string(40, 'a');
};

TEST_F(DownloadTest, StoresVerifiedChunksAndCommitsEveryClaim) {
  auto waiter = std::make_shared<Waiter>();
  auto d = downloads_->get_or_start(source(real_etag()), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(d);
  d->subscribe(waiter);
  // A second request for the same bytes joins the same download.
  EXPECT_EQ(downloads_->get_or_start(source(real_etag()), {repo_, commit_, "b.bin"}), d);
  waiter->until_done(*d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_EQ(upstream_->sent.load(), data_.size());
  // Readers read one chunk file at a time: what is readable stops at the chunk's end.
  EXPECT_EQ(d->readable(0), 65536u);
  EXPECT_EQ(d->readable(65536 + 100), 65536u - 100);
  EXPECT_EQ(d->readable(5 * 65536), 123u);
  EXPECT_EQ(d->readable(data_.size()), 0u);
  expect_stored_as_chunks_of_data(real_etag());
  EXPECT_TRUE(index_->get_file(repo_, commit_, "a.bin"));
  EXPECT_TRUE(index_->get_file(repo_, commit_, "b.bin"));
  // Once committed, asking again starts nothing.
  EXPECT_EQ(downloads_->get_or_start(source(real_etag()), {repo_, commit_, "c.bin"}), nullptr);
}

// A file outside LFS is named by its git blob SHA-1; its chunks get the same addresses and piece hashes
// (computed elsewhere than an LFS file's: the in-order pass is SHA-1 here).
TEST_F(DownloadTest, AGitBlobIsStoredUnderTheSameChunkHashes) {
  Sha1Stream git;
  start_git_blob(git, data_.size());
  git.update(data_);
  const std::string etag = git.finish().hex();
  auto d = download_to_the_end(BlobSource{"mem://file", {}, etag, false, data_.size(), nullptr},
                               {repo_, commit_, "tokenizer.json"});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  expect_stored_as_chunks_of_data(etag);
}

TEST_F(DownloadTest, HashMismatchCommitsNothingAndHoldsTheLastByte) {
  auto d = download_to_the_end(source(std::string(64, '0')), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state(), Download::State::failed);
  EXPECT_NE(d->error().find("mismatch"), std::string::npos);
  EXPECT_LT(d->readable(0), data_.size());  // the last byte never became readable
  EXPECT_FALSE(index_->get_blob(std::string(64, '0')));
  EXPECT_FALSE(index_->get_file(repo_, commit_, "a.bin"));
}

TEST_F(DownloadTest, BrokenConnectionsResumeWhereTheyStopped) {
  upstream_->cut_after = 100 * 1024;
  auto d = download_to_the_end(source(real_etag()), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_EQ(upstream_->sent.load(), data_.size());
  EXPECT_GT(upstream_->requests.load(), 3);
}

TEST_F(DownloadTest, AFailedDownloadResumesFromItsStagedChunks) {
  settings_.retries = 0;
  settings_.connections = 1;
  downloads_ = std::make_unique<Downloads>(*store_, *index_, *upstream_, workers_, settings_);
  upstream_->cut_after = 150 * 1024;  // the connection breaks after 150 KiB, with no retry left
  auto first = download_to_the_end(source(real_etag()), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(first);
  ASSERT_EQ(first->state(), Download::State::failed);
  const std::uint64_t sent_before = upstream_->sent.load();
  first.reset();

  auto second = download_to_the_end(source(real_etag()), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(second);
  ASSERT_EQ(second->state(), Download::State::complete) << second->error();
  // Only what was missing was fetched again.
  EXPECT_EQ(upstream_->sent.load(), data_.size());
  EXPECT_GT(sent_before, 0u);
  EXPECT_EQ(downloads_->counters().resumed_bytes.load(), sent_before);
  // A chunk hashed partly from its staged bytes names the file as one hashed in a single pass.
  EXPECT_EQ(index_->get_blob(real_etag())->v2_root, v2_root_of(data_));
}

// A hash is public: a blob stored for a restricted repo answers another repo only once that repo's own
// upstream delivered the same bytes, which are hashed again but not stored twice.
TEST_F(DownloadTest, ABlobOfARestrictedRepoAnswersAnotherRepoOnlyAfterItsUpstreamDeliveredIt) {
  const RepoId other{RepoType::model, "acme/other"};
  auto waiter = std::make_shared<Waiter>();
  auto first = downloads_->get_or_start(source(real_etag()), {repo_, commit_, "a.bin", false});
  first->subscribe(waiter);
  // Another repo's claim does not read the restricted download's bytes as they arrive.
  auto apart = downloads_->get_or_start(source(real_etag()), {other, commit_, "b.bin", false});
  ASSERT_TRUE(apart);
  EXPECT_NE(apart, first);
  apart->subscribe(waiter);
  waiter->until_done(*first);
  waiter->until_done(*apart);
  ASSERT_EQ(first->state(), Download::State::complete) << first->error();
  ASSERT_EQ(apart->state(), Download::State::complete) << apart->error();
  EXPECT_EQ(upstream_->sent.load(), 2 * data_.size());

  const RepoId third{RepoType::model, "acme/third"};
  EXPECT_TRUE(index_->blob_serves(real_etag(), repo_));
  EXPECT_TRUE(index_->blob_serves(real_etag(), other));
  EXPECT_FALSE(index_->blob_serves(real_etag(), third));
  auto blob = index_->get_blob(real_etag());
  ASSERT_TRUE(blob);
  for (const auto& c : blob->chunks) {  // one reference per place in the one blob: stored once
    const auto places =
        std::count_if(blob->chunks.begin(), blob->chunks.end(), [&](const ChunkRef& o) { return o.id == c.id; });
    EXPECT_EQ(index_->chunk_refcount(c.id), static_cast<std::uint64_t>(places));
  }

  // A third repo's claim fetches and verifies again; bytes that do not match leave it unproven.
  upstream_ = std::make_unique<MemoryUpstream>(std::vector<std::uint8_t>(data_.size(), 0x5a));
  downloads_ = std::make_unique<Downloads>(*store_, *index_, *upstream_, workers_, settings_);
  auto verify = downloads_->get_or_start(source(real_etag()), {third, commit_, "c.bin", false});
  ASSERT_TRUE(verify);
  verify->subscribe(waiter);
  waiter->until_done(*verify);
  EXPECT_EQ(verify->state(), Download::State::failed);
  EXPECT_FALSE(index_->blob_serves(real_etag(), third));
  EXPECT_FALSE(index_->get_file(third, commit_, "c.bin"));
  EXPECT_EQ(index_->get_blob(real_etag())->chunks.size(), blob->chunks.size());
}

TEST_F(DownloadTest, ABlobOfAPublicRepoIsSharedAndItsDownloadJoinedByAnyRepo) {
  const RepoId restricted{RepoType::model, "acme/gated"};
  auto waiter = std::make_shared<Waiter>();
  auto d = downloads_->get_or_start(source(real_etag()), {repo_, commit_, "a.bin", true});
  d->subscribe(waiter);
  EXPECT_EQ(downloads_->get_or_start(source(real_etag()), {restricted, commit_, "b.bin", false}), d);
  // A claim of another size is not taken: the caller refuses it.
  BlobSource lying = source(real_etag());
  lying.size += 1;
  EXPECT_EQ(downloads_->get_or_start(lying, {repo_, commit_, "lie.bin", true}), d);
  waiter->until_done(*d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_FALSE(index_->get_file(repo_, commit_, "lie.bin"));
  EXPECT_EQ(index_->get_file(restricted, commit_, "b.bin")->size, data_.size());
  EXPECT_TRUE(index_->blob_serves(real_etag(), RepoId{RepoType::dataset, "anyone/else"}));
  EXPECT_EQ(downloads_->get_or_start(source(real_etag()), {RepoId{RepoType::model, "x/y"}, commit_, "c", false}),
            nullptr);
}

#ifdef INFERLLAMA_SYNC_POINTS
// The hashing pool runs on CPU nothing else wants; a machine with none to spare still commits the file,
// because once it is verified the workers hash every chunk whose hashes are not recorded, those the pool
// has begun included.
TEST_F(DownloadTest, AVerifiedFileIsCommittedWhileTheHashingPoolGetsNoCpu) {
  std::promise<void> cpu_for_the_pool;
  std::shared_future<void> pool_may_run = cpu_for_the_pool.get_future().share();
  std::promise<void> pool_held;
  std::shared_future<void> pool_is_held = pool_held.get_future().share();
  std::atomic<int> held{0};
  sync_point::Scoped starve("Download::hash_chunk:in_background", [&](void*) {
    if (held++ == 0) pool_held.set_value();
    pool_may_run.wait();
  });
  // The file may be verified before the pool thread had any CPU (a loaded machine): the workers take over
  // only once the pool is held in the middle of a chunk, the case under test.
  // Bounded, so that a pool that never starts fails the test below instead of hanging it.
  sync_point::Scoped after_verification("Download::hash_remaining_chunks",
                                        [&](void*) { pool_is_held.wait_for(std::chrono::seconds(60)); });
  struct Release {
    std::promise<void>& promise;
    ~Release() { promise.set_value(); }  // before the fixture stops the pool, also when an assertion fails
  } release{cpu_for_the_pool};

  auto d = download_to_the_end(source(real_etag()), {repo_, commit_, "a.bin"});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_GT(held.load(), 0) << "the sync point was not reached";
  expect_stored_as_chunks_of_data(real_etag());
}

// When the in-order file hash falls more than a segment behind the bytes that arrived (the CPU is what
// limits the transfer), the hashing pool leaves its chunks to the workers, which hash them once the file is
// verified: the file is stored all the same.
TEST_F(DownloadTest, APoolBehindTheFileHashLeavesItsChunksToTheWorkers) {
  data_.resize((34u << 20) + 123);  // past a segment (32 MiB) and two chunks
  for (std::size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<std::uint8_t>((i * 7919) >> 5);
  upstream_ = std::make_unique<MemoryUpstream>(data_);
  downloads_ = std::make_unique<Downloads>(*store_, *index_, *upstream_, workers_, settings_);
  std::promise<void> left;
  std::shared_future<void> pool_left_a_chunk = left.get_future().share();
  std::atomic<int> left_to_workers{0};
  sync_point::Scoped count("Download::hash_chunk:left_to_workers", [&](void*) {
    if (left_to_workers++ == 0) left.set_value();
  });
  // The file hash waits (bounded) until the pool has found it behind and left a chunk.
  sync_point::Scoped hold_file_hash("Download::advance_file_hash:chunk",
                                    [&](void*) { pool_left_a_chunk.wait_for(std::chrono::seconds(60)); });

  auto d = download_to_the_end(source(real_etag()), {repo_, commit_, "big.bin"});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_GT(left_to_workers.load(), 0) << "the pool never found the file hash behind";
  expect_stored_as_chunks_of_data(real_etag());
}
#endif

TEST_F(DownloadTest, EmptyFile) {
  data_.clear();
  upstream_ = std::make_unique<MemoryUpstream>(data_);
  downloads_ = std::make_unique<Downloads>(*store_, *index_, *upstream_, workers_, settings_);
  BlobSource s{"mem://empty", {}, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391", false, 0, nullptr};
  auto d = download_to_the_end(s, {repo_, commit_, "empty.txt"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state(), Download::State::complete) << d->error();
  EXPECT_TRUE(index_->get_file(repo_, commit_, "empty.txt"));
}

}  // namespace
}  // namespace inferllama::cache
