// The seed serves the node's torrents straight from the chunk store to a real libtorrent client over
// loopback, and the mirror fetcher downloads from it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <variant>
#include <vector>

#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/torrent_flags.hpp>
#include <libtorrent/torrent_info.hpp>

#include "cache/hashing.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"
#include "torrent/chunk_disk_io.hpp"
#include "torrent/swarm_snapshots.hpp"
#include "torrent/fetcher.hpp"
#include "torrent/metainfo.hpp"
#include "torrent/seeder.hpp"
#include "torrent/session_settings.hpp"

namespace fs = std::filesystem;
using namespace inferllama;
using namespace inferllama::torrent;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint32_t kPiece = 64 * 1024;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string random_bytes(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    const std::uint64_t word = random();
    std::memcpy(bytes.data() + i, &word, std::min<std::size_t>(8, size - i));
  }
  return bytes;
}

// The snapshot's files: sizes that end mid-piece, on a piece boundary, and within the first piece.
const std::vector<std::pair<std::string, std::size_t>> kFiles = {
    {"config.json", 1000},
    {"weights/part1.bin", 3 * kPiece + 123},
    {"weights/part2.bin", 5 * kPiece},
    {"weights/large.bin", 16 * 1024 * 1024 + 7},
};

class SeederTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("seeder_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    store_ = std::make_unique<ChunkStore>(root_ / "store");
    std::uint64_t seed = 1;
    for (const auto& [path, size] : kFiles) write_file(root_ / "content" / "model" / path, random_bytes(size, seed++));
    SeederOptions options = SeederOptions::from(Config{});
    options.listen = "127.0.0.1:0";
    seeder_ = std::make_unique<Seeder>(*store_, options);
  }

  void TearDown() override {
    seeder_.reset();
    fs::remove_all(root_);
  }

  void expect_served(Format format);

  // The snapshot's torrent as the node builds it: each file ingested as the download does (chunks
  // stored under their content address, their hashes kept in a blob entry), then the builder.
  Torrent make_torrent(Format format) {
    blobs_.clear();
    blobs_.reserve(kFiles.size());
    std::vector<SnapshotFile> files;
    for (const auto& [path, size] : kFiles) {
      blobs_.push_back(ingest(read_file(root_ / "content" / "model" / path)));
      files.push_back(SnapshotFile{path, &blobs_.back()});
    }
    auto built = build_torrent(files, BuildOptions{.format = format, .name = "model"});
    if (auto* error = std::get_if<TorrentError>(&built)) ADD_FAILURE() << error->message;
    return std::get<Torrent>(std::move(built));
  }

  BlobEntry ingest(const std::string& content) {
    BlobEntry blob;
    const auto bytes = std::span(reinterpret_cast<const std::uint8_t*>(content.data()), content.size());
    blob.etag = cache::sha256(bytes).hex();
    blob.lfs = true;
    blob.size = content.size();
    blob.chunk_size = kPiece;
    cache::ChunkHashes last;
    std::vector<Sha256> layer;
    for (std::size_t offset = 0; offset < content.size(); offset += kPiece) {
      const auto chunk = bytes.subspan(offset, std::min<std::size_t>(kPiece, content.size() - offset));
      last = cache::hash_chunk(chunk, kPiece);
      blob.chunks.push_back(ChunkRef{last.root, last.piece_sha1, static_cast<std::uint32_t>(chunk.size())});
      layer.push_back(last.root);
      const fs::path staged = store_->staging_dir(blob.etag) / last.root.hex();
      write_file(staged, std::string(reinterpret_cast<const char*>(chunk.data()), chunk.size()));
      store_->adopt(staged, last.root);
    }
    blob.v2_root = layer.size() == 1 ? last.file_root : cache::piece_layer_root(layer, kPiece);
    blob.last_padded_sha1 = last.padded_sha1;
    return blob;
  }

  void expect_same_content(const fs::path& downloaded) {
    for (const auto& [path, size] : kFiles) {
      const std::string got = read_file(downloaded / "model" / path);
      EXPECT_EQ(got.size(), size) << path;
      EXPECT_TRUE(got == read_file(root_ / "content" / "model" / path)) << path << " differs";
    }
  }

  fs::path root_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Seeder> seeder_;
  std::vector<BlobEntry> blobs_;
};

// A plain libtorrent client with its ordinary disk storage, talking to the seed only.
class Leecher {
 public:
  struct Outcome {
    bool finished = false;      // every piece downloaded, verified and on disk
    bool disconnected = false;  // the seed closed or refused the connection
    std::int64_t bytes = 0;
    int pieces = 0;
  };

  Leecher() : session_(params()) {}

