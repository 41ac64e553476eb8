// RocksDB index: one column family per kind of record, so each can be scanned and tuned on its own.
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/utilities/backup_engine.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "inferllama/index.hpp"

namespace inferllama {
namespace {

enum Family : std::size_t {
  kDefault,
  kRefs,
  kMeta,
  kFiles,
  kBlobs,
  kChunks,
  kIdentities,
  kUsage,
  kBlobScopes,
  kHosting,
  kSessions,
  kScans,
  kPrefetch,
  kFamilyCount
};
constexpr const char* kFamilyNames[kFamilyCount] = {"default",     "refs",    "meta",       "files",
                                                    "blobs",       "chunks",  "identities", "usage",
                                                    "blob_scopes", "hosting", "sessions",   "scans",
                                                    "prefetch"};
// The record tables (and a blob's scope, dropped with the blob) are read by prefix scans rather than point lookups.
constexpr bool scanned(std::size_t family) {
  return family == kIdentities || family == kUsage || family == kBlobScopes || family == kHosting ||
         family == kSessions || family == kPrefetch;
}

// Scope records: "{etag}\0{repo key}" for each repo a blob was verified for, "{etag}\0*" when it is shared.
std::string scope_prefix(const std::string& etag) {
  return etag + '\0';
}
std::string scope_key(const std::string& etag, const RepoId& repo) {
  return scope_prefix(etag) + repo.key();
}
std::string shared_scope_key(const std::string& etag) {
  return scope_prefix(etag) + '*';
}

Family family_of(RecordTable table) {
  switch (table) {
    case RecordTable::identities:
      return kIdentities;
    case RecordTable::usage:
      return kUsage;
    case RecordTable::hosting:
      return kHosting;
    case RecordTable::sessions:
      return kSessions;
    case RecordTable::prefetch:
      return kPrefetch;
  }
  throw std::logic_error("unknown record table");
}

// The smallest key greater than every key starting with `prefix`; "" when there is none (all 0xff).
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xff) end.pop_back();
  if (!end.empty()) end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  return end;
}

