#pragma once
// The torrent module's value types, shared by the builder (metainfo.*), the seeder (seeder.*) and the
// snapshots' torrents (snapshot_torrents.*, which the HTTP routes see): a snapshot's torrent as bytes, its
// info-hashes, and where each of its pieces lives in the chunk store.
#include <algorithm>
#include <cassert>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "inferllama/digest.hpp"
#include "inferllama/index.hpp"

namespace inferllama::torrent {

// v1: BitTorrent v1 with BEP 47 pad files between files (multi-file) — what aria2 1.36 and
// Transmission 3.00 can use. hybrid: v1 + v2 (BEP 52) in one info dict, for libtorrent 2.x clients.
// v2: BEP 52 alone (no SHA-1 piece hashes, no pad files in the info dict): half the hashes of a hybrid,
// and a swarm of its own, for clients that take v2 torrents and magnets (libtorrent 2.x).
enum class Format { v1, hybrid, v2 };

// One piece as the chunk store holds it: the chunk's `size` bytes, then zeros (padding) up to the
// piece's length. Piece i of a file is chunk i of its blob, so every piece is exactly one chunk.
struct PieceSource {
  Sha256 chunk;
  std::uint32_t size = 0;
};

// A file of the torrent in the order of its pieces; pad files included (`pad`, path ".pad/N"), which a v2
// info dict leaves implied.
struct TorrentFile {
  std::string path;  // relative to the torrent's name, '/'-separated; a single-file torrent's is its name
  std::uint64_t size = 0;
  bool pad = false;
  std::string etag;  // the Hub's etag of a real file, "" for pads
};

struct Torrent {
  std::string metainfo;  // the .torrent file (bencoded)
  std::string info;      // the bencoded info dict (what the info-hashes hash)
  std::optional<Sha1> info_hash_v1;    // v1 and hybrid
  std::optional<Sha256> info_hash_v2;  // hybrid and v2
  std::string name;
  std::uint32_t piece_length = 0;
  std::uint64_t total_size = 0;  // pads included
  std::vector<TorrentFile> files;
  std::vector<PieceSource> pieces;

  // The 20-byte name the seed and the tracker know the torrent by: its v1 info-hash, else (v2 alone)
  // its v2 info-hash truncated, which is what BEP 52 clients announce.
  Sha1 swarm_hash() const {
    if (info_hash_v1) return *info_hash_v1;
    assert(info_hash_v2);  // every format has one of the two
    Sha1 truncated;
    std::copy_n(info_hash_v2->bytes.begin(), truncated.bytes.size(), truncated.bytes.begin());
    return truncated;
  }
};

// A file of a snapshot with the blob the node stored for it.
struct SnapshotFile {
  std::string path;  // '/'-separated, as in the repo
  const BlobEntry* blob = nullptr;
};

struct BuildOptions {
  Format format = Format::v1;
  std::string name;                    // the torrent's name (top-level folder, or the single file's name)
  bool single_file = false;            // exactly one file, no folder, no pad files
  std::vector<std::string> trackers;   // announce URLs, one tier each, in order
  std::vector<std::string> web_seeds;  // BEP 19 url-list
  std::string comment;
  // Reads a stored chunk back. Only blobs indexed before BlobEntry::v2_root existed need it, and only
  // when they are one chunk long (a longer file's root follows from its chunk ids): the migration path
  // for hybrid and v2 torrents of such snapshots. nullopt when the chunk cannot be read.
  std::function<std::optional<std::vector<std::uint8_t>>(const Sha256& chunk)> read_chunk;
};

// Why a snapshot cannot be made a torrent, or why a .torrent from elsewhere is not acceptable.
struct TorrentError {
  std::string message;
};

// What a .torrent file from another node says (see parse_torrent).
struct ParsedTorrent {
  std::string info;  // the bencoded info dict, byte for byte
  Sha1 info_hash_v1;
  std::optional<Sha256> info_hash_v2;  // hybrid only
  std::string name;
  std::uint32_t piece_length = 0;
  std::uint64_t total_size = 0;
  bool single_file = false;
  std::vector<TorrentFile> files;  // v1 order, pads included; etags are unknown ("")
  std::vector<std::string> trackers;
  std::vector<std::string> web_seeds;
};

}  // namespace inferllama::torrent
