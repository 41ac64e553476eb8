// The node's torrents against libtorrent 2.0's own create_torrent on the same files: the info dicts
// must be byte-identical, so a snapshot seeded by the node and one made by a libtorrent client share
// one swarm.
#include <utility>  // before Asio (via libtorrent): Boost 1.74's awaitable.hpp needs std::exchange

#include <gtest/gtest.h>
#include <unistd.h>
#include <libtorrent/bencode.hpp>
#include <libtorrent/create_torrent.hpp>
#include <libtorrent/magnet_uri.hpp>
#include <libtorrent/torrent_info.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "cache/hashing.hpp"
#include "torrent/metainfo.hpp"

namespace inferllama::torrent {
namespace {

namespace fs = std::filesystem;
constexpr std::uint32_t kChunk = 64 * 1024;

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// What the ingest stores for a file (cache/download.cpp): per-chunk hashes, then the file's v2 root.
BlobEntry ingest(const std::string& content, std::uint32_t chunk_size) {
  BlobEntry blob;
  blob.etag = cache::sha256(bytes_of(content)).hex();
  blob.lfs = true;
  blob.size = content.size();
  blob.chunk_size = chunk_size;
  cache::ChunkHashes last;
  for (std::size_t offset = 0; offset < content.size(); offset += chunk_size) {
    const auto chunk = bytes_of(content).subspan(offset, std::min<std::size_t>(chunk_size, content.size() - offset));
    last = cache::hash_chunk(chunk, chunk_size);
    blob.chunks.push_back(ChunkRef{last.root, last.piece_sha1, static_cast<std::uint32_t>(chunk.size())});
  }
  if (blob.chunks.size() == 1) blob.v2_root = last.file_root;
  if (blob.chunks.size() > 1) {
    std::vector<Sha256> layer;
    for (const auto& c : blob.chunks) layer.push_back(c.id);
    blob.v2_root = cache::piece_layer_root(layer, chunk_size);
  }
  if (!blob.chunks.empty()) blob.last_padded_sha1 = last.padded_sha1;
  return blob;
}

Torrent build_or_fail(std::span<const SnapshotFile> files, const BuildOptions& options) {
  auto built = build_torrent(files, options);
  if (auto* e = std::get_if<TorrentError>(&built)) ADD_FAILURE() << e->message;
  return std::get<Torrent>(std::move(built));
}

std::vector<char> generate(lt::create_torrent& ct) {
  std::vector<char> out;
  lt::bencode(std::back_inserter(out), ct.generate());
  return out;
}

lt::torrent_info load(std::string_view metainfo) {
  return lt::torrent_info(lt::span<const char>(metainfo.data(), static_cast<std::ptrdiff_t>(metainfo.size())),
                          lt::from_span);
}

template <class H>
std::string raw(const H& hash) {
  return std::string(hash.data(), hash.size());
}

class MetainfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("inferllama-metainfo-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    std::mt19937_64 random(42);
    // Sizes around every boundary, and names whose part-by-part order differs from their byte order
    // ("sub-x" < "sub.txt" < "sub/" as bytes, but the folder "sub" sorts first), uppercase, UTF-8.
    const std::vector<std::pair<std::string, std::size_t>> layout = {
        {"empty.txt", 0},
        {"one.bin", 1},
        {"small.json", 5000},
        {"exact.bin", kChunk},
        {"exact-plus-one.bin", kChunk + 1},
        {"sub/dir/several.safetensors", 3 * kChunk + 1234},
        {"sub/four.bin", 4 * kChunk},
        {"sub/five.bin", 5 * kChunk - 7},
        {"sub-x.txt", 17},
        {"sub.txt", 16 * 1024},
        {"Upper.md", 20000},
        {"données/é.txt", 300},
        {"zz/empty-too", 0},
    };
    for (const auto& [path, size] : layout) {
      std::string content(size, '\0');
      for (auto& c : content) c = static_cast<char>(random());
      fs::create_directories((base_ / kName / path).parent_path());
      std::ofstream(base_ / kName / path, std::ios::binary) << content;
      contents_.emplace_back(path, content);
    }
    blobs_.reserve(contents_.size());
    for (const auto& [path, content] : contents_) blobs_.push_back(ingest(content, kChunk));
    for (std::size_t i = 0; i < contents_.size(); ++i) files_.push_back(SnapshotFile{contents_[i].first, &blobs_[i]});
  }
  void TearDown() override { fs::remove_all(base_); }

