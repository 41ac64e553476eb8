// Daily rotation of a log file the node writes itself (the access log): when a UTC day ends, <file> is
// renamed <file>.YYYY-MM-DD after the day of its lines, and rotated files are deleted once the first line
// they can hold (their day's midnight) is `retention` old, so no line is kept longer than that.
#pragma once
#include <chrono>
#include <filesystem>
#include <string_view>
#include <vector>

#include "inferllama/clock.hpp"

namespace inferllama::http {

// Where a file holding the lines of `day` ("2026-12-01") goes: <file>.<day>, or <file>.<day>.N (N from 1)
// when that name is taken (a clock set back).
std::filesystem::path rotated_path(const std::filesystem::path& file, std::string_view day);

// The rotated files of `file` (<file>.YYYY-MM-DD, with or without .N) that are due for deletion at `now`.
std::vector<std::filesystem::path> expired_rotations(const std::filesystem::path& file, SystemTime now,
                                                     std::chrono::seconds retention);

}  // namespace inferllama::http
