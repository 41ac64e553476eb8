#include "backup/backup.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <thread>

#include "inferllama/chunk_store.hpp"
#include "inferllama/digest.hpp"
#include "util/url.hpp"

namespace inferllama::backup {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kPrefix = "inferllama-backup-";
constexpr std::string_view kSuffix = ".ilbk";
constexpr std::size_t kStampSize = 16;  // 20250102T030405Z
constexpr std::string_view kIndexEntry = "index/";
constexpr std::string_view kSecretKeyEntry = "secret.key";
constexpr std::size_t kMaxSecretKey = 64 * 1024;  // as read_secret_file allows
constexpr std::size_t kCopyBuffer = 1 << 20;

std::runtime_error system_error(const std::string& what, const fs::path& path) {
  return std::runtime_error(what + " " + path.string() + ": " + std::strerror(errno));
}

// An open file, closed with its scope.
class Fd {
 public:
  Fd(const fs::path& path, int flags, const char* what, mode_t mode = 0)
      : fd_(::open(path.c_str(), flags | O_CLOEXEC, mode)) {
    if (fd_ < 0) throw system_error(what, path);
  }
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string utc_stamp(std::chrono::system_clock::time_point when) {
  const std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[kStampSize + 1] = {};  // NOLINT(modernize-avoid-c-arrays): strftime fills a plain buffer
  std::strftime(text, sizeof text, "%Y%m%dT%H%M%SZ", &tm);
  return text;
}

// The time in a name make_backup gave; nullopt for any other name.
std::optional<std::chrono::system_clock::time_point> time_of(const std::string& name) {
  if (name.size() != kPrefix.size() + kStampSize + kSuffix.size() || !name.starts_with(kPrefix) ||
      !name.ends_with(kSuffix)) {
    return std::nullopt;
  }
  const std::string stamp = name.substr(kPrefix.size(), kStampSize);
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(stamp.c_str(), "%4d%2d%2dT%2d%2d%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &consumed) != 6 ||
      consumed != static_cast<int>(kStampSize)) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
  if (utc_stamp(when) != stamp) return std::nullopt;  // "20251340T..." or digits with signs or spaces
  return when;
}

bool inside(const fs::path& path, const fs::path& dir) {
  const fs::path p = fs::weakly_canonical(fs::absolute(path));
  const fs::path d = fs::weakly_canonical(fs::absolute(dir));
  auto pi = p.begin();
  for (auto di = d.begin(); di != d.end(); ++di, ++pi) {
    if (di->empty()) continue;  // the trailing "" of "/a/b/"
    if (pi == p.end() || *pi != *di) return false;
  }
  return true;
}

void sync_dir(const fs::path& dir) {
  const Fd fd(dir, O_RDONLY | O_DIRECTORY, "cannot open");
  if (::fsync(fd.get()) != 0) throw system_error("cannot sync", dir);
}

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error("cannot write", path);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// A new file of the owner's only, synced with its name; EEXIST when there is one.
void write_new_private_file(const fs::path& path, std::string_view content) {
  const Fd fd(path, O_WRONLY | O_CREAT | O_EXCL, "cannot create", 0600);
  try {
    write_all(fd.get(), content, path);
    if (::fsync(fd.get()) != 0) throw system_error("cannot sync", path);
  } catch (...) {
    ::unlink(path.c_str());  // a half-written key would be refused later: leave none
    throw;
  }
  sync_dir(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

void make_private_subdir(const fs::path& dir) {
  fs::remove_all(dir);  // what a run that crashed left
  if (::mkdir(dir.c_str(), 0700) != 0) throw system_error("cannot create", dir);
}

void put_file_entry(SealedWriter& out, std::string_view name, std::uint64_t size) {
  std::string head(1, '\1');
  head += static_cast<char>(name.size() >> 8);
  head += static_cast<char>(name.size() & 0xff);
  head += name;
  for (int shift = 56; shift >= 0; shift -= 8) head += static_cast<char>((size >> shift) & 0xff);
  out.write(head);
}

void pack_file(SealedWriter& out, const std::string& name, const fs::path& file) {
  const Fd fd(file, O_RDONLY, "cannot read");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw system_error("cannot read", file);
  put_file_entry(out, name, static_cast<std::uint64_t>(st.st_size));
  std::string buffer(kCopyBuffer, '\0');
  for (auto left = static_cast<std::uint64_t>(st.st_size); left > 0;) {
    const ssize_t n = ::read(fd.get(), buffer.data(), std::min<std::uint64_t>(left, buffer.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error("cannot read", file);
    if (n == 0) throw std::runtime_error(file.string() + " became shorter while it was backed up");
    out.write(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    left -= static_cast<std::uint64_t>(n);
  }
}

// Exactly `size` bytes of the stream, else the stream ended early: a damaged backup.
void read_exact(SealedReader& in, char* out, std::size_t size) {
  if (in.read(out, size) != size) throw SealError("the backup ends in the middle of its contents: it is damaged");
}

std::uint64_t read_number(SealedReader& in, std::size_t bytes) {
  char raw[8] = {};  // NOLINT(modernize-avoid-c-arrays)
  read_exact(in, raw, bytes);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(raw[i]);
  return v;
}

// Reads the whole stream, every segment authenticated, and writes the index's files under `into` unless it
// is null (a check).
Contents unpack(const fs::path& file, const Key& key, const fs::path* into) {
  const Fd fd(file, O_RDONLY, "cannot open the backup");
  SealedReader in(fd.get(), key);
  Contents contents;
  std::string buffer(kCopyBuffer, '\0');
  for (;;) {
    char kind = 0;
    read_exact(in, &kind, 1);
    if (kind == 0) break;
    if (kind != 1) throw SealError("the backup holds an entry of an unknown kind");
    std::string name(read_number(in, 2), '\0');
    read_exact(in, name.data(), name.size());
    std::uint64_t size = read_number(in, 8);
    if (name == kSecretKeyEntry) {
      if (size > kMaxSecretKey || contents.secret_key) throw SealError("the backup's secret key entry is malformed");
      contents.secret_key.emplace(size, '\0');
      read_exact(in, contents.secret_key->data(), size);
      continue;
    }
    if (!name.starts_with(kIndexEntry) || !url::is_safe_relative_path(name)) {
      throw SealError("the backup holds an entry of an unknown name");
    }
    ++contents.index_files;
    contents.index_bytes += size;
    const fs::path target = into ? *into / name.substr(kIndexEntry.size()) : fs::path();
    if (into) fs::create_directories(target.parent_path());
    const std::optional<Fd> out =
        into ? std::make_optional<Fd>(target, O_WRONLY | O_CREAT | O_EXCL, "cannot create", 0600) : std::nullopt;
    while (size > 0) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(size, buffer.size()));
      read_exact(in, buffer.data(), n);
      if (out) write_all(out->get(), std::string_view(buffer.data(), n), target);
      size -= n;
    }
  }
  char after = 0;
  if (in.read(&after, 1) != 0) throw SealError("the backup holds bytes after its end");
  return contents;
}

std::uint64_t forget_missing_files(Index& index, ChunkStore& store) {
  std::vector<std::string> etags;
  index.list_blobs([&](const std::string& etag, std::uint64_t) { etags.push_back(etag); });
  std::uint64_t forgotten = 0;
  for (const auto& etag : etags) {
    const auto blob = index.get_blob(etag);
    if (!blob || std::none_of(blob->chunks.begin(), blob->chunks.end(),
                              [&](const ChunkRef& c) { return store.chunk_damaged(c.id, c.size); })) {
      continue;
    }
    for (const auto& chunk : index.remove_blob(etag)) store.remove(chunk);  // the rest of its chunks, if any
    ++forgotten;
  }
  return forgotten;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string read_small_file(const fs::path& path) {
  const Fd fd(path, O_RDONLY, "cannot read");
  std::string text(kMaxSecretKey + 1, '\0');
  std::size_t have = 0;
  for (ssize_t n; have < text.size() && (n = ::read(fd.get(), text.data() + have, text.size() - have)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw system_error("cannot read", path);
    have += static_cast<std::size_t>(n);
  }
  if (have > kMaxSecretKey) throw std::runtime_error(path.string() + " is larger than a key file");
  text.resize(have);
  return text;
}

}  // namespace

Key read_key(const fs::path& key_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      throw std::invalid_argument("the backup key file " + key_file.string() +
                                  " does not exist: create one with `inferllama backup --new-key " + key_file.string() +
                                  "` (outside the data directory) and keep a copy apart from the backups");
    }
    throw std::invalid_argument("cannot read the backup key file " + key_file.string() + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    throw std::invalid_argument("the backup key file " + key_file.string() + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    throw std::invalid_argument("the backup key file " + key_file.string() +
                                " can be read by group or others: chmod 600 " + key_file.string());
  }
  std::string text = trimmed(read_small_file(key_file));
  Key key{};
  const bool parsed = unhex_to(text, std::span(reinterpret_cast<std::uint8_t*>(key.data()), key.size()));
  OPENSSL_cleanse(text.data(), text.size());
  if (!parsed) {
    throw std::invalid_argument("the backup key file " + key_file.string() +
                                " is malformed: it must hold 64 hex digits (a 256-bit key), as `inferllama backup "
                                "--new-key FILE` writes");
  }
  return key;
}

void create_key(const fs::path& key_file, const fs::path& data_dir) {
  if (inside(key_file, data_dir)) {
    throw std::invalid_argument("the backup key file " + key_file.string() + " would be inside the data directory " +
                                data_dir.string() + ": keep the key apart from the data it opens");
  }
  if (fs::exists(fs::symlink_status(key_file))) {
    throw std::invalid_argument(key_file.string() +
                                " exists: a backup key is never overwritten (the backups made with it need it); "
                                "give another file");
  }
  Key key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) throw std::runtime_error("the CSPRNG failed");
  std::string text = hex(std::span(reinterpret_cast<const std::uint8_t*>(key.data()), key.size())) + "\n";
  OPENSSL_cleanse(key.data(), key.size());
  try {
    write_new_private_file(key_file, text);
  } catch (...) {
    OPENSSL_cleanse(text.data(), text.size());
    throw;
  }
  OPENSSL_cleanse(text.data(), text.size());
}

Place checked_place(const fs::path& data_dir, const fs::path& dir, const fs::path& key_file) {
  if (dir.empty()) throw std::invalid_argument("no backup directory: set backup_dir (or give --backup-dir DIR)");
  if (key_file.empty()) {
    throw std::invalid_argument(
        "no backup key: set backup_key_file (or give --backup-key-file FILE); create a key with `inferllama backup "
        "--new-key FILE`, outside the data directory");
  }
  if (inside(dir, data_dir)) {
    throw std::invalid_argument("the backup directory " + dir.string() + " is inside the data directory " +
                                data_dir.string() + ": keep backups apart from what they back up");
  }
  if (inside(key_file, data_dir)) {
    throw std::invalid_argument("the backup key file " + key_file.string() + " is inside the data directory " +
                                data_dir.string() +
                                ": keep the key apart from the data, so one copy of the data directory never holds "
                                "the key to its backups");
  }
  Key key = read_key(key_file);
  OPENSSL_cleanse(key.data(), key.size());
  return Place{fs::absolute(dir), fs::absolute(key_file)};
}

Made make_backup(Index& index, const fs::path& data_dir, const fs::path& secret_key_file, const Place& place) {
  const Key key = read_key(place.key_file);
  auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  const auto name_at = [](auto time) { return std::string(kPrefix) + utc_stamp(time) + std::string(kSuffix); };
  while (fs::exists(place.dir / name_at(now))) {
    std::this_thread::sleep_until(now + std::chrono::seconds(1));
    now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  }
  const std::string name = name_at(now);
  const fs::path staging = data_dir / "backup-staging";
  const fs::path engine = staging / "index";
  std::array<unsigned char, 4> random{};
  if (RAND_bytes(random.data(), random.size()) != 1) throw std::runtime_error("the CSPRNG failed");
  const fs::path partial = place.dir / ("." + name + "." + hex(random) + ".tmp");
  const fs::path file = place.dir / name;
  try {
    make_private_subdir(staging);
    index.back_up(engine);
    fs::create_directories(place.dir);
    {
      const Fd fd(partial, O_WRONLY | O_CREAT | O_EXCL, "cannot create", 0600);
      SealedWriter out(fd.get(), key);
      std::vector<fs::path> files;
      for (const auto& entry : fs::recursive_directory_iterator(engine)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) pack_file(out, std::string(kIndexEntry) + f.lexically_relative(engine).string(), f);
      if (fs::exists(secret_key_file)) pack_file(out, std::string(kSecretKeyEntry), secret_key_file);
      out.write(std::string_view("\0", 1));  // the end
      out.finish();
      if (::fsync(fd.get()) != 0) throw system_error("cannot sync", partial);
    }
    // Never over another backup (another process's of the same second): this one fails instead.
    if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, file.c_str(), RENAME_NOREPLACE) != 0) {
      throw system_error("cannot name the backup", file);
    }
    sync_dir(place.dir);
    fs::remove_all(staging);
    return Made{file, fs::file_size(file), now};
  } catch (...) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    fs::remove_all(staging, ignored);
    throw;
  }
}

std::vector<fs::path> expire_backups(const fs::path& dir, std::chrono::seconds retention,
                                     std::chrono::system_clock::time_point now) {
  std::vector<fs::path> deleted;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto when = time_of(entry.path().filename().string());
    if (!when || !fs::is_regular_file(entry.symlink_status()) || now - *when <= retention) continue;
    fs::remove(entry.path());
    deleted.push_back(entry.path());
  }
  return deleted;
}

std::optional<std::chrono::system_clock::time_point> newest_backup(const fs::path& dir) {
  std::optional<std::chrono::system_clock::time_point> newest;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto when = time_of(it->path().filename().string());
    if (when && fs::is_regular_file(it->symlink_status()) && (!newest || *when > *newest)) newest = when;
  }
  return newest;
}