  // Downloads until finished, or (when `until_disconnected`) until the seed drops the connection. A drop
  // before `settled` holds (say, one the seed made while still adding the torrent) is retried.
  Outcome download(const std::string& metainfo, const fs::path& directory, std::uint16_t seed_port,
                   bool until_disconnected, std::chrono::seconds limit,
                   const std::function<bool()>& settled = [] { return true; }) {
    lt::add_torrent_params add;
    add.ti = std::make_shared<lt::torrent_info>(metainfo, lt::from_span);
    add.save_path = directory.string();
    add.flags &= ~(lt::torrent_flags::auto_managed | lt::torrent_flags::paused);
    lt::torrent_handle handle = session_.add_torrent(std::move(add));
    const lt::tcp::endpoint seed{boost::asio::ip::make_address("127.0.0.1"), seed_port};
    handle.connect_peer(seed);

    Outcome outcome;
    const auto deadline = Clock::now() + limit;
    std::vector<lt::alert*> alerts;
    bool done = false;
    while (!done && Clock::now() < deadline) {
      session_.wait_for_alert(std::chrono::milliseconds(200));
      session_.pop_alerts(&alerts);
      for (lt::alert* alert : alerts) {
        if (lt::alert_cast<lt::torrent_finished_alert>(alert)) handle.flush_cache();
        if (lt::alert_cast<lt::cache_flushed_alert>(alert)) outcome.finished = done = true;
        if (until_disconnected &&
            (lt::alert_cast<lt::peer_disconnected_alert>(alert) || lt::alert_cast<lt::peer_error_alert>(alert))) {
          if (settled()) {
            outcome.disconnected = done = true;
          } else {
            handle.connect_peer(seed);
          }
        }
      }
    }
    const lt::torrent_status status = handle.status(lt::torrent_handle::query_pieces);
    outcome.bytes = status.total_wanted_done;
    outcome.pieces = status.num_pieces;
    have_ = status.pieces;
    return outcome;
  }

  bool has_piece(int piece) const { return have_.get_bit(lt::piece_index_t{piece}); }

 private:
  static lt::session_params params() {
    lt::settings_pack pack;
    apply_peer_settings(pack, PeerSettings{.listen = "127.0.0.1:0"});
    pack.set_int(lt::settings_pack::alert_mask, lt::alert_category::all);
    return lt::session_params(std::move(pack));
  }

  lt::session session_;
  lt::typed_bitfield<lt::piece_index_t> have_;
};

}  // namespace

// A plain libtorrent client downloads `format`'s torrent from the seed alone; every byte must match.
void SeederTest::expect_served(Format format) {
  const Torrent torrent = make_torrent(format);
  ASSERT_EQ(seeder_->add(torrent), "");
  EXPECT_EQ(seeder_->torrents(), 1u);
  EXPECT_NE(seeder_->listen_port(), 0);

  Leecher leecher;
  const auto start = Clock::now();
  const auto outcome =
      leecher.download(torrent.metainfo, root_ / "leech", seeder_->listen_port(), false, std::chrono::seconds(120));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_TRUE(outcome.finished);
  static constexpr const char* kFormatNames[] = {"v1", "hybrid", "v2"};
  std::printf("%s: %lld bytes in %.2f s (%.0f MB/s)\n", kFormatNames[static_cast<int>(format)],
              static_cast<long long>(outcome.bytes), seconds, static_cast<double>(outcome.bytes) / seconds / 1e6);
  expect_same_content(root_ / "leech");
  EXPECT_GE(seeder_->stats().chunk_bytes_read, static_cast<std::uint64_t>(outcome.bytes));
  EXPECT_EQ(seeder_->stats().read_errors, 0u);
}

TEST_F(SeederTest, ServesV1PaddedMultiFileTorrent) { expect_served(Format::v1); }

TEST_F(SeederTest, ServesHybridTorrent) { expect_served(Format::hybrid); }

TEST_F(SeederTest, ServesV2OnlyTorrent) {
  expect_served(Format::v2);
}

TEST_F(SeederTest, EachFormatOfOneSnapshotIsASwarmOfItsOwn) {
  std::vector<Sha1> swarms;
  for (const auto format : {Format::v1, Format::hybrid, Format::v2}) {
    const Torrent torrent = make_torrent(format);
    ASSERT_EQ(seeder_->add(torrent), "");
    swarms.push_back(torrent.swarm_hash());
  }
  EXPECT_EQ(seeder_->torrents(), 3u);
  EXPECT_EQ(std::set<Sha1>(swarms.begin(), swarms.end()).size(), 3u);
  for (const Sha1& swarm : swarms) EXPECT_TRUE(seeder_->remove(swarm));
  EXPECT_EQ(seeder_->torrents(), 0u);
}

