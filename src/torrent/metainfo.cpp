#include "metainfo.hpp"

#include <algorithm>
#include <bit>
#include <optional>
#include <set>

#include "bencode.hpp"
#include "hashing.hpp"
#include "url.hpp"

namespace inferllama::torrent {
namespace {

using bencode::Dict;
using bencode::List;
using bencode::Value;

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

std::string join_path(const std::vector<std::string_view>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
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

std::variant<Sha256, TorrentError> pieces_root(const Entry& entry, const BuildOptions& options,
                                               std::uint32_t piece_length) {
  const BlobEntry& blob = *entry.file->blob;
  if (blob.chunks.size() > 1) {
    std::vector<Sha256> piece_layer;
    piece_layer.reserve(blob.chunks.size());
    for (const auto& c : blob.chunks) piece_layer.push_back(c.id);
    return cache::piece_layer_root(piece_layer, piece_length);
  }
  if (blob.v2_root) return *blob.v2_root;
  const ChunkRef& chunk = blob.chunks.front();
  if (chunk.size == piece_length) return chunk.id;  // a whole piece: the file's tree is the chunk's
  const std::string& path = entry.file->path;
  if (!options.read_chunk) {
    return error(path + ": stored without its v2 pieces root, and no way to read its chunk back was given");
  }
  auto bytes = options.read_chunk(chunk.id);
  if (!bytes || bytes->size() != chunk.size) return error(path + ": cannot read chunk " + chunk.id.hex());
  const cache::ChunkHashes hashes = cache::hash_chunk(*bytes, piece_length);
  if (hashes.root != chunk.id) return error(path + ": chunk " + chunk.id.hex() + " does not match its stored bytes");
  return hashes.file_root;
}

Value path_list(const std::vector<std::string_view>& parts) {
  List list;
  for (const auto& p : parts) list.emplace_back(p);
  return list;
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

  std::vector<Entry> entries;
  entries.reserve(files.size());
  for (const auto& f : files) {
    Entry e{split_path(f.path), &f};
    if (!std::all_of(e.parts.begin(), e.parts.end(), valid_component)) return error("invalid path \"" + f.path + "\"");
    if (!chunks_tile_blob(*f.blob, piece_length)) return error(f.path + ": its chunks do not add up to its size");
    entries.push_back(std::move(e));
  }
  // Part by part, as libtorrent orders files and as the v2 file tree's dictionaries are ordered.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.parts < b.parts; });
  for (std::size_t i = 1; i < entries.size(); ++i) {
    const auto& previous = entries[i - 1].parts;
    const auto& next = entries[i].parts;
    // Sorted, a file that is also a folder of another comes right before the first file inside it.
    if (next.size() >= previous.size() && std::equal(previous.begin(), previous.end(), next.begin())) {
      return error("path \"" + entries[i].file->path + "\" collides with \"" + entries[i - 1].file->path + "\"");
    }
  }

  const bool hybrid = options.format == Format::hybrid;
  // libtorrent pads after every non-empty file not ending on a piece boundary, the last one included,
  // unless the torrent has a single file.
  const bool padded = entries.size() > 1;
  Torrent t;
  t.name = options.name;
  t.piece_length = piece_length;
  std::string piece_hashes;
  List v1_files;
  Dict file_tree;
  Dict piece_layers;
  for (const auto& e : entries) {
    const BlobEntry& blob = *e.file->blob;
    t.files.push_back(TorrentFile{options.single_file ? t.name : join_path(e.parts), blob.size, false, blob.etag});
    for (const auto& c : blob.chunks) {
      t.pieces.push_back(PieceSource{c.id, c.size});
      piece_hashes.append(c.piece_sha1.raw());
    }
    const std::uint64_t pad = padded && blob.size % piece_length != 0 ? piece_length - blob.size % piece_length : 0;
    if (pad > 0) piece_hashes.replace(piece_hashes.size() - Sha1::size, Sha1::size, blob.last_padded_sha1.raw());
    v1_files.emplace_back(Dict{{"length", static_cast<std::int64_t>(blob.size)}, {"path", path_list(e.parts)}});
    if (pad > 0) {
      const std::string pad_name = std::to_string(pad);
      t.files.push_back(TorrentFile{".pad/" + pad_name, pad, true, ""});
      v1_files.emplace_back(Dict{
          {"attr", "p"}, {"length", static_cast<std::int64_t>(pad)}, {"path", List{Value(".pad"), Value(pad_name)}}});
    }
    if (!hybrid) continue;
    Dict leaf{{"length", static_cast<std::int64_t>(blob.size)}};
    if (blob.size > 0) {
      auto root = pieces_root(e, options, piece_length);
      if (auto* failed = std::get_if<TorrentError>(&root)) return std::move(*failed);
      const Sha256& pieces_root = std::get<Sha256>(root);
      leaf.emplace("pieces root", std::string(pieces_root.raw()));
      if (blob.size > piece_length) {
        std::string layer;
        layer.reserve(blob.chunks.size() * Sha256::size);
        for (const auto& c : blob.chunks) layer.append(c.id.raw());
        piece_layers.emplace(std::string(pieces_root.raw()), std::move(layer));
      }
    }
    // Folders of the tree are created on the way down; the validated paths cannot clash with a leaf.
    Dict* folder = &file_tree;
    const std::vector<std::string_view> single{options.name};
    const auto& parts = options.single_file ? single : e.parts;
    for (const auto& part : parts) {
      auto it = folder->try_emplace(std::string(part), Dict{}).first;
      folder = &std::get<Dict>(it->second.data);
    }
    folder->emplace("", std::move(leaf));
  }
  for (const auto& f : t.files) t.total_size += f.size;

  Dict info{
      {"name", t.name}, {"piece length", static_cast<std::int64_t>(piece_length)}, {"pieces", std::move(piece_hashes)}};
  if (options.single_file) {
    info.emplace("length", static_cast<std::int64_t>(t.total_size));
  } else {
    info.emplace("files", std::move(v1_files));
  }
  if (hybrid) {
    info.emplace("file tree", std::move(file_tree));
    info.emplace("meta version", std::int64_t{2});
  }
  Value info_value(std::move(info));
  t.info = bencode::encode(info_value);
  t.info_hash_v1 = cache::sha1(t.info);
  if (hybrid) t.info_hash_v2 = cache::sha256(t.info);

  // No creation date: the .torrent's bytes depend only on the snapshot and the options.
  Dict meta{{"created by", "InferLlama"}, {"info", std::move(info_value)}};
  if (!options.trackers.empty()) {
    meta.emplace("announce", options.trackers.front());
    List tiers;
    for (const auto& tracker : options.trackers) tiers.emplace_back(List{Value(tracker)});
    meta.emplace("announce-list", std::move(tiers));
  }
  if (!options.web_seeds.empty()) {
    List seeds;
    for (const auto& seed : options.web_seeds) seeds.emplace_back(seed);
    meta.emplace("url-list", std::move(seeds));
  }
  if (!options.comment.empty()) meta.emplace("comment", options.comment);
  if (hybrid) meta.emplace("piece layers", std::move(piece_layers));
  t.metainfo = bencode::encode(Value(std::move(meta)));
  return t;
}

std::string magnet_uri(const Torrent& torrent, std::span<const std::string> trackers,
                       std::span<const std::string> web_seeds) {
  std::string uri = "magnet:?xt=urn:btih:" + torrent.info_hash_v1.hex();
  if (torrent.info_hash_v2) uri += "&xt=urn:btmh:1220" + torrent.info_hash_v2->hex();
  uri += "&dn=" + url::encode(torrent.name);
  for (const auto& tracker : trackers) uri += "&tr=" + url::encode(tracker);
  for (const auto& seed : web_seeds) uri += "&ws=" + url::encode(seed);
  return uri;
}

namespace {

std::optional<std::int64_t> integer_at(const Value& dict, std::string_view key) {
  const Value* v = dict.find(key);
  if (v == nullptr || v->integer() == nullptr) return std::nullopt;
  return *v->integer();
}

const std::string* string_at(const Value& dict, std::string_view key) {
  const Value* v = dict.find(key);
  return v == nullptr ? nullptr : v->string();
}

// The v2 file tree's files in dictionary order: (path, length).
bool walk_file_tree(const Dict& folder, std::string& prefix, std::vector<std::pair<std::string, std::int64_t>>& out) {
  for (const auto& [name, node] : folder) {
    const Dict* child = node.dict();
    if (child == nullptr) return false;
    if (name.empty()) {
      auto length = integer_at(node, "length");
      if (!length || prefix.empty()) return false;
      out.emplace_back(prefix.substr(0, prefix.size() - 1), *length);
      continue;
    }
    if (!valid_component(name)) return false;
    const std::size_t mark = prefix.size();
    prefix.append(name).push_back('/');
    if (!walk_file_tree(*child, prefix, out)) return false;
    prefix.resize(mark);
  }
  return true;
}

}  // namespace

std::variant<ParsedTorrent, TorrentError> parse_torrent(std::string_view metainfo) {
  // Deep enough for file trees of deeply nested repos; decode() bounds recursion by it.
  auto decoded = bencode::decode(metainfo, bencode::DecodeLimits{.max_depth = 64});
  if (auto* failed = std::get_if<bencode::DecodeError>(&decoded)) {
    return error("not a bencoded torrent: " + failed->message + " at byte " + std::to_string(failed->offset));
  }
  const Value& root = std::get<Value>(decoded);
  const Value* info = root.find("info");
  if (info == nullptr || info->dict() == nullptr) return error("no info dictionary");

  ParsedTorrent t;
  // The decoder accepts only canonical bencoding, so this is the info dict's original bytes.
  t.info = bencode::encode(*info);
  t.info_hash_v1 = cache::sha1(t.info);

  const std::string* name = string_at(*info, "name");
  if (name == nullptr || !valid_component(*name)) return error("missing or unsafe name");
  t.name = *name;
  const auto piece_length = integer_at(*info, "piece length");
  if (!piece_length || *piece_length < kMinPieceLength || *piece_length > static_cast<std::int64_t>(kMaxPieceLength) ||
      !std::has_single_bit(static_cast<std::uint64_t>(*piece_length))) {
    return error("piece length is not a power of two between 16 KiB and 1 GiB");
  }
  t.piece_length = static_cast<std::uint32_t>(*piece_length);
  const std::string* pieces = string_at(*info, "pieces");
  if (pieces == nullptr || pieces->size() % Sha1::size != 0) return error("missing or malformed pieces");

  auto add_file = [&](std::string path, std::int64_t length, bool pad) -> bool {
    // Each file and the whole torrent stay far from 64-bit overflow (2^50 bytes a file, 2^60 in all).
    if (length < 0 || length > kMaxFileSize) return false;
    if (t.total_size + static_cast<std::uint64_t>(length) > (std::uint64_t{1} << 60)) return false;
    t.files.push_back(TorrentFile{std::move(path), static_cast<std::uint64_t>(length), pad, ""});
    t.total_size += static_cast<std::uint64_t>(length);
    return true;
  };
  if (const Value* files = info->find("files")) {
    if (files->list() == nullptr || files->list()->empty()) return error("files is not a list of files");
    for (const Value& f : *files->list()) {
      const auto length = integer_at(f, "length");
      const Value* path = f.find("path");
      if (!length || path == nullptr || path->list() == nullptr || path->list()->empty()) {
        return error("a file without length or path");
      }
      std::string joined;
      for (const Value& part : *path->list()) {
        if (part.string() == nullptr || !valid_component(*part.string())) return error("unsafe file path");
        if (!joined.empty()) joined.push_back('/');
        joined.append(*part.string());
      }
      const std::string* attr = string_at(f, "attr");
      const bool pad = attr != nullptr && attr->find('p') != std::string::npos;
      if (!add_file(std::move(joined), *length, pad)) return error("file length out of range");
    }
  } else if (const auto length = integer_at(*info, "length")) {
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

  if (const Value* version = info->find("meta version")) {
    if (version->integer() == nullptr || *version->integer() != 2) return error("unknown meta version");
    const Value* tree = info->find("file tree");
    std::vector<std::pair<std::string, std::int64_t>> v2_files;
    std::string prefix;
    if (tree == nullptr || tree->dict() == nullptr || !walk_file_tree(*tree->dict(), prefix, v2_files)) {
      return error("malformed file tree");
    }
    // A hybrid torrent describes the same files twice; clients trust either, so both must agree.
    std::vector<std::pair<std::string, std::int64_t>> v1_files;
    for (const auto& f : t.files) {
      if (!f.pad) v1_files.emplace_back(t.single_file ? t.name : f.path, static_cast<std::int64_t>(f.size));
    }
    if (v1_files != v2_files) return error("the v1 and v2 file lists disagree");
    t.info_hash_v2 = cache::sha256(t.info);
  }

  if (const Value* tiers = root.find("announce-list"); tiers != nullptr && tiers->list() != nullptr) {
    for (const Value& tier : *tiers->list()) {
      if (tier.list() == nullptr) continue;
      for (const Value& url : *tier.list()) {
        if (url.string() != nullptr) t.trackers.push_back(*url.string());
      }
    }
  } else if (const std::string* announce = string_at(root, "announce")) {
    t.trackers.push_back(*announce);
  }
  if (const Value* seeds = root.find("url-list")) {
    if (seeds->string() != nullptr) t.web_seeds.push_back(*seeds->string());
    if (seeds->list() != nullptr) {
      for (const Value& url : *seeds->list()) {
        if (url.string() != nullptr) t.web_seeds.push_back(*url.string());
      }
    }
  }
  return t;
}

}  // namespace inferllama::torrent
