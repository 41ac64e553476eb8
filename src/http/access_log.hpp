// The access log: one JSON object a line per request, on stdout ("-") or in a file of its own, never on
// stderr, which carries the node's own log. Which fields, and what they mean: README.md, "Observability".
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "inferllama/clock.hpp"
#include "inferllama/config.hpp"

namespace inferllama::http {

// Where the bytes of a file answer came from (the access log's "cache" field).
enum class CacheStatus : std::uint8_t {
  none,    // "-": no file was answered (metadata, errors, refusals, torrents, the tracker, pad files, ...)
  hit,     // the file was stored, complete and verified: served from its chunks, nothing fetched for it
  miss,    // it was not stored: this request asked the Hub and started its download (a HEAD only asks)
  stream,  // it was being downloaded for an earlier request: this one joined that download (no second fetch)
  pass,    // its repo's rule is pass: streamed from the upstream to this client, kept nowhere
};
const char* cache_status_name(CacheStatus status);

// One request as the access log writes it. The strings are looked at, not kept.
struct AccessEntry {
  std::chrono::system_clock::time_point time;  // when the request was read
  std::string_view remote;                     // the client (behind a trusted proxy: the one it names)
  std::string_view identity;                   // a node user's name, "admin" or "anon"; never a credential
  std::string_view method;
  std::string_view target;  // passkeys already taken out (redact_target)
  std::string_view route;
  unsigned status = 0;
  std::uint64_t bytes = 0;        // body bytes written to the client
  std::uint64_t duration_us = 0;  // from `time` to the last byte written
  CacheStatus cache = CacheStatus::none;
  std::string_view user_agent;  // as the client sent it: sanitised when written
};

// The longest User-Agent the log keeps, in bytes (cut at a character boundary).
inline constexpr std::size_t kMaxLoggedUserAgent = 256;

// Appends `entry` as one JSON line (newline included). Strings are escaped as JSON and invalid UTF-8 becomes
// U+FFFD; the User-Agent also loses its control characters (each becomes '?') and is cut to
// kMaxLoggedUserAgent bytes.
void append_access_line(std::string& out, const AccessEntry& entry);
// "2026-12-07T01:14:16.829123Z": RFC 3339, UTC, whole microseconds.
void append_rfc3339_micros(std::string& out, std::chrono::system_clock::time_point time);

class AccessLog {
 public:
  // Per `config.access_log`: "" none (nullptr); "-" stdout; else a file, a relative path being in the data
  // directory, opened for appending and created mode 0600, and rotated daily unless access_log_retention is
  // 0 (see rotate(); `clock` says when a day ends). Throws std::runtime_error naming the key when the file
  // cannot be opened.
  static std::unique_ptr<AccessLog> open(const Config& config, const Clock& clock = system_clock());
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Writes whole lines (one write(2) each, so lines of concurrent requests never mix), after rotating the
  // file when the day has changed since its last line.
  void write(std::string_view lines);
  // For a rotated file: when the UTC day has changed since its last line, renames it <file>.YYYY-MM-DD
  // after that day (log_rotation.hpp) and opens a new one; deletes rotated files whose day is
  // access_log_retention old. On failure the file in use stays and the reason is returned; "" on success.
  std::string rotate();
  // Opens the file at its path again, after logrotate moved it away (SIGHUP); stdout has nothing to
  // reopen. The descriptor keeps its number (dup2), so a write in progress goes to the old file or the
  // new one, whole. On failure the old file stays in use and the reason is returned; "" on success.
  std::string reopen();
  // The file, or "-" for stdout.
  const std::filesystem::path& path() const { return path_; }

 private:
  AccessLog(int fd, std::filesystem::path path, const Clock& clock, std::chrono::seconds retention);
  std::string rotate_locked();  // under write_mutex_

  const int fd_;
  const std::filesystem::path path_;
  const Clock& clock_;
  const std::chrono::seconds retention_;  // 0: the file is not rotated (an outside logrotate may be)
  std::mutex write_mutex_;                // a line longer than a pipe's atomic write must not interleave with another
  bool failing_ = false;                  // under write_mutex_: the last write failed (logged once per failure spell)
  std::chrono::sys_days day_;             // under write_mutex_: the UTC day of the file's lines
};

}  // namespace inferllama::http
