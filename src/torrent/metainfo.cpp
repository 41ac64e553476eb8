#include "torrent/metainfo.hpp"

#include <utility>  // before Asio (via libtorrent): Boost 1.74's awaitable.hpp needs std::exchange

#include <libtorrent/bdecode.hpp>
#include <libtorrent/bencode.hpp>
#include <libtorrent/create_torrent.hpp>
#include <libtorrent/torrent_info.hpp>

#include <algorithm>
#include <bit>
#include <iterator>
#include <set>
#include <unordered_map>

#include "cache/hashing.hpp"
#include "util/url.hpp"

namespace inferllama::torrent {
namespace {

constexpr std::uint32_t kMinPieceLength = 16 * 1024;  // one BEP 52 block
constexpr std::uint64_t kMaxPieceLength = std::uint64_t{1} << 30;
// Far above any real file, low enough that sums of a few million of them cannot overflow.
constexpr std::int64_t kMaxFileSize = std::int64_t{1} << 50;

TorrentError error(std::string message) {
  return TorrentError{std::move(message)};
}

// A file name part that stays where it is put on disk.
bool valid_component(std::string_view part) {
  return !part.empty() && part != "." && part != ".." && part.find('/') == std::string_view::npos &&
         part.find('\0') == std::string_view::npos;
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

struct Entry {
  std::vector<std::string_view> parts;
  const SnapshotFile* file = nullptr;
};

// A blob's chunks must tile it exactly: piece i of the torrent is chunk i, bytes for bytes.
bool chunks_tile_blob(const BlobEntry& blob, std::uint32_t piece_length) {
  const std::uint64_t count = (blob.size + piece_length - 1) / piece_length;
  if (blob.chunks.size() != count) return false;
  for (std::size_t i = 0; i < blob.chunks.size(); ++i) {
    const std::uint64_t expected = std::min<std::uint64_t>(piece_length, blob.size - i * std::uint64_t{piece_length});
    if (blob.chunks[i].size != expected) return false;
  }
  return true;
}

// The `pieces root` of a file of one chunk (libtorrent takes a one-piece file's only piece-layer hash as
// its root; a longer file's root it computes from the chunk ids).
std::variant<Sha256, TorrentError> one_chunk_root(const SnapshotFile& file, const BuildOptions& options,
                                                  std::uint32_t piece_length) {
  const BlobEntry& blob = *file.blob;
  if (blob.v2_root) return *blob.v2_root;
  const ChunkRef& chunk = blob.chunks.front();
  if (chunk.size == piece_length) return chunk.id;  // a whole piece: the file's tree is the chunk's
  if (!options.read_chunk) {
    return error(file.path + ": stored without its v2 pieces root, and no way to read its chunk back was given");
  }
  auto bytes = options.read_chunk(chunk.id);
  if (!bytes || bytes->size() != chunk.size) return error(file.path + ": cannot read chunk " + chunk.id.hex());
  const cache::ChunkHashes hashes = cache::hash_chunk(*bytes, piece_length);
  if (hashes.root != chunk.id) return error(file.path + ": chunk " + chunk.id.hex() + " does not match its stored bytes");
  return hashes.file_root;
}

lt::sha1_hash lt_hash(const Sha1& h) {
  return lt::sha1_hash(h.raw().data());
}
lt::sha256_hash lt_hash(const Sha256& h) {
  return lt::sha256_hash(h.raw().data());
}

// libtorrent writes a single tracker without "announce-list", a single web seed as a string and always a
// "creation date"; the node's torrents have always had one tier per tracker, a list of web seeds and no
// date, so that their bytes depend only on the snapshot and the options.
void put_node_links(lt::entry& metainfo, const BuildOptions& options) {
  auto& dict = metainfo.dict();
  dict.erase("creation date");
  if (!options.trackers.empty()) {
    dict["announce"] = options.trackers.front();
    lt::entry::list_type tiers;
    for (const auto& tracker : options.trackers) tiers.emplace_back(lt::entry::list_type{lt::entry(tracker)});
    dict["announce-list"] = std::move(tiers);
  }
  if (!options.web_seeds.empty()) {
    lt::entry::list_type seeds(options.web_seeds.begin(), options.web_seeds.end());
    dict["url-list"] = std::move(seeds);
  }
}

}  // namespace

std::variant<Torrent, TorrentError> build_torrent(std::span<const SnapshotFile> files, const BuildOptions& options) {
  if (files.empty()) return error("a torrent needs at least one file");
  if (!valid_component(options.name)) return error("invalid torrent name \"" + options.name + "\"");
  if (options.single_file && files.size() != 1) {
    return error("a single-file torrent has exactly one file, not " + std::to_string(files.size()));
  }

  std::uint32_t piece_length = 0;
  std::string piece_length_from;
  for (const auto& f : files) {
    if (f.blob == nullptr) return error(f.path + ": not stored");
    if (f.blob->size == 0) continue;
    if (piece_length == 0) {
      piece_length = f.blob->chunk_size;
      piece_length_from = f.path;
    } else if (f.blob->chunk_size != piece_length) {
      return error("mixed chunk sizes: " + piece_length_from + " has " + std::to_string(piece_length) + ", " + f.path +
                   " has " + std::to_string(f.blob->chunk_size));
    }
  }
  if (piece_length == 0) return error("every file is empty: there is nothing to seed");
  if (!std::has_single_bit(piece_length) || piece_length < kMinPieceLength) {
    return error("chunk size " + std::to_string(piece_length) + " is not a power of two of at least 16 KiB");
  }
  if (piece_length > kMaxPieceLength) return error("chunk size " + std::to_string(piece_length) + " is above 1 GiB");

  std::vector<Entry> entries;
  entries.reserve(files.size());
  for (const auto& f : files) {
    Entry e{split_path(f.path), &f};
    if (!std::all_of(e.parts.begin(), e.parts.end(), valid_component)) return error("invalid path \"" + f.path + "\"");
    if (!chunks_tile_blob(*f.blob, piece_length)) return error(f.path + ": its chunks do not add up to its size");
    entries.push_back(std::move(e));
  }
  // libtorrent does not refuse a path given twice, nor (in a v1 torrent) a file that is also a folder.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.parts < b.parts; });
  for (std::size_t i = 1; i < entries.size(); ++i) {
    const auto& previous = entries[i - 1].parts;
    const auto& next = entries[i].parts;
    // Sorted, a file that is also a folder of another comes right before the first file inside it.
    if (next.size() >= previous.size() && std::equal(previous.begin(), previous.end(), next.begin())) {
      return error("path \"" + entries[i].file->path + "\" collides with \"" + entries[i - 1].file->path + "\"");
    }
  }

  const bool v1 = options.format != Format::v2;
  const bool v2 = options.format != Format::v1;
  // libtorrent orders the files part by part and puts a BEP 47 pad after every non-empty file that does
  // not end on a piece boundary, the last one included, unless the torrent has a single file. A v2 info
  // dict leaves those pads implied (each file starts a piece), but the pieces fall the same way.
  lt::file_storage storage;
  std::unordered_map<std::string, const SnapshotFile*> by_storage_path;
  for (const auto& e : entries) {
    std::string path = options.single_file ? options.name : options.name + "/" + e.file->path;
    storage.add_file(path, static_cast<std::int64_t>(e.file->blob->size));
    by_storage_path.emplace(std::move(path), e.file);
  }

  Torrent t;
  t.name = options.name;
  t.piece_length = piece_length;
  try {
    const lt::create_flags_t flags = !v2   ? lt::create_torrent::v1_only | lt::create_torrent::canonical_files
                                     : !v1 ? lt::create_torrent::v2_only
                                           : lt::create_flags_t{};
    lt::create_torrent creator(storage, static_cast<int>(piece_length), flags);
    const lt::file_storage& layout = creator.files();
    lt::piece_index_t piece{0};
    const BlobEntry* previous = nullptr;  // the file a pad file follows
    for (const lt::file_index_t i : layout.file_range()) {
      if (layout.pad_file_at(i)) {
        const auto pad = static_cast<std::uint64_t>(layout.file_size(i));
        t.files.push_back(TorrentFile{".pad/" + std::to_string(pad), pad, true, ""});
        if (previous == nullptr) return error("libtorrent put a pad file first");
        // The last piece of the file before it is hashed with these zeros.
        if (v1) creator.set_hash(lt::piece_index_t(static_cast<int>(piece) - 1), lt_hash(previous->last_padded_sha1));
        continue;
      }
      const SnapshotFile& file = *by_storage_path.at(layout.file_path(i));
      const BlobEntry& blob = *file.blob;
      previous = &blob;
      t.files.push_back(TorrentFile{options.single_file ? t.name : file.path, blob.size, false, blob.etag});
      for (const auto& c : blob.chunks) {
        // set_hash does not check its index in a release build of libtorrent.
        if (piece >= creator.end_piece()) return error("libtorrent lays out fewer pieces than the chunks");
        t.pieces.push_back(PieceSource{c.id, c.size});
        if (v1) creator.set_hash(piece, lt_hash(c.piece_sha1));
        ++piece;
      }
      if (!v2 || blob.size == 0) continue;
      if (blob.chunks.size() == 1) {
        auto root = one_chunk_root(file, options, piece_length);
        if (auto* failed = std::get_if<TorrentError>(&root)) return std::move(*failed);
        creator.set_hash2(i, 0, lt_hash(std::get<Sha256>(root)));
        continue;
      }
      for (std::size_t k = 0; k < blob.chunks.size(); ++k) {
        creator.set_hash2(i, static_cast<lt::piece_index_t::diff_type>(k), lt_hash(blob.chunks[k].id));
      }
    }
    creator.set_creator("InferLlama");
    if (!options.comment.empty()) creator.set_comment(options.comment.c_str());
    lt::entry metainfo = creator.generate();
    lt::entry& info = metainfo["info"];
    // generate() silently leaves out a version whose hashes are incomplete.
    if (v1 != (info.find_key("pieces") != nullptr) || v2 != (info.find_key("file tree") != nullptr)) {
      return error("the torrent's hashes are incomplete");
    }
    lt::bencode(std::back_inserter(t.info), info);
    info = lt::entry::preformatted_type(t.info.begin(), t.info.end());
    put_node_links(metainfo, options);
    lt::bencode(std::back_inserter(t.metainfo), metainfo);
  } catch (const std::exception& e) {
    return error(std::string("libtorrent cannot make the torrent: ") + e.what());
  }
  for (const auto& f : t.files) t.total_size += f.size;
  if (v1) t.info_hash_v1 = cache::sha1(t.info);
  if (v2) t.info_hash_v2 = cache::sha256(t.info);
  return t;
}

// Hand-written rather than lt::make_magnet_uri: libtorrent escapes with lowercase hex digits and leaves
// "!*()" as they are, so its links would differ from the ones this node has always given out.
std::string magnet_uri(const Torrent& torrent, std::span<const std::string> trackers,
                       std::span<const std::string> web_seeds) {
  std::string uri = "magnet:?";
  if (torrent.info_hash_v1) uri += "xt=urn:btih:" + torrent.info_hash_v1->hex() + "&";
  // A multihash: 0x12 names SHA-256, 0x20 its 32 bytes.
  if (torrent.info_hash_v2) uri += "xt=urn:btmh:1220" + torrent.info_hash_v2->hex() + "&";
  uri += "dn=" + url::encode(torrent.name);
  for (const auto& tracker : trackers) uri += "&tr=" + url::encode(tracker);
  for (const auto& seed : web_seeds) uri += "&ws=" + url::encode(seed);
  return uri;
}

namespace {

// libtorrent 2.0's string_view is Boost's.
std::string_view text_of(const lt::bdecode_node& node) {
  const lt::string_view text = node.string_value();
  return {text.data(), text.size()};
}

std::optional<std::int64_t> integer_at(const lt::bdecode_node& dict, const char* key) {
  const lt::bdecode_node v = dict.dict_find_int(key);
  if (!v) return std::nullopt;
  return v.int_value();
}

std::optional<std::string_view> string_at(const lt::bdecode_node& dict, const char* key) {
  const lt::bdecode_node v = dict.dict_find_string(key);
  if (!v) return std::nullopt;
  return text_of(v);
}

// The v2 file tree's files in dictionary order: (path, length).
bool walk_file_tree(const lt::bdecode_node& folder, std::string& prefix,
                    std::vector<std::pair<std::string, std::int64_t>>& out) {
  for (int i = 0; i < folder.dict_size(); ++i) {
    const auto [key, node] = folder.dict_at(i);
    const std::string_view name(key.data(), key.size());
    if (node.type() != lt::bdecode_node::dict_t) return false;
    if (name.empty()) {
      auto length = integer_at(node, "length");
      if (!length || prefix.empty()) return false;
      out.emplace_back(prefix.substr(0, prefix.size() - 1), *length);
      continue;
    }
    if (!valid_component(name)) return false;
    const std::size_t mark = prefix.size();
    prefix.append(name).push_back('/');
    if (!walk_file_tree(node, prefix, out)) return false;
    prefix.resize(mark);
  }
  return true;
}

// Each URL string of a list (an announce-list's tier, a url-list); nothing for anything else.
void append_strings(const lt::bdecode_node& list, std::vector<std::string>& out) {
  if (list.type() != lt::bdecode_node::list_t) return;
  for (int i = 0; i < list.list_size(); ++i) {
    if (const lt::bdecode_node url = list.list_at(i); url.type() == lt::bdecode_node::string_t) {
      out.emplace_back(text_of(url));
    }
  }
}

}  // namespace

std::variant<ParsedTorrent, TorrentError> parse_torrent(std::string_view metainfo) {
  lt::load_torrent_limits limits;
  limits.max_decode_depth = 64;  // deep enough for the file trees of deeply nested repos
  lt::error_code ec;
  int error_at = 0;
  const lt::bdecode_node root = lt::bdecode(lt::span<const char>(metainfo.data(), static_cast<std::ptrdiff_t>(metainfo.size())), ec,
                                            &error_at, limits.max_decode_depth, limits.max_decode_tokens);
  if (ec) return error("not a bencoded torrent: " + ec.message() + " at byte " + std::to_string(error_at));
  // Only canonical bencoding (sorted unique keys, no leading zeros, nothing after the end), which is
  // what re-encoding gives back unchanged: every client then hashes the info dict this node hashes,
  // and the mirror can rewrite the links around it without touching its bytes.
  std::string canonical;
  lt::bencode(std::back_inserter(canonical), lt::entry(root));
  if (canonical != metainfo) return error("not a bencoded torrent: not in canonical form");
  if (root.type() != lt::bdecode_node::dict_t) return error("no info dictionary");
  const lt::bdecode_node info = root.dict_find_dict("info");
  if (!info) return error("no info dictionary");

  ParsedTorrent t;
  const auto name = string_at(info, "name");
  if (!name || !valid_component(*name)) return error("missing or unsafe name");
  t.name = std::string(*name);
  const auto piece_length = integer_at(info, "piece length");
  if (!piece_length || *piece_length < kMinPieceLength || *piece_length > static_cast<std::int64_t>(kMaxPieceLength) ||
      !std::has_single_bit(static_cast<std::uint64_t>(*piece_length))) {
    return error("piece length is not a power of two between 16 KiB and 1 GiB");
  }
  t.piece_length = static_cast<std::uint32_t>(*piece_length);
  const auto pieces = string_at(info, "pieces");
  if (!pieces || pieces->size() % Sha1::size != 0) return error("missing or malformed pieces");

  // The paths come from the info dict as written: libtorrent would rename unsafe or repeated ones where
  // the node refuses them.
  auto add_file = [&](std::string path, std::int64_t length, bool pad) -> bool {
    // Each file and the whole torrent stay far from 64-bit overflow (2^50 bytes a file, 2^60 in all).
    if (length < 0 || length > kMaxFileSize) return false;
    if (t.total_size + static_cast<std::uint64_t>(length) > (std::uint64_t{1} << 60)) return false;
    t.files.push_back(TorrentFile{std::move(path), static_cast<std::uint64_t>(length), pad, ""});
    t.total_size += static_cast<std::uint64_t>(length);
    return true;
  };
  if (const lt::bdecode_node files = info.dict_find("files")) {
    if (files.type() != lt::bdecode_node::list_t || files.list_size() == 0) return error("files is not a list of files");
    for (int i = 0; i < files.list_size(); ++i) {
      const lt::bdecode_node f = files.list_at(i);
      const auto length = f.type() == lt::bdecode_node::dict_t ? integer_at(f, "length") : std::nullopt;
      const lt::bdecode_node path = f.type() == lt::bdecode_node::dict_t ? f.dict_find_list("path") : lt::bdecode_node();
      if (!length || !path || path.list_size() == 0) return error("a file without length or path");
      std::string joined;
      for (int k = 0; k < path.list_size(); ++k) {
        const lt::bdecode_node part = path.list_at(k);
        if (part.type() != lt::bdecode_node::string_t || !valid_component(text_of(part))) {
          return error("unsafe file path");
        }
        if (!joined.empty()) joined.push_back('/');
        joined.append(text_of(part));
      }
      const auto attr = string_at(f, "attr");
      const bool pad = attr && attr->find('p') != std::string_view::npos;
      if (!add_file(std::move(joined), *length, pad)) return error("file length out of range");
    }
  } else if (const auto length = integer_at(info, "length")) {
    t.single_file = true;
    if (!add_file(t.name, *length, false)) return error("file length out of range");
  } else {
    return error("neither files nor length");
  }
  std::set<std::string_view> paths;
  for (const auto& f : t.files) {
    if (!f.pad && !paths.insert(f.path).second) return error("file " + f.path + " is listed twice");
  }
  const std::uint64_t piece_count = (t.total_size + t.piece_length - 1) / t.piece_length;
  if (pieces->size() / Sha1::size != piece_count) return error("piece count does not match the files' sizes");

  const bool v2 = static_cast<bool>(info.dict_find("meta version"));
  if (v2) {
    if (integer_at(info, "meta version") != 2) return error("unknown meta version");
    const lt::bdecode_node tree = info.dict_find_dict("file tree");
    std::vector<std::pair<std::string, std::int64_t>> v2_files;
    std::string prefix;
    if (!tree || !walk_file_tree(tree, prefix, v2_files)) return error("malformed file tree");
    // A hybrid torrent describes the same files twice; clients trust either, so both must agree.
    std::vector<std::pair<std::string, std::int64_t>> v1_files;
    for (const auto& f : t.files) {
      if (!f.pad) v1_files.emplace_back(t.single_file ? t.name : f.path, static_cast<std::int64_t>(f.size));
    }
    if (v1_files != v2_files) return error("the v1 and v2 file lists disagree");
  }

  // What libtorrent checks besides (the piece layers against the files' roots, among others), and the
  // info-hashes over the info dict's own bytes.
  try {
    const lt::torrent_info checked(root, limits);
    const auto section = checked.info_section();
    t.info.assign(section.data(), static_cast<std::size_t>(section.size()));
    t.info_hash_v1 = *Sha1::from_raw({checked.info_hashes().v1.data(), Sha1::size});
    if (v2) t.info_hash_v2 = *Sha256::from_raw({checked.info_hashes().v2.data(), Sha256::size});
  } catch (const std::exception& e) {
    return error(std::string("libtorrent refuses the torrent: ") + e.what());
  }

  if (const lt::bdecode_node tiers = root.dict_find_list("announce-list")) {
    for (int i = 0; i < tiers.list_size(); ++i) append_strings(tiers.list_at(i), t.trackers);
  } else if (const auto announce = string_at(root, "announce")) {
    t.trackers.emplace_back(*announce);
  }
  if (const lt::bdecode_node seeds = root.dict_find("url-list")) {
    if (seeds.type() == lt::bdecode_node::string_t) t.web_seeds.emplace_back(text_of(seeds));
    append_strings(seeds, t.web_seeds);
  }
  return t;
}

}  // namespace inferllama::torrent