  lt::torrent_info libtorrent_torrent(const fs::path& path, lt::create_flags_t flags) {
    lt::file_storage storage;
    lt::add_files(storage, path.string());
    lt::create_torrent ct(storage, kChunk, flags);
    lt::set_piece_hashes(ct, path.parent_path().string());
    const auto bytes = generate(ct);
    return lt::torrent_info(bytes, lt::from_span);
  }

  // Our file list, as libtorrent reads it back from our .torrent.
  static void expect_same_files(const Torrent& ours, const lt::torrent_info& ti, bool single_file) {
    const lt::file_storage& files = ti.files();
    ASSERT_EQ(files.num_files(), static_cast<int>(ours.files.size()));
    for (lt::file_index_t i{0}; i < files.end_file(); ++i) {
      const auto& f = ours.files[static_cast<std::size_t>(static_cast<int>(i))];
      EXPECT_EQ(files.file_path(i), single_file ? ours.name : ours.name + "/" + f.path);
      EXPECT_EQ(files.file_size(i), static_cast<std::int64_t>(f.size));
      EXPECT_EQ(files.pad_file_at(i), f.pad);
    }
    EXPECT_EQ(ti.num_pieces(), static_cast<int>(ours.pieces.size()));
    EXPECT_EQ(ti.total_size(), static_cast<std::int64_t>(ours.total_size));
  }