Contents check_backup(const fs::path& file, const Key& key) {
  return unpack(file, key, nullptr);
}

void check_target(const Contents& contents, const fs::path& data_dir, const fs::path& secret_key_file, bool force) {
  const fs::path index = data_dir / "index";
  if (fs::exists(index) && !force) {
    throw std::invalid_argument(index.string() +
                                " exists: restore into a fresh data directory, or give --force to move that index "
                                "aside (it is kept, renamed) and restore in its place");
  }
  if (contents.secret_key && fs::exists(secret_key_file) &&
      trimmed(read_small_file(secret_key_file)) != trimmed(*contents.secret_key)) {
    throw std::invalid_argument(
        secret_key_file.string() +
        " holds another secret key than the backup's: the restored users' Hub tokens would not open under it. Move "
        "it away (the node's records sealed under it would be lost) or restore into a fresh data directory");
  }
}

Restored restore_backup(const fs::path& file, const Key& key, const fs::path& data_dir, const fs::path& secret_key_file,
                        bool force) {
  const fs::path staging = data_dir / "restore-staging";
  const fs::path engine = staging / "index";
  const fs::path index = data_dir / "index";
  const fs::path restoring = data_dir / "index.restoring";
  Restored restored;
  try {
    make_private_subdir(staging);
    const Contents contents = unpack(file, key, &engine);
    check_target(contents, data_dir, secret_key_file, force);
    fs::remove_all(restoring);
    restore_rocksdb_index(engine, restoring);
    {
      ChunkStore store(data_dir);
      restored.forgotten_files = forget_missing_files(*open_rocksdb_index(restoring), store);
    }
    if (fs::exists(index)) {
      restored.moved_aside = data_dir / ("index.before-restore-" + utc_stamp(std::chrono::system_clock::now()));
      fs::rename(index, *restored.moved_aside);
    }
    fs::rename(restoring, index);
    if (contents.secret_key && !fs::exists(secret_key_file)) {
      write_new_private_file(secret_key_file, *contents.secret_key);
      restored.wrote_secret_key = true;
    }
    sync_dir(data_dir);
    fs::remove_all(staging);
    return restored;
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    fs::remove_all(restoring, ignored);
    throw;
  }
}

}  // namespace inferllama::backup