// Compact binary records: the hit path decodes a blob entry on every request.
class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { out_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void u64(std::uint64_t v) { out_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void i64(std::int64_t v) { out_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }
  void raw(std::string_view s) { out_.append(s); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <class T>
  T num() {
    T v{};
    need(sizeof v);
    std::memcpy(&v, in_.data(), sizeof v);
    in_.remove_prefix(sizeof v);
    return v;
  }
  std::string str() {
    auto n = num<std::uint32_t>();
    return std::string(raw(n));
  }
  bool done() const { return in_.empty(); }
  std::string_view raw(std::size_t n) {
    need(n);
    auto v = in_.substr(0, n);
    in_.remove_prefix(n);
    return v;
  }

 private:
  void need(std::size_t n) const {
    if (in_.size() < n) throw std::runtime_error("corrupt index record");
  }
  std::string_view in_;
};

std::string encode(const FileEntry& f) {
  Writer w;
  w.str(f.etag);
  w.u8(f.lfs ? 1 : 0);
  w.u64(f.size);
  return w.take();
}

FileEntry decode_file(std::string_view v) {
  Reader r(v);
  FileEntry f;
  f.etag = r.str();
  f.lfs = r.num<std::uint8_t>() != 0;
  f.size = r.num<std::uint64_t>();
  return f;
}

std::string encode(const BlobEntry& b) {
  Writer w;
  w.str(b.etag);
  w.u8(b.lfs ? 1 : 0);
  w.u64(b.size);
  w.u32(b.chunk_size);
  w.raw(b.last_padded_sha1.raw());
  w.u32(static_cast<std::uint32_t>(b.chunks.size()));
  for (const auto& c : b.chunks) {
    w.raw(c.id.raw());
    w.raw(c.piece_sha1.raw());
    w.u32(c.size);
  }
  // Appended last, so records written before it existed still decode (without it).
  if (b.v2_root) w.raw(b.v2_root->raw());
  return w.take();
}

BlobEntry decode_blob(std::string_view v) {
  Reader r(v);
  BlobEntry b;
  b.etag = r.str();
  b.lfs = r.num<std::uint8_t>() != 0;
  b.size = r.num<std::uint64_t>();
  b.chunk_size = r.num<std::uint32_t>();
  b.last_padded_sha1 = *Sha1::from_raw(r.raw(Sha1::size));
  auto n = r.num<std::uint32_t>();
  b.chunks.resize(n);
  for (auto& c : b.chunks) {
    c.id = *Sha256::from_raw(r.raw(Sha256::size));
    c.piece_sha1 = *Sha1::from_raw(r.raw(Sha1::size));
    c.size = r.num<std::uint32_t>();
  }
  if (!r.done()) b.v2_root = *Sha256::from_raw(r.raw(Sha256::size));
  // Every position below `size` maps to a chunk, and every chunk but the last is whole: readers index
  // `chunks[pos / chunk_size]` without checking again.
  const std::uint64_t expected = b.chunk_size == 0 ? 0 : (b.size + b.chunk_size - 1) / b.chunk_size;
  if ((b.size > 0 && b.chunk_size == 0) || b.chunks.size() != expected) throw std::runtime_error("corrupt blob record");
  for (std::size_t i = 0; i < b.chunks.size(); ++i) {
    const std::uint64_t want = std::min<std::uint64_t>(b.chunk_size, b.size - i * std::uint64_t{b.chunk_size});
    if (b.chunks[i].size != want) throw std::runtime_error("corrupt blob record");
  }
  return b;
}

std::string encode(const ScanVerdict& v) {
  Writer w;
  w.u8(static_cast<std::uint8_t>(v.result));
  w.str(v.kind);
  w.u32(v.scanner_version);
  w.u32(v.findings_total);
  w.str(v.error);
  w.u32(static_cast<std::uint32_t>(v.findings.size()));
  for (const auto& f : v.findings) w.str(f);
  return w.take();
}

ScanVerdict decode_scan(std::string_view v) {
  Reader r(v);
  ScanVerdict s;
  const auto result = r.num<std::uint8_t>();
  if (result > static_cast<std::uint8_t>(ScanResult::skipped)) throw std::runtime_error("corrupt scan record");
  s.result = static_cast<ScanResult>(result);
  s.kind = r.str();
  s.scanner_version = r.num<std::uint32_t>();
  s.findings_total = r.num<std::uint32_t>();
  s.error = r.str();
  const auto n = r.num<std::uint32_t>();
  if (n > kMaxFindings) throw std::runtime_error("corrupt scan record");
  for (std::uint32_t i = 0; i < n; ++i) s.findings.push_back(r.str());
  return s;
}

RefEntry decode_ref(std::string_view v) {
  Reader r(v);
  RefEntry e;
  e.commit = r.str();
  e.fetched_at_ms = r.num<std::int64_t>();
  // Records written before the node kept a ref's history end here.
  if (!r.done()) {
    const auto count = r.num<std::uint32_t>();
    if (count > kRefHistory) throw std::runtime_error("corrupt ref record");
    for (std::uint32_t i = 0; i < count; ++i) e.before.push_back(r.str());
  }
  return e;
}

std::string ref_key(const RepoId& repo, const std::string& rev) {
  return repo.key() + '\0' + rev;
}
std::string file_key(const RepoId& repo, const std::string& commit, const std::string& path) {
  return repo.key() + '@' + commit + '\0' + path;
}

void check(const rocksdb::Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.ToString());
}

// The engine of a backup directory that holds one backup.
template <class Engine>
std::unique_ptr<Engine> open_backup_engine(const std::filesystem::path& dir) {
  rocksdb::BackupEngineOptions options(dir.string());
  options.sync = false;  // the directory is packed into a file that is synced itself
  Engine* engine = nullptr;
  check(Engine::Open(options, rocksdb::Env::Default(), &engine),
        ("cannot open the index backup at " + dir.string()).c_str());
  return std::unique_ptr<Engine>(engine);
}

class RocksIndex final : public Index {
 public:
  RocksIndex(const std::filesystem::path& dir, bool read_only) : records_(*this) {
    rocksdb::DBOptions options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    options.IncreaseParallelism(2);
    options.max_open_files = 256;
    std::filesystem::create_directories(dir);
    // Opening for writing creates the families an older index lacks; a read-only open cannot, and
    // refuses a family that is not there, so it opens those present and the others read as empty.
    std::vector<std::string> present;
    const bool existed = rocksdb::DB::ListColumnFamilies(options, dir.string(), &present).ok();
    const bool listed = read_only && existed;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    std::vector<Family> opened;
    for (std::size_t f = 0; f < kFamilyCount; ++f) {
      if (listed && std::find(present.begin(), present.end(), kFamilyNames[f]) == present.end()) continue;
      rocksdb::ColumnFamilyOptions cf;
      if (!scanned(f)) cf.OptimizeForPointLookup(16);
      families.emplace_back(kFamilyNames[f], cf);
      opened.push_back(static_cast<Family>(f));
    }
    rocksdb::DB* db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    auto status = read_only ? rocksdb::DB::OpenForReadOnly(options, dir.string(), families, &handles, &db)
                            : rocksdb::DB::Open(options, dir.string(), families, &handles, &db);
    check(status, ("cannot open the index at " + dir.string()).c_str());
    db_.reset(db);
    for (std::size_t i = 0; i < handles.size(); ++i) handles_[opened[i]] = handles[i];
    if (!read_only && existed &&
        std::find(present.begin(), present.end(), kFamilyNames[kBlobScopes]) == present.end()) {
      scope_stored_blobs();
    }
  }
  ~RocksIndex() override {
    for (auto* h : handles_) {
      if (h) db_->DestroyColumnFamilyHandle(h);
    }
  }

