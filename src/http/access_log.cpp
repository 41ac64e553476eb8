#include "http/access_log.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <limits>
#include <stdexcept>

#include "http/log_rotation.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::http {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void append_digits(std::string& out, std::uint64_t value, int width) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0 && n < 20);
  for (int i = n; i < width; ++i) out += '0';
  while (n > 0) out += digits[--n];
}

// The length of the well-formed UTF-8 sequence at `s[i]` (RFC 3629: no overlongs, no surrogates, nothing
// past U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;  // the range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (i + length > s.size() || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  }
  return length;
}

// A JSON string of `s`: quotes, backslashes and control characters escaped (or, with `controls_as`, each
// control character replaced by it), invalid UTF-8 as U+FFFD.
void append_json_string(std::string& out, std::string_view s, char controls_as = 0) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x80) {
      if (const std::size_t n = utf8_sequence(s, i)) {
        out.append(s.data() + i, n);
        i += n;
      } else {
        out += "\xef\xbf\xbd";
        ++i;
      }
      continue;
    }
    if (ch < 0x20 || ch == 0x7f) {
      if (controls_as) {
        out += controls_as;
      } else if (ch == '\n') {
        out += "\\n";
      } else if (ch == '\t') {
        out += "\\t";
      } else {
        out += "\\u00";
        out += kHex[ch >> 4];
        out += kHex[ch & 0xf];
      }
    } else if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else {
      out += static_cast<char>(ch);
    }
    ++i;
  }
  out += '"';
}

// At most `max` bytes of `s`, not ending inside a UTF-8 sequence.
std::string_view cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t end = max;
  // Back off over continuation bytes to the start of the sequence that crosses the cut (at most 3).
  for (int k = 0; k < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80; ++k) --end;
  return s.substr(0, end);
}

void append_field(std::string& out, const char* name) {
  out += ",\"";
  out += name;
  out += "\":";
}

std::filesystem::path access_log_path(const Config& config) {
  if (config.access_log == "-") return "-";
  const std::filesystem::path path(config.access_log);
  return path.is_absolute() ? path : config.data_dir / path;
}

int open_for_append(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

}  // namespace

const char* cache_status_name(CacheStatus status) {
  switch (status) {
    case CacheStatus::hit:
      return "hit";
    case CacheStatus::miss:
      return "miss";
    case CacheStatus::stream:
      return "stream";
    case CacheStatus::pass:
      return "pass";
    case CacheStatus::none:
      break;
  }
  return "-";
}

void append_rfc3339_micros(std::string& out, std::chrono::system_clock::time_point time) {
  using namespace std::chrono;
  const auto since_epoch = floor<microseconds>(time).time_since_epoch();
  const auto seconds = floor<std::chrono::seconds>(since_epoch);
  // The date and time of day change once a second: each thread formats them once and keeps them.
  thread_local std::int64_t cached_second = std::numeric_limits<std::int64_t>::min();
  thread_local char cached[32] = {};
  thread_local std::size_t cached_length = 0;
  if (seconds.count() != cached_second) {
    const std::time_t t = static_cast<std::time_t>(seconds.count());
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    cached_length = std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = seconds.count();
  }
  out.append(cached, cached_length);
  out += '.';
  append_digits(out, static_cast<std::uint64_t>((since_epoch - seconds).count()), 6);
  out += 'Z';
}

void append_access_line(std::string& out, const AccessEntry& e) {
  out += "{\"time\":\"";
  append_rfc3339_micros(out, e.time);
  out += '"';
  append_field(out, "remote");
  append_json_string(out, e.remote);
  append_field(out, "identity");
  append_json_string(out, e.identity);
  append_field(out, "method");
  append_json_string(out, e.method);
  append_field(out, "target");
  append_json_string(out, e.target);
  append_field(out, "route");
  append_json_string(out, e.route);
  append_field(out, "status");
  append_digits(out, e.status, 1);
  append_field(out, "bytes");
  append_digits(out, e.bytes, 1);
  append_field(out, "duration_us");
  append_digits(out, e.duration_us, 1);
  append_field(out, "cache");
  out += '"';
  out += cache_status_name(e.cache);
  out += '"';
  append_field(out, "user_agent");
  append_json_string(out, cut(e.user_agent, kMaxLoggedUserAgent), '?');
  out += "}\n";
}