TEST_F(SeederTest, AddRejectsWhatItCannotServe) {
  Torrent torrent = make_torrent(Format::v1);
  Torrent short_table = torrent;
  short_table.pieces.pop_back();
  EXPECT_NE(seeder_->add(short_table), "");
  Torrent garbage = torrent;
  garbage.metainfo = "d4:infoi1ee";
  EXPECT_NE(seeder_->add(garbage), "");
  ASSERT_EQ(seeder_->add(torrent), "");
  EXPECT_EQ(seeder_->add(torrent), "already seeded");
  EXPECT_EQ(seeder_->torrents(), 1u);
}

TEST_F(SeederTest, RemovedTorrentServesNothing) {
  const Torrent torrent = make_torrent(Format::v1);
  ASSERT_EQ(seeder_->add(torrent), "");
  EXPECT_TRUE(seeder_->remove(torrent.swarm_hash()));
  EXPECT_FALSE(seeder_->remove(torrent.swarm_hash()));
  EXPECT_FALSE(seeder_->seeds(torrent.swarm_hash()));
  EXPECT_EQ(seeder_->torrents(), 0u);

  Leecher leecher;
  const auto outcome =
      leecher.download(torrent.metainfo, root_ / "leech", seeder_->listen_port(), true, std::chrono::seconds(30));
  EXPECT_TRUE(outcome.disconnected);
  EXPECT_FALSE(outcome.finished);
  EXPECT_EQ(outcome.bytes, 0);
  EXPECT_EQ(seeder_->stats().chunk_bytes_read, 0u);
}

TEST_F(SeederTest, MissingChunkIsAReadErrorNotACrash) {
  const Torrent torrent = make_torrent(Format::v1);
  // Evicted underneath the seed.
  const int missing = static_cast<int>(torrent.pieces.size() / 2);
  ASSERT_GT(store_->remove(torrent.pieces[missing].chunk), 0u);
  ASSERT_EQ(seeder_->add(torrent), "");

  Leecher leecher;
  const auto outcome =
      leecher.download(torrent.metainfo, root_ / "leech", seeder_->listen_port(), true, std::chrono::seconds(60),
                       [&] { return seeder_->stats().read_errors > 0; });
  EXPECT_TRUE(outcome.disconnected);  // libtorrent pauses a torrent whose storage failed a read
  EXPECT_FALSE(outcome.finished);
  EXPECT_FALSE(leecher.has_piece(missing));
  EXPECT_GE(seeder_->stats().read_errors, 1u);
  std::string metrics;
  seeder_->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_bt_read_errors_total "), std::string::npos);
  EXPECT_EQ(metrics.find("inferllama_bt_read_errors_total 0"), std::string::npos);
  EXPECT_TRUE(seeder_->remove(torrent.swarm_hash()));
}

TEST_F(SeederTest, FetcherDownloadsFromTheSeed) {
  const Torrent torrent = make_torrent(Format::hybrid);
  ASSERT_EQ(seeder_->add(torrent), "");
  TorrentFetcher fetcher({.listen = "127.0.0.1:0"});
  int progress_calls = 0;
  FetchRequest request;
  request.metainfo = torrent.metainfo;
  request.directory = root_ / "mirror";
  request.peers = {{"127.0.0.1", seeder_->listen_port()}};
  request.timeout = std::chrono::seconds(120);
  request.on_progress = [&](const FetchProgress&) { ++progress_calls; };
  const FetchResult result = fetcher.fetch(request);
  ASSERT_EQ(result.error, "");
  EXPECT_GE(progress_calls, 1);
  expect_same_content(root_ / "mirror");

  // The same torrent again: already complete on disk, so it only verifies.
  EXPECT_EQ(fetcher.fetch(request).error, "");
}

TEST_F(SeederTest, FetcherTimesOutAndCancels) {
  const Torrent torrent = make_torrent(Format::v1);  // not seeded: nobody has it
  TorrentFetcher fetcher({.listen = "127.0.0.1:0"});
  FetchRequest request;
  request.metainfo = torrent.metainfo;
  request.directory = root_ / "mirror";
  request.timeout = std::chrono::milliseconds(300);
  EXPECT_NE(fetcher.fetch(request).error.find("timed out"), std::string::npos);

  std::stop_source stop;
  stop.request_stop();
  request.timeout = std::chrono::seconds(60);
  EXPECT_EQ(fetcher.fetch(request, stop.get_token()).error, "cancelled");

  request.peers = {{"not an address", 1}};
  EXPECT_NE(fetcher.fetch(request).error, "");
  request.metainfo = "not bencode";
  EXPECT_NE(fetcher.fetch(request).error, "");
}

