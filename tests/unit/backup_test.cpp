#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "backup/backup.hpp"
#include "backup/sealed_stream.hpp"
#include "cache/hashing.hpp"
#include "inferllama/chunk_store.hpp"
#include "inferllama/index.hpp"
#include "test_support.hpp"

namespace inferllama::backup {
namespace {

namespace fs = std::filesystem;

Key key_of(unsigned char seed) {
  Key key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<unsigned char>(seed + i);
  return key;
}

std::string random_bytes(std::size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(gen());
  return out;
}

// An anonymous file in memory holding `bytes`, at offset 0.
int memory_file(const std::string& bytes = "") {
  const int fd = ::memfd_create("backup-test", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error("memfd_create");
  if (!bytes.empty() && ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
    throw std::runtime_error("write");
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

std::string contents_of(int fd) {
  std::string out;
  ::lseek(fd, 0, SEEK_SET);
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) out.append(buffer, static_cast<std::size_t>(n));
  return out;
}

// The sealed file of `plain`, written in pieces of odd sizes.
std::string seal(const std::string& plain, const Key& key, std::size_t segment) {
  const int fd = memory_file();
  SealedWriter writer(fd, key, segment);
  for (std::size_t at = 0, piece = 1; at < plain.size(); at += piece, piece = piece * 3 + 1) {
    writer.write(std::string_view(plain).substr(at, piece));
  }
  writer.finish();
  std::string sealed = contents_of(fd);
  ::close(fd);
  return sealed;
}

// The whole plaintext of a sealed file, read in pieces of odd sizes. Throws SealError.
std::string open_sealed(const std::string& sealed, const Key& key) {
  const int fd = memory_file(sealed);
  std::string plain;
  try {
    SealedReader reader(fd, key);
    std::string buffer(7919, '\0');
    for (std::size_t n; (n = reader.read(buffer.data(), buffer.size())) > 0;) plain.append(buffer.data(), n);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return plain;
}

constexpr std::size_t kHeader = 40;
constexpr std::size_t kTag = 16;

TEST(BackupFile, RoundTripsEmptyOneSegmentAndManySegments) {
  const Key key = key_of(1);
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, kSegmentSize - 1, kSegmentSize, kSegmentSize + 1, 3 * kSegmentSize + 12345}) {
    SCOPED_TRACE(size);
    const std::string plain = random_bytes(size, static_cast<unsigned>(size));
    const std::string sealed = seal(plain, key, kSegmentSize);
    const std::size_t segments = size / kSegmentSize + 1;  // a last one, empty when the size is a multiple
    EXPECT_EQ(sealed.size(), kHeader + size + segments * kTag);
    if (size >= 64) {
      EXPECT_EQ(sealed.find(plain.substr(0, 64)), std::string::npos);
    }
    EXPECT_EQ(open_sealed(sealed, key), plain);
  }
}

TEST(BackupFile, TwoFilesOfTheSameBytesDiffer) {
  const std::string plain = random_bytes(1000, 7);
  EXPECT_NE(seal(plain, key_of(1), 64), seal(plain, key_of(1), 64));  // a random nonce prefix per file
}

TEST(BackupFile, AnotherKeyIsRefusedAtTheHeader) {
  const std::string sealed = seal(random_bytes(5000, 3), key_of(1), 1024);
  try {
    open_sealed(sealed, key_of(2));
    FAIL() << "opened under another key";
  } catch (const SealError& e) {
    EXPECT_NE(std::string(e.what()).find("another key"), std::string::npos) << e.what();
  }
}

TEST(BackupFile, AFlippedByteAnywhereIsRefused) {
  const Key key = key_of(1);
  const std::string sealed = seal(random_bytes(300, 4), key, 64);  // a header and 5 segments
  for (std::size_t at = 0; at < sealed.size(); ++at) {
    std::string altered = sealed;
    altered[at] = static_cast<char>(altered[at] ^ 0x01);
    EXPECT_THROW(open_sealed(altered, key), SealError) << "byte " << at;
  }
}

TEST(BackupFile, ATruncatedFileIsRefused) {
  const Key key = key_of(1);
  const std::string plain = random_bytes(256, 5);  // 4 full segments and an empty last one
  const std::string sealed = seal(plain, key, 64);
  const std::size_t whole_segment = 64 + kTag;
  ASSERT_EQ(sealed.size(), kHeader + 4 * whole_segment + kTag);
  // Without its last segment the file ends on a segment boundary: that segment was not sealed as the last.
  EXPECT_THROW(open_sealed(sealed.substr(0, sealed.size() - kTag), key), SealError);
  EXPECT_THROW(open_sealed(sealed.substr(0, kHeader + 3 * whole_segment), key), SealError);
  for (std::size_t size = 0; size < sealed.size(); ++size) {
    EXPECT_THROW(open_sealed(sealed.substr(0, size), key), SealError) << "cut at " << size;
  }
}

TEST(BackupFile, ReorderedSplicedOrAppendedSegmentsAreRefused) {
  const Key key = key_of(1);
  const std::string sealed = seal(random_bytes(300, 6), key, 64);
  const std::size_t whole_segment = 64 + kTag;
  const auto segment = [&](const std::string& file, std::size_t i) {
    return file.substr(kHeader + i * whole_segment, whole_segment);
  };
  std::string swapped = sealed;
  swapped.replace(kHeader, whole_segment, segment(sealed, 1));
  swapped.replace(kHeader + whole_segment, whole_segment, segment(sealed, 0));
  EXPECT_THROW(open_sealed(swapped, key), SealError);
  // The same segment of another file under the same key: another nonce prefix and another header.
  const std::string other = seal(random_bytes(300, 6), key, 64);
  std::string spliced = sealed;
  spliced.replace(kHeader + whole_segment, whole_segment, segment(other, 1));
  EXPECT_THROW(open_sealed(spliced, key), SealError);
  EXPECT_THROW(open_sealed(sealed + "x", key), SealError);
  EXPECT_THROW(open_sealed(sealed + sealed.substr(sealed.size() - 60 - kTag), key), SealError);
  EXPECT_THROW(open_sealed("not a backup at all, but long enough to hold a header", key), SealError);
}

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::fresh_test_dir("backup");
    data_ = root_ / "data";
    keys_ = root_ / "keys";
    fs::create_directories(data_);
    fs::create_directories(keys_);
    key_file_ = keys_ / "backup.key";
    create_key(key_file_, data_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // An index with a cached repo's metadata, two stored files (a.bin's chunk is "kept", b.bin's "lost") and a
  // user record, and a secret key beside it.
  void fill_data_dir() {
    auto index = open_rocksdb_index(data_ / "index");
    index->put_meta("pin|model/acme/tiny@abc", "1");
    index->records().write(RecordTable::identities, {{"user|alice", "sealed"}}, true);
    index->commit_blob(blob("a", "kept"), {{kRepo, "abc", "a.bin"}}, BlobScope{true, {}});
    index->commit_blob(blob("b", "lost"), {{kRepo, "abc", "b.bin"}}, BlobScope{true, {}});
    std::ofstream(data_ / "secret.key") << std::string(64, 'a') << "\n";
  }

  static BlobEntry blob(const std::string& etag_char, const std::string& chunk) {
    BlobEntry b;
    b.etag = std::string(64, etag_char[0]);
    b.size = chunk.size();
    b.chunk_size = 1024;
    b.chunks.push_back(ChunkRef{chunk_id(chunk), {}, static_cast<std::uint32_t>(chunk.size())});
    return b;
  }
  static Sha256 chunk_id(const std::string& chunk) {
    return cache::sha256(std::span(reinterpret_cast<const std::uint8_t*>(chunk.data()), chunk.size()));
  }
  // The chunk file of `chunk` in `data_dir`'s store.
  static void put_chunk(const fs::path& data_dir, const std::string& chunk) {
    const fs::path path = ChunkStore(data_dir).chunk_path(chunk_id(chunk));
    fs::create_directories(path.parent_path());
    std::ofstream(path) << chunk;
  }
  static inline const RepoId kRepo{RepoType::model, "acme/tiny"};

  Made back_up() {
    auto index = open_rocksdb_index(data_ / "index");
    return make_backup(*index, data_, data_ / "secret.key", checked_place(data_, root_ / "backups", key_file_));
  }

  fs::path root_, data_, keys_, key_file_;
};

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_mode & 0777;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST_F(BackupTest, ANewKeyIsPrivateRandomAndNeverOverwritten) {
  EXPECT_EQ(mode_of(key_file_), 0600u);
  const std::string text = read_text(key_file_);
  EXPECT_EQ(text.size(), 65u);
  EXPECT_NO_THROW(read_key(key_file_));
  EXPECT_THROW(create_key(key_file_, data_), std::invalid_argument);
  EXPECT_EQ(read_text(key_file_), text);
  EXPECT_THROW(create_key(data_ / "backup.key", data_), std::invalid_argument);
  EXPECT_FALSE(fs::exists(data_ / "backup.key"));
}

TEST_F(BackupTest, APlaceInsideTheDataDirectoryOrAKeyOthersCanReadIsRefused) {
  EXPECT_NO_THROW(checked_place(data_, root_ / "backups", key_file_));
  EXPECT_THROW(checked_place(data_, data_ / "backups", key_file_), std::invalid_argument);
  EXPECT_THROW(checked_place(data_, data_, key_file_), std::invalid_argument);
  EXPECT_THROW(checked_place(data_ / "sub/..", data_ / "backups", key_file_), std::invalid_argument);
  EXPECT_THROW(checked_place(data_, "", key_file_), std::invalid_argument);
  EXPECT_THROW(checked_place(data_, root_ / "backups", ""), std::invalid_argument);
  EXPECT_THROW(checked_place(data_, root_ / "backups", keys_ / "missing.key"), std::invalid_argument);
  fs::copy_file(key_file_, data_ / "inside.key");
  EXPECT_THROW(checked_place(data_, root_ / "backups", data_ / "inside.key"), std::invalid_argument);
  fs::permissions(key_file_, fs::perms::group_read, fs::perm_options::add);
  try {
    checked_place(data_, root_ / "backups", key_file_);
    FAIL() << "a key file others can read was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
  std::ofstream(keys_ / "short.key") << "abcd\n";
  fs::permissions(keys_ / "short.key", fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_THROW(read_key(keys_ / "short.key"), std::invalid_argument);
}

TEST_F(BackupTest, ABackupRestoresTheIndexAndTheSecretKeyIntoAFreshDirectory) {
  fill_data_dir();
  const Made made = back_up();
  EXPECT_EQ(made.file.parent_path(), root_ / "backups");
  EXPECT_TRUE(made.file.filename().string().starts_with("inferllama-backup-"));
  EXPECT_EQ(made.file.extension(), ".ilbk");
  EXPECT_EQ(mode_of(made.file), 0600u);
  EXPECT_EQ(fs::file_size(made.file), made.bytes);
  EXPECT_FALSE(fs::exists(data_ / "backup-staging"));
  EXPECT_EQ(std::distance(fs::directory_iterator(root_ / "backups"), fs::directory_iterator()), 1);

  const Key key = read_key(key_file_);
  const Contents contents = check_backup(made.file, key);
  EXPECT_GT(contents.index_files, 0u);
  ASSERT_TRUE(contents.secret_key);
  EXPECT_EQ(*contents.secret_key, std::string(64, 'a') + "\n");

  const fs::path fresh = root_ / "fresh";
  fs::create_directories(fresh);
  put_chunk(fresh, "kept");  // as an operator puts back hosted repos' chunks
  check_target(contents, fresh, fresh / "secret.key", false);
  const Restored restored = restore_backup(made.file, key, fresh, fresh / "secret.key", false);
  EXPECT_FALSE(restored.moved_aside);
  EXPECT_TRUE(restored.wrote_secret_key);
  EXPECT_EQ(restored.forgotten_files, 1u);
  EXPECT_EQ(read_text(fresh / "secret.key"), std::string(64, 'a') + "\n");
  EXPECT_EQ(mode_of(fresh / "secret.key"), 0600u);
  EXPECT_FALSE(fs::exists(fresh / "restore-staging"));
  auto index = open_rocksdb_index(fresh / "index");
  EXPECT_EQ(index->get_meta("pin|model/acme/tiny@abc"), "1");
  EXPECT_EQ(index->records().get(RecordTable::identities, "user|alice"), "sealed");
  // A file whose chunks are there stays stored; one whose chunks are not is forgotten, to be fetched again.
  EXPECT_TRUE(index->get_blob(std::string(64, 'a')));
  EXPECT_FALSE(index->get_blob(std::string(64, 'b')));
  EXPECT_EQ(index->chunk_refcount(chunk_id("lost")), 0u);
  EXPECT_TRUE(index->get_file(kRepo, "abc", "b.bin"));
}

TEST_F(BackupTest, TwoBackupsInOneSecondGetTwoNames) {
  fill_data_dir();
  const Made first = back_up();
  const Made second = back_up();
  EXPECT_NE(first.file, second.file);
  EXPECT_EQ(second.time - first.time, std::chrono::seconds(1));
}

TEST_F(BackupTest, ARestoreRefusesAnIndexThereUnlessForcedAndThenKeepsIt) {
  fill_data_dir();
  const Made made = back_up();
  const Key key = read_key(key_file_);
  const Contents contents = check_backup(made.file, key);
  {
    auto index = open_rocksdb_index(data_ / "index");
    index->put_meta("later", "x");
  }
  EXPECT_THROW(check_target(contents, data_, data_ / "secret.key", false), std::invalid_argument);
  EXPECT_THROW(restore_backup(made.file, key, data_, data_ / "secret.key", false), std::invalid_argument);
  const Restored restored = restore_backup(made.file, key, data_, data_ / "secret.key", true);
  ASSERT_TRUE(restored.moved_aside);
  EXPECT_FALSE(restored.wrote_secret_key);  // the same key is there already
  EXPECT_EQ(open_rocksdb_index(*restored.moved_aside)->get_meta("later"), "x");
  auto index = open_rocksdb_index(data_ / "index");
  EXPECT_FALSE(index->get_meta("later"));
  EXPECT_EQ(index->get_meta("pin|model/acme/tiny@abc"), "1");
}

TEST_F(BackupTest, ARestoreRefusesAnotherSecretKeyAndAWrongKeyWritesNothing) {
  fill_data_dir();
  const Made made = back_up();
  const Key key = read_key(key_file_);
  const fs::path fresh = root_ / "fresh";
  fs::create_directories(fresh);
  std::ofstream(fresh / "secret.key") << std::string(64, 'b') << "\n";
  EXPECT_THROW(check_target(check_backup(made.file, key), fresh, fresh / "secret.key", false), std::invalid_argument);
  fs::remove(fresh / "secret.key");

  EXPECT_THROW(check_backup(made.file, key_of(9)), SealError);
  EXPECT_THROW(restore_backup(made.file, key_of(9), fresh, fresh / "secret.key", false), SealError);
  std::string bytes = read_text(made.file);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x40);
  std::ofstream(root_ / "altered.ilbk", std::ios::binary) << bytes;
  EXPECT_THROW(restore_backup(root_ / "altered.ilbk", key, fresh, fresh / "secret.key", false), SealError);
  EXPECT_TRUE(fs::is_empty(fresh));
}

TEST_F(BackupTest, RetentionDeletesOnlyTheNodesOwnOldBackups) {
  const fs::path dir = root_ / "backups";
  fs::create_directories(dir);
  const auto touch = [&](const std::string& name) { std::ofstream(dir / name) << "x"; };
  touch("inferllama-backup-20200101T000000Z.ilbk");  // old: deleted
  touch("inferllama-backup-20240102T030405Z.ilbk");  // old: deleted
  touch("inferllama-backup-20240110T000000Z.ilbk");  // within retention: kept
  touch("inferllama-backup-20200101T000000Z.ilbk.tmp");
  touch("inferllama-backup-2020010100000000.ilbk");
  touch("inferllama-backup-20201301T000000Z.ilbk");  // month 13: not a name the node gives
  touch("other-20200101T000000Z.ilbk");
  touch("notes.txt");
  fs::create_directories(dir / "inferllama-backup-20200102T000000Z.ilbk");  // a directory: left alone
  std::tm tm{};
  tm.tm_year = 124;
  tm.tm_mon = 0;
  tm.tm_mday = 20;
  const auto now = std::chrono::system_clock::from_time_t(timegm(&tm));  // 2024-01-20
  const auto deleted = expire_backups(dir, std::chrono::days(14), now);
  EXPECT_EQ(deleted.size(), 2u);
  EXPECT_FALSE(fs::exists(dir / "inferllama-backup-20200101T000000Z.ilbk"));
  EXPECT_FALSE(fs::exists(dir / "inferllama-backup-20240102T030405Z.ilbk"));
  for (const char* kept : {"inferllama-backup-20240110T000000Z.ilbk", "inferllama-backup-20200101T000000Z.ilbk.tmp",
                           "inferllama-backup-2020010100000000.ilbk", "inferllama-backup-20201301T000000Z.ilbk",
                           "other-20200101T000000Z.ilbk", "notes.txt", "inferllama-backup-20200102T000000Z.ilbk"}) {
    EXPECT_TRUE(fs::exists(dir / kept)) << kept;
  }
  tm.tm_mday = 10;
  EXPECT_EQ(newest_backup(dir), std::chrono::system_clock::from_time_t(timegm(&tm)));
  EXPECT_FALSE(newest_backup(root_ / "none"));
}

}  // namespace
}  // namespace inferllama::backup