  static constexpr const char* kName = "tiny-model";
  fs::path base_;
  std::vector<std::pair<std::string, std::string>> contents_;
  std::vector<BlobEntry> blobs_;
  std::vector<SnapshotFile> files_;
};

TEST_F(MetainfoTest, V1MatchesLibtorrentCanonicalFilesByteForByte) {
  BuildOptions options{.format = Format::v1, .name = kName};
  const Torrent ours = build_or_fail(files_, options);
  const auto theirs =
      libtorrent_torrent(base_ / kName, lt::create_torrent::v1_only | lt::create_torrent::canonical_files);
  EXPECT_EQ(raw(theirs.info_hashes().v1), std::string(ours.info_hash_v1->raw()));
  EXPECT_EQ(std::string(theirs.info_section().data(), static_cast<std::size_t>(theirs.info_section().size())),
            ours.info);
  EXPECT_FALSE(ours.info_hash_v2);

  const auto parsed = load(ours.metainfo);
  EXPECT_EQ(raw(parsed.info_hashes().v1), std::string(ours.info_hash_v1->raw()));
  EXPECT_FALSE(parsed.info_hashes().has_v2());
  expect_same_files(ours, parsed, false);
  // libtorrent's order and padding, spelled out: by path part, a pad after every non-empty file that
  // does not end on a piece boundary (the last one included), none after empty or whole-piece files.
  std::vector<std::string> paths;
  for (const auto& f : ours.files) paths.push_back(f.path);
  const std::vector<std::string> expected = {"Upper.md",
                                             ".pad/45536",
                                             "données/é.txt",
                                             ".pad/65236",
                                             "empty.txt",
                                             "exact-plus-one.bin",
                                             ".pad/65535",
                                             "exact.bin",
                                             "one.bin",
                                             ".pad/65535",
                                             "small.json",
                                             ".pad/60536",
                                             "sub/dir/several.safetensors",
                                             ".pad/64302",
                                             "sub/five.bin",
                                             ".pad/7",
                                             "sub/four.bin",
                                             "sub-x.txt",
                                             ".pad/65519",
                                             "sub.txt",
                                             ".pad/49152",
                                             "zz/empty-too"};
  EXPECT_EQ(paths, expected);
  // Every piece is one chunk: the pieces follow the files, chunk by chunk.
  std::size_t piece = 0;
  for (const auto& f : ours.files) {
    if (f.pad) continue;
    const auto blob = std::find_if(blobs_.begin(), blobs_.end(), [&](const BlobEntry& b) { return b.etag == f.etag; });
    ASSERT_NE(blob, blobs_.end());
    for (const auto& c : blob->chunks) {
      EXPECT_EQ(ours.pieces[piece].chunk, c.id);
      EXPECT_EQ(ours.pieces[piece++].size, c.size);
    }
  }
  EXPECT_EQ(piece, ours.pieces.size());
}

TEST_F(MetainfoTest, HybridMatchesLibtorrentByteForByte) {
  BuildOptions options{.format = Format::hybrid, .name = kName};
  const Torrent ours = build_or_fail(files_, options);
  const auto theirs = libtorrent_torrent(base_ / kName, {});
  ASSERT_TRUE(ours.info_hash_v2);
  EXPECT_EQ(raw(theirs.info_hashes().v1), std::string(ours.info_hash_v1->raw()));
  EXPECT_EQ(raw(theirs.info_hashes().v2), std::string(ours.info_hash_v2->raw()));
  EXPECT_EQ(std::string(theirs.info_section().data(), static_cast<std::size_t>(theirs.info_section().size())),
            ours.info);

  const auto parsed = load(ours.metainfo);
  EXPECT_TRUE(parsed.v2());
  EXPECT_EQ(raw(parsed.info_hashes().v2), std::string(ours.info_hash_v2->raw()));
  expect_same_files(ours, parsed, false);
  // The piece layers of the files longer than one piece made it through libtorrent's checks.
  for (lt::file_index_t i{0}; i < parsed.files().end_file(); ++i) {
    const auto size = parsed.files().file_size(i);
    if (parsed.files().pad_file_at(i) || size <= kChunk) continue;
    const auto layer = parsed.piece_layer(i);
    EXPECT_EQ(layer.size(), (size + kChunk - 1) / kChunk * 32) << parsed.files().file_path(i);
    EXPECT_EQ(raw(parsed.files().root(i)), raw(theirs.files().root(i)));
  }
}

TEST_F(MetainfoTest, V2MatchesLibtorrentByteForByte) {
  BuildOptions options{.format = Format::v2, .name = kName};
  const Torrent ours = build_or_fail(files_, options);
  const auto theirs = libtorrent_torrent(base_ / kName, lt::create_torrent::v2_only);
  EXPECT_FALSE(ours.info_hash_v1);
  ASSERT_TRUE(ours.info_hash_v2);
  EXPECT_EQ(raw(theirs.info_hashes().v2), std::string(ours.info_hash_v2->raw()));
  EXPECT_EQ(std::string(theirs.info_section().data(), static_cast<std::size_t>(theirs.info_section().size())),
            ours.info);
  EXPECT_EQ(ours.info.find("6:pieces"), std::string::npos) << "no SHA-1 piece hashes";
  EXPECT_EQ(ours.info.find(".pad"), std::string::npos) << "the pads are implied by the file tree";
  // Announced (BEP 52) and seeded under its v2 info-hash truncated to 20 bytes.
  EXPECT_EQ(std::string(ours.swarm_hash().raw()), std::string(ours.info_hash_v2->raw().substr(0, 20)));

  const auto parsed = load(ours.metainfo);
  EXPECT_FALSE(parsed.info_hashes().has_v1());
  EXPECT_EQ(raw(parsed.info_hashes().v2), std::string(ours.info_hash_v2->raw()));
  // Pieces fall as in the padded v1 and hybrid torrents: piece i of a file is its chunk i.
  expect_same_files(ours, parsed, false);
  EXPECT_EQ(ours.pieces.size(), build_or_fail(files_, BuildOptions{.format = Format::v1, .name = kName}).pieces.size());
  for (lt::file_index_t i{0}; i < parsed.files().end_file(); ++i) {
    if (parsed.files().pad_file_at(i)) continue;
    EXPECT_EQ(raw(parsed.files().root(i)), raw(theirs.files().root(i))) << parsed.files().file_path(i);
  }
}

TEST_F(MetainfoTest, SingleFileTorrentsMatchLibtorrent) {
  for (const std::string path : {"sub/dir/several.safetensors", "one.bin", "exact.bin", "small.json"}) {
    SCOPED_TRACE(path);
    const auto index = static_cast<std::size_t>(
        std::find_if(files_.begin(), files_.end(), [&](const SnapshotFile& f) { return f.path == path; }) -
        files_.begin());
    const std::string name = fs::path(path).filename().string();
    const SnapshotFile file{path, &blobs_[index]};
    for (const auto format : {Format::v1, Format::hybrid, Format::v2}) {
      BuildOptions options{.format = format, .name = name, .single_file = true};
      const Torrent ours = build_or_fail(std::span(&file, 1), options);
      const lt::create_flags_t flags = format == Format::v1   ? lt::create_torrent::v1_only
                                       : format == Format::v2 ? lt::create_torrent::v2_only
                                                              : lt::create_flags_t{};
      const auto theirs = libtorrent_torrent(base_ / kName / path, flags);
      EXPECT_EQ(ours.info_hash_v1.has_value(), format != Format::v2);
      if (ours.info_hash_v1) {
        EXPECT_EQ(raw(theirs.info_hashes().v1), std::string(ours.info_hash_v1->raw()));
      }
      EXPECT_EQ(ours.info_hash_v2.has_value(), format != Format::v1);
      if (ours.info_hash_v2) {
        EXPECT_EQ(raw(theirs.info_hashes().v2), std::string(ours.info_hash_v2->raw()));
      }
      EXPECT_EQ(std::string(theirs.info_section().data(), static_cast<std::size_t>(theirs.info_section().size())),
                ours.info);
      const auto loaded = load(ours.metainfo);
      if (format == Format::v2 && ours.files.front().size % kChunk != 0) {
        // libtorrent reads a v2 file as padded to its last piece's end: the same pieces, and a pad file.
        EXPECT_EQ(loaded.files().num_files(), 2);
        EXPECT_TRUE(loaded.files().pad_file_at(lt::file_index_t{1}));
        EXPECT_EQ(loaded.num_pieces(), static_cast<int>(ours.pieces.size()));
      } else {
        expect_same_files(ours, loaded, true);
      }
      EXPECT_EQ(ours.files.front().path, name);
    }
  }
}

TEST_F(MetainfoTest, BytesAreDeterministicWhateverTheInputOrder) {
  BuildOptions options{.format = Format::hybrid,
                       .name = kName,
                       .trackers = {"http://node-a:8080/announce", "udp://node-b:6969/announce"},
                       .web_seeds = {"http://node-a:8080/webseed/"},
                       .comment = "acme/tiny-model@0123"};
  const Torrent first = build_or_fail(files_, options);
  auto shuffled = files_;
  std::reverse(shuffled.begin(), shuffled.end());
  const Torrent second = build_or_fail(shuffled, options);
  EXPECT_EQ(first.metainfo, second.metainfo);

  const auto ti = load(first.metainfo);
  ASSERT_EQ(ti.trackers().size(), 2u);
  EXPECT_EQ(ti.trackers()[0].url, options.trackers[0]);
  EXPECT_EQ(ti.trackers()[1].tier, 1);
  ASSERT_EQ(ti.web_seeds().size(), 1u);
  EXPECT_EQ(ti.web_seeds()[0].url, options.web_seeds[0]);
  EXPECT_EQ(ti.comment(), options.comment);
}

TEST_F(MetainfoTest, ParseReadsBackWhatWasBuilt) {
  BuildOptions options{
      .format = Format::hybrid, .name = kName, .trackers = {"http://t/announce"}, .web_seeds = {"http://w/"}};
  const Torrent ours = build_or_fail(files_, options);
  auto parsed = parse_torrent(ours.metainfo);
  ASSERT_TRUE(std::holds_alternative<ParsedTorrent>(parsed)) << std::get<TorrentError>(parsed).message;
  const auto& p = std::get<ParsedTorrent>(parsed);
  EXPECT_EQ(p.info, ours.info);
  EXPECT_EQ(p.info_hash_v1, ours.info_hash_v1);
  EXPECT_EQ(p.info_hash_v2, ours.info_hash_v2);
  EXPECT_EQ(p.name, kName);
  EXPECT_EQ(p.piece_length, kChunk);
  EXPECT_EQ(p.total_size, ours.total_size);
  ASSERT_EQ(p.files.size(), ours.files.size());
  for (std::size_t i = 0; i < p.files.size(); ++i) {
    EXPECT_EQ(p.files[i].path, ours.files[i].path);
    EXPECT_EQ(p.files[i].size, ours.files[i].size);
    EXPECT_EQ(p.files[i].pad, ours.files[i].pad);
  }
  EXPECT_EQ(p.trackers, options.trackers);
  EXPECT_EQ(p.web_seeds, options.web_seeds);
}

TEST_F(MetainfoTest, ParseSurvivesMutatedTorrents) {
  const Torrent ours = build_or_fail(files_, BuildOptions{.format = Format::hybrid, .name = kName});
  std::mt19937 random(7);
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = ours.metainfo;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = random() % bytes.size();
      switch (random() % 3) {
        case 0:
          bytes[at] = static_cast<char>(random());
          break;
        case 1:
          bytes.erase(at, 1 + random() % 8);
          break;
        default:
          bytes.resize(at);
          break;
      }
      if (bytes.empty()) break;
    }
    const auto result = parse_torrent(bytes);
    if (const auto* p = std::get_if<ParsedTorrent>(&result)) {
      for (const auto& f : p->files) {
        for (const auto& part : {std::string(".."), std::string("."), std::string()}) {
          EXPECT_EQ(("/" + f.path + "/").find("/" + part + "/"), std::string::npos) << f.path;
        }
      }
    }
  }
}

