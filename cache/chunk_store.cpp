#include "inferllama/chunk_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <system_error>

namespace inferllama {
namespace fs = std::filesystem;
namespace {

// A chunk's file below chunks/: "ab/cd/<64 hex digits>", NUL-terminated.
using ChunkName = std::array<char, 2 + 1 + 2 + 1 + 2 * Sha256::size + 1>;

ChunkName chunk_name(const Sha256& id) {
  ChunkName name{};
  char* const digits = name.data() + 6;
  hex_to(id.bytes, digits);
  name[0] = digits[0];
  name[1] = digits[1];
  name[2] = '/';
  name[3] = digits[2];
  name[4] = digits[3];
  name[5] = '/';
  return name;
}

}  // namespace

unsigned make_private_dir(const fs::path& dir) {
  if (!dir.parent_path().empty()) fs::create_directories(dir.parent_path());
  if (fs::create_directory(dir)) fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  return static_cast<unsigned>(fs::status(dir).permissions() & (fs::perms::group_all | fs::perms::others_all));
}

ChunkStore::ChunkStore(fs::path data_dir)
    : root_(std::move(data_dir)), chunks_(root_ / "chunks"), staging_(root_ / "staging") {
  fs::create_directories(chunks_);
  chunks_fd_ = ::open(chunks_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (chunks_fd_ < 0) throw std::system_error(errno, std::generic_category(), "cannot open " + chunks_.string());
  // Staged chunks of downloads a previous run did not finish stay: the next download of that file resumes.
  fs::create_directories(staging_);
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(chunks_, ec)) {
    if (entry.is_regular_file(ec)) bytes_stored_ += entry.file_size(ec);
  }
}

ChunkStore::~ChunkStore() {
  ::close(chunks_fd_);
}

fs::path ChunkStore::chunk_path(const Sha256& id) const {
  return chunks_ / chunk_name(id).data();
}

bool ChunkStore::chunk_damaged(const Sha256& id, std::uint64_t expected_size) const {
  std::error_code ec;
  const auto size = std::filesystem::file_size(chunk_path(id), ec);
  if (ec) return ec == std::errc::no_such_file_or_directory;
  return size < expected_size;
}

bool ChunkStore::contains(const Sha256& id) const {
  std::error_code ec;
  return fs::exists(chunk_path(id), ec);
}

// On the hit path, once per request: no allocation, and the kernel walks three names, not the whole path.
int ChunkStore::open_chunk(const Sha256& id) const {
  return ::openat(chunks_fd_, chunk_name(id).data(), O_RDONLY | O_CLOEXEC);
}

fs::path ChunkStore::staging_dir(const std::string& etag) {
  fs::path dir = staging_ / etag;
  fs::create_directories(dir);
  return dir;
}

void ChunkStore::adopt(const fs::path& staged, const Sha256& id) {
  fs::path target = chunk_path(id);
  std::error_code ec;
  if (fs::exists(target, ec)) {
    fs::remove(staged, ec);
    return;
  }
  fs::create_directories(target.parent_path());
  const auto size = fs::file_size(staged);
  // Readers of the download hold open descriptors, so renaming under them is safe.
  fs::rename(staged, target);
  bytes_stored_ += size;
}

std::uint64_t ChunkStore::remove(const Sha256& id) {
  std::error_code ec;
  const fs::path path = chunk_path(id);
  const auto size = fs::file_size(path, ec);
  if (ec || !fs::remove(path, ec)) return 0;
  bytes_stored_ -= size;
  return size;
}

void ChunkStore::for_each_chunk(const std::function<void(const Sha256&)>& visit) const {
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(chunks_, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    if (auto id = Sha256::from_hex(entry.path().filename().string())) visit(*id);
  }
}

}  // namespace inferllama
