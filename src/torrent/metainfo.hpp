#pragma once
// The node's torrents, built from the hashes stored at ingest without reading the data again. The
// bytes depend only on the snapshot, the chunk size and the options, so every node holding the same
// snapshot makes the same info dict and joins one swarm. libtorrent's create_torrent lays the files out
// (its order and BEP 47 padding: hybrid by default, v1_only | canonical_files for v1, v2_only for v2)
// and writes them from the stored hashes, so a torrent a libtorrent client makes from the same files
// has the same info-hashes too.
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "torrent/torrent.hpp"

namespace inferllama::torrent {

std::variant<Torrent, TorrentError> build_torrent(std::span<const SnapshotFile> files, const BuildOptions& options);

// magnet:?[xt=urn:btih:<v1>&][xt=urn:btmh:1220<v2>&]dn=<name>&tr=<tracker>...&ws=<web seed>...
std::string magnet_uri(const Torrent& torrent, std::span<const std::string> trackers,
                       std::span<const std::string> web_seeds);

// Reads a v1 or hybrid .torrent (untrusted: another node's answer) in canonical bencoding only. Paths are
// checked to stay inside the torrent (no "..", no empty or absolute parts), sizes and piece counts to
// agree, and libtorrent's torrent_info must accept it.
std::variant<ParsedTorrent, TorrentError> parse_torrent(std::string_view metainfo);

}  // namespace inferllama::torrent