  RecordStore& records() override { return records_; }

  void back_up(const std::filesystem::path& dir) override {
    auto engine = open_backup_engine<rocksdb::BackupEngine>(dir);
    rocksdb::CreateBackupOptions options;
    options.flush_before_backup = true;  // the backup then needs no log files of the moment
    check(engine->CreateNewBackup(options, db_.get()), "cannot back up the index");
  }

  std::optional<RefEntry> get_ref(const RepoId& repo, const std::string& rev) override {
    auto v = get(kRefs, ref_key(repo, rev));
    if (!v) return std::nullopt;
    return decode_ref(*v);
  }
  void put_ref(const RepoId& repo, const std::string& rev, const RefEntry& ref) override {
    Writer w;
    w.str(ref.commit);
    w.i64(ref.fetched_at_ms);
    const std::size_t kept = std::min(ref.before.size(), kRefHistory);
    w.u32(static_cast<std::uint32_t>(kept));
    for (std::size_t i = ref.before.size() - kept; i < ref.before.size(); ++i) w.str(ref.before[i]);
    put(kRefs, ref_key(repo, rev), w.take());
  }

  std::optional<std::string> get_meta(const std::string& key) override { return get(kMeta, key); }
  void put_meta(const std::string& key, const std::string& value) override { put(kMeta, key, value); }
  void erase_meta(const std::string& key) override {
    check(db_->Delete(rocksdb::WriteOptions(), handles_[kMeta], key), "index write");
  }
  void list_meta(const std::string& prefix,
                 const std::function<void(const std::string&, std::size_t)>& visit) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kMeta]));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      visit(std::string(it->key().ToStringView()), it->value().size());
    }
    check(it->status(), "index scan");
  }

  std::optional<FileEntry> get_file(const RepoId& repo, const std::string& commit, const std::string& path) override {
    auto v = get(kFiles, file_key(repo, commit, path));
    if (!v) return std::nullopt;
    return decode_file(*v);
  }
  void put_file(const RepoId& repo, const std::string& commit, const std::string& path,
                const FileEntry& file) override {
    put(kFiles, file_key(repo, commit, path), encode(file));
  }

  std::optional<BlobEntry> get_blob(const std::string& etag) override {
    auto v = get(kBlobs, etag);
    if (!v) return std::nullopt;
    return decode_blob(*v);
  }

  void commit_blob(const BlobEntry& blob, const std::vector<FileRef>& files, const BlobScope& scope) override {
    // Reference counts are read-modify-write: one committer at a time.
    std::lock_guard lock(commit_mutex_);
    rocksdb::WriteBatch batch;
    if (!get(kBlobs, blob.etag)) {
      batch.Put(handles_[kBlobs], blob.etag, encode(blob));
      std::map<std::string, std::uint64_t> increments;
      for (const auto& c : blob.chunks) ++increments[std::string(c.id.raw())];
      for (const auto& [id, n] : increments) {
        std::uint64_t count = n;
        if (auto old = get(kChunks, id)) count += Reader(*old).num<std::uint64_t>();
        Writer w;
        w.u64(count);
        batch.Put(handles_[kChunks], id, w.take());
      }
    }
    for (const auto& f : files) {
      batch.Put(handles_[kFiles], file_key(f.repo, f.commit, f.path),
                encode(FileEntry{blob.etag, blob.lfs, blob.size}));
    }
    if (scope.shared) batch.Put(handles_[kBlobScopes], shared_scope_key(blob.etag), "");
    for (const auto& repo : scope.repos) batch.Put(handles_[kBlobScopes], scope_key(blob.etag, repo), "");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    check(db_->Write(wo, &batch), "index commit");
  }

  bool blob_serves(const std::string& etag, const RepoId& repo) override {
    if (!handles_[kBlobScopes]) return false;
    return get(kBlobScopes, shared_scope_key(etag)) || get(kBlobScopes, scope_key(etag, repo));
  }

  void move_blob_scopes(const std::vector<std::string>& etags, const RepoId& from, const RepoId& to) override {
    if (!handles_[kBlobScopes]) return;
    std::lock_guard lock(commit_mutex_);
    rocksdb::WriteBatch batch;
    for (const auto& etag : etags) {
      if (!get(kBlobScopes, scope_key(etag, from))) continue;
      batch.Delete(handles_[kBlobScopes], scope_key(etag, from));
      batch.Put(handles_[kBlobScopes], scope_key(etag, to), "");
    }
    if (batch.Count() == 0) return;
    rocksdb::WriteOptions wo;
    wo.sync = true;
    check(db_->Write(wo, &batch), "index scope move");
  }

  BlobScope blob_scope(const std::string& etag) override {
    BlobScope scope;
    if (!handles_[kBlobScopes]) return scope;
    const std::string scopes = scope_prefix(etag);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kBlobScopes]));
    for (it->Seek(scopes); it->Valid() && it->key().starts_with(scopes); it->Next()) {
      const std::string_view rest(it->key().data() + scopes.size(), it->key().size() - scopes.size());
      if (rest == "*") {
        scope.shared = true;
      } else if (auto repo = parse_repo_key(rest)) {
        scope.repos.push_back(std::move(*repo));
      }
    }
    return scope;
  }

  std::optional<ScanVerdict> get_scan(const std::string& etag) override {
    if (!handles_[kScans]) return std::nullopt;  // an index of a node before scanning, opened read-only
    auto v = get(kScans, etag);
    if (!v) return std::nullopt;
    return decode_scan(*v);
  }
  void put_scan(const std::string& etag, const ScanVerdict& verdict) override { put(kScans, etag, encode(verdict)); }

  std::vector<Sha256> remove_blob(const std::string& etag) override {
    std::lock_guard lock(commit_mutex_);
    std::vector<Sha256> freed;
    auto stored = get(kBlobs, etag);
    if (!stored) return freed;
    const BlobEntry blob = decode_blob(*stored);
    rocksdb::WriteBatch batch;
    batch.Delete(handles_[kBlobs], etag);
    batch.Delete(handles_[kScans], etag);
    const std::string scopes = scope_prefix(etag);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kBlobScopes]));
    for (it->Seek(scopes); it->Valid() && it->key().starts_with(scopes); it->Next()) {
      batch.Delete(handles_[kBlobScopes], it->key());
    }
    std::map<std::string, std::uint64_t> decrements;
    for (const auto& c : blob.chunks) ++decrements[std::string(c.id.raw())];
    for (const auto& [id, n] : decrements) {
      std::uint64_t count = 0;
      if (auto old = get(kChunks, id)) count = Reader(*old).num<std::uint64_t>();
      if (count <= n) {
        batch.Delete(handles_[kChunks], id);
        freed.push_back(*Sha256::from_raw(id));
      } else {
        Writer w;
        w.u64(count - n);
        batch.Put(handles_[kChunks], id, w.take());
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    check(db_->Write(wo, &batch), "index eviction");
    return freed;
  }

  void list_blobs(const std::function<void(const std::string&, std::uint64_t)>& visit) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kBlobs]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      Reader r(it->value().ToStringView());
      r.str();                // etag
      r.num<std::uint8_t>();  // lfs
      visit(std::string(it->key().ToStringView()), r.num<std::uint64_t>());
    }
  }

  std::vector<std::string> etags_of(const RepoId& repo, const std::string& commit) override {
    std::vector<std::string> out;
    const std::string prefix = repo.key() + '@' + commit + '\0';
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kFiles]));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      out.push_back(decode_file(it->value().ToStringView()).etag);
    }
    return out;
  }

  void set_pinned(const RepoId& repo, const std::string& commit, bool pinned) override {
    const std::string key = "pin|" + repo.key() + '@' + commit;
    if (pinned) {
      put(kMeta, key, "");
    } else {
      check(db_->Delete(rocksdb::WriteOptions(), handles_[kMeta], key), "index write");
    }
  }

  std::vector<std::pair<RepoId, std::string>> pinned() override {
    std::vector<std::pair<RepoId, std::string>> out;
    const std::string prefix = "pin|";
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kMeta]));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      std::string_view key = it->key().ToStringView().substr(prefix.size());  // type/name@commit
      auto slash = key.find('/');
      auto at = key.rfind('@');
      if (slash == std::string_view::npos || at == std::string_view::npos || at < slash) continue;
      auto type = parse_repo_type(key.substr(0, slash));
      if (!type) continue;
      out.push_back(
          {RepoId{*type, std::string(key.substr(slash + 1, at - slash - 1))}, std::string(key.substr(at + 1))});
    }
    return out;
  }

  std::uint64_t chunk_refcount(const Sha256& chunk) override {
    auto v = get(kChunks, std::string(chunk.raw()));
    return v ? Reader(*v).num<std::uint64_t>() : 0;
  }

  void list_refs(const std::function<void(const std::string&, const std::string&, const RefEntry&)>& visit) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kRefs]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto key = it->key().ToStringView();
      auto nul = key.find('\0');
      if (nul == std::string_view::npos) continue;
      visit(std::string(key.substr(0, nul)), std::string(key.substr(nul + 1)), decode_ref(it->value().ToStringView()));
    }
  }

  void list_files(const std::function<void(const ListedFile&)>& visit) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kFiles]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto key = it->key().ToStringView();
      auto at = key.find('@');
      auto nul = key.find('\0');
      if (at == std::string_view::npos || nul == std::string_view::npos || nul < at) continue;
      ListedFile f;
      f.repo_key = std::string(key.substr(0, at));
      f.commit = std::string(key.substr(at + 1, nul - at - 1));
      f.path = std::string(key.substr(nul + 1));
      f.file = decode_file(it->value().ToStringView());
      f.cached = get(kBlobs, f.file.etag).has_value();
      visit(f);
    }
  }

 private:
  // An index written before blobs had scopes: each stored blob answers for the repos whose file entries name
  // it (what those nodes served it for), and is shared with no one else until verified.
  void scope_stored_blobs() {
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kFiles]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto key = it->key().ToStringView();
      auto at = key.find('@');
      auto slash = key.find('/');
      if (at == std::string_view::npos || slash == std::string_view::npos || slash > at) continue;
      auto type = parse_repo_type(key.substr(0, slash));
      if (!type) continue;
      const RepoId repo{*type, std::string(key.substr(slash + 1, at - slash - 1))};
      const std::string etag = decode_file(it->value().ToStringView()).etag;
      if (get(kBlobs, etag)) batch.Put(handles_[kBlobScopes], scope_key(etag, repo), "");
    }
    check(it->status(), "index scan");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    check(db_->Write(wo, &batch), "index scope migration");
  }

  std::optional<std::string> get(Family family, const std::string& key) {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), handles_[family], key, &value);
    if (s.IsNotFound()) return std::nullopt;
    check(s, "index read");
    return value;
  }
  void put(Family family, const std::string& key, const std::string& value) {
#ifdef __SANITIZE_THREAD__
    // RocksDB's group commit copies one thread's batch on another inside the uninstrumented library,
    // through string functions TSan does see: one writer at a time keeps TSan reports about our code.
    std::lock_guard lock(commit_mutex_);
#endif
    check(db_->Put(rocksdb::WriteOptions(), handles_[family], key, value), "index write");
  }

  class Records final : public RecordStore {
   public:
    explicit Records(RocksIndex& index) : index_(index) {}

    std::optional<std::string> get(RecordTable table, const std::string& key) override {
      if (!index_.handles_[family_of(table)]) return std::nullopt;
      return index_.get(family_of(table), key);
    }

    void write(RecordTable table, const std::vector<Write>& writes, bool sync) override {
      auto* family = writable(table);
      rocksdb::WriteBatch batch;
      for (const auto& w : writes) {
        if (w.value) {
          check(batch.Put(family, w.key, *w.value), "record write");
        } else {
          check(batch.Delete(family, w.key), "record write");
        }
      }
      commit(batch, sync);
    }

    void scan(RecordTable table, std::string_view prefix,
              const std::function<bool(std::string_view key, std::string_view value)>& visit) override {
      auto* family = index_.handles_[family_of(table)];
      if (!family) return;
      rocksdb::ReadOptions ro;
      const std::string end = prefix_end(prefix);
      rocksdb::Slice upper(end);
      if (!end.empty()) ro.iterate_upper_bound = &upper;
      std::unique_ptr<rocksdb::Iterator> it(index_.db_->NewIterator(ro, family));
      for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
        if (!it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) break;
        if (!visit(it->key().ToStringView(), it->value().ToStringView())) return;
      }
      check(it->status(), "record scan");
    }

    void erase_range(RecordTable table, const std::string& begin, const std::string& end) override {
      auto* family = writable(table);
      if (begin >= end) return;  // an empty range; RocksDB refuses an inverted one
      rocksdb::WriteBatch batch;
      check(batch.DeleteRange(family, begin, end), "record range delete");
      commit(batch, /*sync=*/true);
    }

   private:
    rocksdb::ColumnFamilyHandle* writable(RecordTable table) {
      auto* family = index_.handles_[family_of(table)];
      if (!family) {
        throw std::runtime_error(std::string("the index has no ") + kFamilyNames[family_of(table)] +
                                 " records to change (opened read-only)");
      }
      return family;
    }
    void commit(rocksdb::WriteBatch& batch, bool sync) {
#ifdef __SANITIZE_THREAD__
      std::lock_guard lock(index_.commit_mutex_);  // see put()
#endif
      rocksdb::WriteOptions wo;
      wo.sync = sync;
      check(index_.db_->Write(wo, &batch), "record write");
    }
    RocksIndex& index_;
  };

  // Indexed by Family; null for a family a read-only open did not find.
  std::array<rocksdb::ColumnFamilyHandle*, kFamilyCount> handles_{};
  std::unique_ptr<rocksdb::DB> db_;
  std::mutex commit_mutex_;
  Records records_;
};

}  // namespace

std::unique_ptr<Index> open_rocksdb_index(const std::filesystem::path& dir, bool read_only) {
  return std::make_unique<RocksIndex>(dir, read_only);
}

void restore_rocksdb_index(const std::filesystem::path& backup, const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir)) throw std::runtime_error("cannot restore the index: " + dir.string() + " exists");
  auto engine = open_backup_engine<rocksdb::BackupEngineReadOnly>(backup);
  check(engine->RestoreDBFromLatestBackup(dir.string(), dir.string()), "cannot restore the index");
}

}  // namespace inferllama