// ChunkReader on its own: pad zeros, withdrawal, a missing chunk.
TEST(ChunkReaderTest, ReadsChunkThenZerosAndStopsAfterWithdraw) {
  const fs::path root = fs::temp_directory_path() / ("chunk_reader_test_" + std::to_string(::getpid()));
  fs::remove_all(root);
  ChunkStore store(root);
  const std::string bytes = random_bytes(100, 7);
  const Sha256 id = cache::piece_root({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, kPiece);
  write_file(store.staging_dir("x") / "c", bytes);
  store.adopt(store.staging_dir("x") / "c", id);
  Sha256 absent;
  absent.bytes.fill(0xab);

  ChunkReader reader(store, 1);
  Sha1 key;
  key.bytes.fill(1);
  ASSERT_TRUE(reader.publish(key, {PieceSource{id, 100}, PieceSource{absent, 50}}));
  EXPECT_FALSE(reader.publish(key, {}));
  auto table = reader.find(key);
  ASSERT_TRUE(table);

  std::string out(100, 'x');
  ASSERT_FALSE(reader.read(*table, 0, 50, out));
  EXPECT_EQ(out.substr(0, 50), bytes.substr(50));
  EXPECT_EQ(out.substr(50), std::string(50, '\0'));

  const ReadFailure missing = reader.read(*table, 1, 0, out);
  EXPECT_EQ(missing.error, std::errc::no_such_file_or_directory);
  EXPECT_EQ(missing.stage, ReadStage::open);
  EXPECT_EQ(reader.read_errors(), 1u);

  // Wholly inside the pad: no file is touched.
  ASSERT_FALSE(reader.read(*table, 1, 60, std::span<char>(out).first(10)));

  reader.withdraw(key);
  EXPECT_FALSE(reader.find(key));
  EXPECT_EQ(reader.read(*table, 0, 0, out).error, std::errc::operation_canceled);
  fs::remove_all(root);
}

// Consecutive blocks in one call: each buffer gets its part of the chunk, then pad zeros.
TEST(ChunkReaderTest, ReadsConsecutiveBlocksAcrossTheChunkEnd) {
  const fs::path root = fs::temp_directory_path() / ("chunk_reader_blocks_test_" + std::to_string(::getpid()));
  fs::remove_all(root);
  ChunkStore store(root);
  const std::string bytes = random_bytes(100, 9);
  const Sha256 id = cache::piece_root({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, kPiece);
  write_file(store.staging_dir("x") / "c", bytes);
  store.adopt(store.staging_dir("x") / "c", id);

  ChunkReader reader(store, 1);
  Sha1 key;
  key.bytes.fill(2);
  ASSERT_TRUE(reader.publish(key, {PieceSource{id, 100}}));
  auto table = reader.find(key);
  ASSERT_TRUE(table);

  std::string first(30, 'x'), second(0, 'x'), third(40, 'x'), fourth(20, 'x');
  const std::span<char> blocks[] = {first, second, third, fourth};
  ASSERT_FALSE(reader.read(*table, 0, 10, blocks));
  EXPECT_EQ(first, bytes.substr(10, 30));
  EXPECT_EQ(third, bytes.substr(40, 40));
  EXPECT_EQ(fourth, bytes.substr(80, 20));

  std::string straddling(30, 'x'), past(10, 'x');
  const std::span<char> at_the_end[] = {straddling, past};
  ASSERT_FALSE(reader.read(*table, 0, 80, at_the_end));
  EXPECT_EQ(straddling, bytes.substr(80) + std::string(10, '\0'));
  EXPECT_EQ(past, std::string(10, '\0'));
  EXPECT_EQ(reader.bytes_read(), 130u);
  fs::remove_all(root);
}

// Snapshots that make one info dict share one swarm: it starts with the first and stops with the last.
TEST(SwarmSnapshotsTest, ASharedSwarmStopsWithItsLastSnapshot) {
  SwarmSnapshots swarms;
  Sha1 one, two;
  one.bytes.fill(1);
  two.bytes.fill(2);
  EXPECT_TRUE(swarms.add(one));
  EXPECT_FALSE(swarms.add(one)) << "a second snapshot of the swarm: seeded already";
  EXPECT_TRUE(swarms.add(two));
  EXPECT_FALSE(swarms.remove(one)) << "the other snapshot still makes it";
  EXPECT_TRUE(swarms.remove(one));
  EXPECT_FALSE(swarms.remove(one)) << "gone: nothing more to stop";
  swarms.forget(two);  // its seeding failed
  EXPECT_FALSE(swarms.remove(two));
  EXPECT_TRUE(swarms.add(two));
}