TEST_F(MetainfoTest, ParseRejectsUnsafePaths) {
  const std::string piece(20, 'x');
  for (const std::string path : {"2:..", "0:", "3:a/b"}) {
    const std::string info =
        "d5:filesld6:lengthi1e4:pathl" + path + "eee4:name1:n12:piece lengthi16384e6:pieces20:" + piece + "e";
    EXPECT_TRUE(std::holds_alternative<TorrentError>(parse_torrent("d4:info" + info + "e"))) << path;
  }
  EXPECT_TRUE(std::holds_alternative<TorrentError>(
      parse_torrent("d4:infod6:lengthi1e4:name2:..12:piece lengthi16384e6:pieces20:" + piece + "ee")));
  const std::string twice =
      "d4:infod5:filesld6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:aeee4:name1:n"
      "12:piece lengthi16384e6:pieces40:" +
      piece + piece + "ee";
  EXPECT_TRUE(std::holds_alternative<TorrentError>(parse_torrent(twice)));
}

TEST_F(MetainfoTest, MagnetNamesBothHashes) {
  const Torrent ours = build_or_fail(files_, BuildOptions{.format = Format::hybrid, .name = "tiny model"});
  const std::vector<std::string> trackers = {"http://node:8080/announce?x=1&y=2"};
  const std::vector<std::string> seeds = {"http://node:8080/ws/"};
  const std::string uri = magnet_uri(ours, trackers, seeds);
  EXPECT_EQ(
      uri.rfind("magnet:?xt=urn:btih:" + ours.info_hash_v1->hex() + "&xt=urn:btmh:1220" + ours.info_hash_v2->hex() +
                    "&dn=tiny%20model&tr=http%3A%2F%2Fnode%3A8080%2Fannounce%3Fx%3D1%26y%3D2",
                0),
      0u);
  lt::error_code ec;
  const lt::add_torrent_params params = lt::parse_magnet_uri(uri, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(raw(params.info_hashes.v1), std::string(ours.info_hash_v1->raw()));
  EXPECT_EQ(raw(params.info_hashes.v2), std::string(ours.info_hash_v2->raw()));
  EXPECT_EQ(params.name, "tiny model");
  EXPECT_EQ(params.trackers, trackers);
  EXPECT_EQ(params.url_seeds, seeds);
}

TEST_F(MetainfoTest, V2MagnetNamesTheV2HashAlone) {
  const Torrent ours = build_or_fail(files_, BuildOptions{.format = Format::v2, .name = kName});
  const std::vector<std::string> trackers = {"http://node:8080/announce"};
  const std::string uri = magnet_uri(ours, trackers, {});
  EXPECT_EQ(uri, "magnet:?xt=urn:btmh:1220" + ours.info_hash_v2->hex() +
                     "&dn=tiny-model&tr=http%3A%2F%2Fnode%3A8080%2Fannounce");
  lt::error_code ec;
  const lt::add_torrent_params params = lt::parse_magnet_uri(uri, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(params.info_hashes.has_v1());
  EXPECT_EQ(raw(params.info_hashes.v2), std::string(ours.info_hash_v2->raw()));
  EXPECT_EQ(raw(params.info_hashes.get_best()), std::string(ours.swarm_hash().raw()));
}

TEST_F(MetainfoTest, OldBlobsWithoutV2RootAreReadBackOnce) {
  const Torrent expected = build_or_fail(files_, BuildOptions{.format = Format::hybrid, .name = kName});
  auto old_blobs = blobs_;
  for (auto& b : old_blobs) b.v2_root.reset();
  std::vector<SnapshotFile> old_files;
  for (std::size_t i = 0; i < files_.size(); ++i) old_files.push_back(SnapshotFile{files_[i].path, &old_blobs[i]});

  BuildOptions options{.format = Format::hybrid, .name = kName};
  const auto without_reader = build_torrent(old_files, options);
  ASSERT_TRUE(std::holds_alternative<TorrentError>(without_reader));
  EXPECT_NE(std::get<TorrentError>(without_reader).message.find("v2 pieces root"), std::string::npos);

  int reads = 0;
  options.read_chunk = [&](const Sha256& id) -> std::optional<std::vector<std::uint8_t>> {
    ++reads;
    for (std::size_t i = 0; i < blobs_.size(); ++i) {
      if (blobs_[i].chunks.size() == 1 && blobs_[i].chunks[0].id == id) {
        const auto bytes = bytes_of(contents_[i].second);
        return std::vector<std::uint8_t>(bytes.begin(), bytes.end());
      }
    }
    return std::nullopt;
  };
  EXPECT_EQ(build_or_fail(old_files, options).info_hash_v2, expected.info_hash_v2);
  // Only the files shorter than one piece: a longer file's root follows from its chunk ids.
  EXPECT_EQ(reads, 6);
  // v1 torrents never need the v2 roots.
  options.read_chunk = nullptr;
  EXPECT_TRUE(
      std::holds_alternative<Torrent>(build_torrent(old_files, BuildOptions{.format = Format::v1, .name = kName})));
}

TEST_F(MetainfoTest, RejectsWhatCannotBeATorrent) {
  auto error_of = [](std::span<const SnapshotFile> files, const BuildOptions& options) {
    auto built = build_torrent(files, options);
    return std::holds_alternative<TorrentError>(built) ? std::get<TorrentError>(built).message : std::string();
  };
  BuildOptions options{.format = Format::v1, .name = kName};
  BlobEntry other_size = ingest("abc", 2 * kChunk);
  std::vector<SnapshotFile> mixed = {files_[1], SnapshotFile{"b.bin", &other_size}};
  EXPECT_NE(error_of(mixed, options).find("mixed chunk sizes"), std::string::npos);
  std::vector<SnapshotFile> empty_only = {files_[0]};
  EXPECT_NE(error_of(empty_only, options).find("empty"), std::string::npos);
  std::vector<SnapshotFile> collide = {SnapshotFile{"a", &blobs_[1]}, SnapshotFile{"a/b", &blobs_[2]}};
  EXPECT_NE(error_of(collide, options).find("collides"), std::string::npos);
  std::vector<SnapshotFile> twice = {SnapshotFile{"a", &blobs_[1]}, SnapshotFile{"a", &blobs_[2]}};
  EXPECT_NE(error_of(twice, options).find("collides"), std::string::npos);
  for (const std::string bad : {"../x", "/abs", "a//b", "a/./b", ""}) {
    std::vector<SnapshotFile> one = {SnapshotFile{bad, &blobs_[1]}};
    EXPECT_NE(error_of(one, options).find("invalid path"), std::string::npos) << bad;
  }
  BlobEntry truncated = blobs_[5];
  truncated.chunks.pop_back();
  std::vector<SnapshotFile> short_chunks = {SnapshotFile{"x", &truncated}};
  EXPECT_NE(error_of(short_chunks, options).find("do not add up"), std::string::npos);
  EXPECT_FALSE(error_of(files_, BuildOptions{.format = Format::v1, .name = "a/b"}).empty());
  EXPECT_FALSE(error_of(files_, BuildOptions{.format = Format::v1, .name = kName, .single_file = true}).empty());
}

// Torrents built from fixed synthetic hashes (no data behind them), pinned by their info-hashes and the
// SHA-256 of the whole .torrent: whatever builds them, every node must keep making these very bytes.
namespace golden {

constexpr std::uint32_t kPiece = 16 * 1024;

// Deterministic stand-in hash bytes, distinct per (file, chunk, kind).
template <class H>
H filled(std::uint8_t file, std::uint8_t chunk, std::uint8_t kind) {
  H h;
  for (std::size_t i = 0; i < H::size; ++i) h.bytes[i] = static_cast<std::uint8_t>(file * 37 + chunk * 11 + kind * 5 + i);
  return h;
}

BlobEntry blob(std::uint8_t file, std::uint64_t size) {
  BlobEntry b;
  b.etag = "etag-" + std::to_string(file);
  b.size = size;
  b.chunk_size = kPiece;
  for (std::uint64_t offset = 0, i = 0; offset < size; offset += kPiece, ++i) {
    const auto c = static_cast<std::uint8_t>(i);
    b.chunks.push_back(ChunkRef{filled<Sha256>(file, c, 1), filled<Sha1>(file, c, 2),
                                static_cast<std::uint32_t>(std::min<std::uint64_t>(kPiece, size - offset))});
  }
  if (size > 0) b.last_padded_sha1 = filled<Sha1>(file, 0, 3);
  // A file of exactly one chunk goes without its stored root: the builder takes the chunk's own.
  if (size > 0 && size != kPiece) b.v2_root = filled<Sha256>(file, 0, 4);
  return b;
}

struct Case {
  const char* label;
  std::vector<std::pair<std::string, std::uint64_t>> files;
  BuildOptions options;
  const char* v1;
  const char* v2;  // "" for v1 torrents
  const char* metainfo_sha256;
};

TEST(MetainfoGolden, InfoHashesAndBytesStayTheSame) {
  const std::vector<std::pair<std::string, std::uint64_t>> layout = {
      {"config.json", 5000},
      {"empty.txt", 0},
      {"exact.bin", kPiece},
      {"model/weights.safetensors", 3 * kPiece + 100},
      {"données/é.txt", 300},
      {"sub/dir/deep.bin", 2 * kPiece},
      {"sub/dir/deeper/last.bin", 17},
      {"zz/empty-too", 0},
  };
  const std::vector<Case> cases = {
      {"v1 multi-file with pads", layout,
       BuildOptions{.format = Format::v1,
                    .name = "tiny-model",
                    .trackers = {"http://node-a:8080/announce", "udp://node-b:6969/announce"},
                    .web_seeds = {"http://node-a:8080/webseed/"},
                    .comment = "acme/tiny-model@0123"},
       "37671b0eef020dea55998d7a8e3727245be79691", "",
       "97663bb0f752ab7876646ae6f0260781f070a9fefb46ccbb5b30b2214e80cbb2"},
      {"hybrid multi-file", layout,
       BuildOptions{.format = Format::hybrid,
                    .name = "tiny-model",
                    .trackers = {"http://node-a:8080/announce"},
                    .web_seeds = {"http://node-a:8080/webseed/", "http://node-c/ws/"}},
       "344ef9eb62aed712256cf6c1267e4d7d9e1db716", "783a29940c9d21af217eabd773d45b87e94e494df73b85eed31004c1c555f4bc",
       "658c165ca7b6c209833cd944546ec44688a3b9fb599155354e779d113a690404"},
      {"hybrid without links, non-ASCII name", layout, BuildOptions{.format = Format::hybrid, .name = "modèle-ü"},
       "4ce086f199df025ccab9067663445afa0392d6b2", "392fe40c2befb64fcaef2a8054e9c1fe239e05af31646f1cbcaf20e652449c81",
       "fef4aa3ed196f9cfeee31b3a0f2bb1dfe3eb7a08d811451e27079a25841f10c5"},
      {"v1 single file",
       {{"model/weights.safetensors", 3 * kPiece + 100}},
       BuildOptions{
           .format = Format::v1, .name = "weights.safetensors", .single_file = true, .trackers = {"http://t/a"}},
       "33d8c433a7e3871b881f9df62d61de0141c35b32",
       "",
       "143a5c9f2493468320705e6363627c37eaa9b176191c641b177c4779a1a2eeb4"},
      {"hybrid single file",
       {{"model/weights.safetensors", 3 * kPiece + 100}},
       BuildOptions{.format = Format::hybrid, .name = "weights.safetensors", .single_file = true},
       "c1ac04a867e7c8d22f7af8efae77fe6a90b1f842",
       "28428085f7b645c899fd897c2a319610d0e5b35b71ca1552e39500e1e6403793",
       "3fbfe4e0b8ab979b94d937a2784a35c37ce6b2dc8df347fddc8ec41089a0041e"},
      {"hybrid single file of exactly one chunk",
       {{"exact.bin", kPiece}},
       BuildOptions{.format = Format::hybrid, .name = "exact.bin", .single_file = true, .web_seeds = {"http://w/"}},
       "e7d0a481a1b086e528161ab697212051acf99cfa",
       "dc7fb557704821a7f55d092386373623df211e40efc3dbe914937e9322d44389",
       "4f39e573013cb71be653cd8a51326f58170db5a65d56fb4c1bdd13fd0b3672da"},
      {"v2 multi-file", layout,
       BuildOptions{.format = Format::v2,
                    .name = "tiny-model",
                    .trackers = {"http://node-a:8080/announce"},
                    .web_seeds = {"http://node-a:8080/webseed/"}},
       "", "634ec3fdec91d3ba48e583070632d8575f13bf1ddd783aa6b4f80c1dc20c1553",
       "b95e3ab5b6394c5fc7770a0e08e08ab64fa2edd9df23c0ff89301526f6f9fbd5"},
      {"v2 single file",
       {{"model/weights.safetensors", 3 * kPiece + 100}},
       BuildOptions{.format = Format::v2, .name = "weights.safetensors", .single_file = true},
       "",
       "42220c9edc706b70bba82e90007fa197f4c884eb6eea0b17fefdddf25b7c42bb",
       "72884db9745bd4195a4998b2556e9a7ac073309c63c53f6d1f81f3a724e49c7b"},
      {"v1 folder of one short file",
       {{"a/b/c.txt", 10}},
       BuildOptions{.format = Format::v1, .name = "one"},
       "ff5c9341ba77739d0630e940ca40e4f919a021b7",
       "",
       "bafb69cc06de7941fa244589f542496a497f39b061a6ccf76d920c3e85e236d6"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    std::vector<BlobEntry> blobs;
    blobs.reserve(c.files.size());
    std::vector<SnapshotFile> files;
    for (std::size_t i = 0; i < c.files.size(); ++i) {
      blobs.push_back(blob(static_cast<std::uint8_t>(i + 1), c.files[i].second));
      files.push_back(SnapshotFile{c.files[i].first, &blobs.back()});
    }
    const Torrent t = build_or_fail(files, c.options);
    EXPECT_EQ(t.info_hash_v1 ? t.info_hash_v1->hex() : "", c.v1);
    EXPECT_EQ(t.info_hash_v2 ? t.info_hash_v2->hex() : "", c.v2);
    EXPECT_EQ(cache::sha256(t.metainfo).hex(), c.metainfo_sha256);
  }
}

// How long a large snapshot takes to become a torrent (printed, not asserted: machines differ).
TEST(MetainfoGolden, LargeSnapshotBuildTime) {
  constexpr int kFiles = 2000;
  constexpr int kChunksPerFile = 50;  // 100,000 pieces in all
  std::vector<BlobEntry> blobs;
  blobs.reserve(kFiles);
  std::vector<SnapshotFile> files;
  for (int i = 0; i < kFiles; ++i) {
    blobs.push_back(blob(static_cast<std::uint8_t>(i), std::uint64_t{kChunksPerFile} * kPiece - 100));
    files.push_back(SnapshotFile{"shard-" + std::to_string(i / 100) + "/part-" + std::to_string(i) + ".bin", &blobs.back()});
  }
  for (const auto format : {Format::v1, Format::hybrid}) {
    const auto start = std::chrono::steady_clock::now();
    const Torrent t = build_or_fail(files, BuildOptions{.format = format, .name = "large", .web_seeds = {"http://w/"}});
    const auto built = std::chrono::steady_clock::now();
    const auto parsed = parse_torrent(t.metainfo);
    const auto done = std::chrono::steady_clock::now();
    EXPECT_EQ(t.pieces.size(), std::size_t{kFiles} * kChunksPerFile);
    ASSERT_TRUE(std::holds_alternative<ParsedTorrent>(parsed)) << std::get<TorrentError>(parsed).message;
    EXPECT_EQ(std::get<ParsedTorrent>(parsed).info_hash_v1, t.info_hash_v1);
    std::printf("%s torrent of %d files, %zu pieces, %zu bytes: built in %.1f ms, parsed in %.1f ms\n",
                format == Format::v1 ? "v1" : "hybrid", kFiles, t.pieces.size(), t.metainfo.size(),
                std::chrono::duration<double, std::milli>(built - start).count(),
                std::chrono::duration<double, std::milli>(done - built).count());
  }
}

}  // namespace golden

TEST(MetainfoParse, RefusesHostileAndNonCanonicalBencoding) {
  const std::vector<std::string> bad = {"",
                                        "i",
                                        "ie",
                                        "i-0e",
                                        "i01e",
                                        "i+1e",
                                        "i1x2e",
                                        "i9223372036854775808e",
                                        "01:a",
                                        "2:a",
                                        "-1:a",
                                        "9999999999999999999999:a",
                                        "l",
                                        "d",
                                        "d1:a",
                                        "d1:ai1e",
                                        "di1ei2ee",
                                        "d1:b0:1:a0:e",
                                        "d1:a0:1:a0:e",
                                        "i1ei2e",
                                        "x",
                                        "le garbage",
                                        "de",
                                        "d4:infoi1ee",
                                        std::string("\0", 1),
                                        std::string(100000, 'l') + std::string(100000, 'e'),
                                        "d4:info" + std::string(70, 'l') + std::string(70, 'e') + "e"};
  for (const auto& input : bad) {
    EXPECT_TRUE(std::holds_alternative<TorrentError>(parse_torrent(input))) << input.substr(0, 40);
  }
  // A good torrent made non-canonical: its info dict would hash differently once re-encoded.
  const std::string piece(20, 'x');
  const std::string good = "d4:infod6:lengthi1e4:name1:n12:piece lengthi16384e6:pieces20:" + piece + "ee";
  ASSERT_TRUE(std::holds_alternative<ParsedTorrent>(parse_torrent(good)));
  for (const std::string& variant :
       {"d4:infod4:name1:n6:lengthi1e12:piece lengthi16384e6:pieces20:" + piece + "ee",  // keys out of order
        "d4:infod6:lengthi01e4:name1:n12:piece lengthi16384e6:pieces20:" + piece + "ee",  // leading zero
        "d4:infod6:lengthi1e6:lengthi1e4:name1:n12:piece lengthi16384e6:pieces20:" + piece + "ee",  // twice
        good + "e"}) {
    EXPECT_TRUE(std::holds_alternative<TorrentError>(parse_torrent(variant))) << variant;
  }
  std::mt19937 random(1);
  for (int round = 0; round < 20000; ++round) {
    std::string input(random() % 24, '\0');
    for (auto& c : input) c = "ilde0123456789:-x"[random() % 17];
    EXPECT_TRUE(std::holds_alternative<TorrentError>(parse_torrent(input))) << input;
  }
}

}  // namespace
}  // namespace inferllama::torrent