std::unique_ptr<AccessLog> AccessLog::open(const Config& config, const Clock& clock) {
  if (config.access_log.empty()) return nullptr;
  auto path = access_log_path(config);
  if (path == "-") {
    return std::unique_ptr<AccessLog>(new AccessLog(STDOUT_FILENO, std::move(path), clock, std::chrono::seconds(0)));
  }
  const int fd = open_for_append(path);
  if (fd < 0) {
    throw std::runtime_error("access_log: cannot open " + path.string() + ": " + std::strerror(errno));
  }
  return std::unique_ptr<AccessLog>(new AccessLog(fd, std::move(path), clock, config.access_log_retention));
}

AccessLog::AccessLog(int fd, std::filesystem::path path, const Clock& clock, std::chrono::seconds retention)
    : fd_(fd),
      path_(std::move(path)),
      clock_(clock),
      retention_(retention),
      day_(std::chrono::floor<std::chrono::days>(clock.now())) {
  // A file kept from an earlier run holds the lines of the day it was last written.
  struct stat st {};
  if (retention_.count() > 0 && ::fstat(fd_, &st) == 0 && st.st_size > 0) {
    day_ = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec));
  }
}

AccessLog::~AccessLog() {
  if (path_ != "-") ::close(fd_);
}

void AccessLog::write(std::string_view lines) {
  std::lock_guard lock(write_mutex_);
  if (retention_.count() > 0 && std::chrono::floor<std::chrono::days>(clock_.now()) != day_) {
    if (auto error = rotate_locked(); !error.empty()) spdlog::error("access log: {}", error);
  }
  const char* data = lines.data();
  std::size_t left = lines.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A full disk, a closed stdout: the request was answered all the same; say so once, not per line.
      if (!failing_) spdlog::error("cannot write the access log {}: {}", path_.string(), std::strerror(errno));
      failing_ = true;
      return;
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  if (failing_) spdlog::info("the access log {} is written again", path_.string());
  failing_ = false;
}

std::string AccessLog::rotate() {
  if (retention_.count() == 0) return {};
  std::lock_guard lock(write_mutex_);
  return rotate_locked();
}

std::string AccessLog::rotate_locked() {
  std::string error;
  const SystemTime now = clock_.now();
  if (const auto today = std::chrono::floor<std::chrono::days>(now); today != day_) {
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && st.st_size > 0) {
      const auto rotated = rotated_path(path_, usage::day_of(day_));
      if (::rename(path_.c_str(), rotated.c_str()) != 0) {
        error = "cannot rotate " + path_.string() + " to " + rotated.string() + ": " + std::strerror(errno);
      } else {
        error = reopen();
      }
    }
    day_ = today;  // whatever happened: tried again tomorrow, not at every line
  }
  for (const auto& expired : expired_rotations(path_, now, retention_)) {
    std::error_code ec;
    if (!std::filesystem::remove(expired, ec) && ec) {
      error += (error.empty() ? "" : "; ") + std::string("cannot delete ") + expired.string() + ": " + ec.message();
    }
  }
  return error;
}

std::string AccessLog::reopen() {
  if (path_ == "-") return {};
  const int fresh = open_for_append(path_);
  if (fresh < 0) return std::string("cannot open ") + path_.string() + ": " + std::strerror(errno);
  const int moved = ::dup2(fresh, fd_);
  const int error = errno;
  ::close(fresh);
  if (moved < 0) return std::string("cannot reopen ") + path_.string() + ": " + std::strerror(error);
  return {};
}

}  // namespace inferllama::http
