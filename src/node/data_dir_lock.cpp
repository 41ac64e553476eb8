#include "node/data_dir_lock.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace inferllama::node {
namespace {

std::filesystem::path pid_file(const std::filesystem::path& data_dir) {
  return data_dir / "node.pid";
}

// An open-file-description lock over the whole file: released when the node's descriptor closes (or the
// process ends, however), and testable without taking it (F_OFD_GETLK), so that asking who holds it can
// never make a starting node fail.
struct flock whole_file(short type) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  return lock;
}

std::optional<pid_t> read_pid(int fd) {
  char text[32] = {};  // NOLINT(modernize-avoid-c-arrays): pread fills a plain buffer
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  if (n <= 0) return std::nullopt;
  const long pid = std::strtol(text, nullptr, 10);
  return pid > 0 ? std::optional<pid_t>(static_cast<pid_t>(pid)) : std::nullopt;
}

}  // namespace

DataDirLock::DataDirLock(const std::filesystem::path& data_dir) {
  const auto path = pid_file(data_dir);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::runtime_error("cannot open " + path.string() + ": " + std::strerror(errno));
  struct flock exclusive = whole_file(F_WRLCK);
  if (::fcntl(fd_, F_OFD_SETLK, &exclusive) != 0) {
    const auto pid = read_pid(fd_);
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("another node " + (pid ? "(pid " + std::to_string(*pid) + ") " : std::string()) +
                             "is using the data directory " + data_dir.string() +
                             ": stop it first, or give this one another --data-dir");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int error = errno;
    ::close(fd_);
    throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(error));
  }
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays, and says nothing without it
}

std::optional<pid_t> DataDirLock::holder(const std::filesystem::path& data_dir) {
  const int fd = ::open(pid_file(data_dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<pid_t> pid;
  struct flock probe = whole_file(F_WRLCK);
  if (::fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type != F_UNLCK) {
    pid = read_pid(fd);
    if (!pid) pid = 0;  // held, by a node that has not written its pid yet
  }
  ::close(fd);
  return pid;
}

}  // namespace inferllama::node
