#include "http/log_rotation.hpp"

#include <string>
#include <system_error>

#include "usage/usage_log.hpp"

namespace inferllama::http {

std::filesystem::path rotated_path(const std::filesystem::path& file, std::string_view day) {
  const std::string base = file.string() + "." + std::string(day);
  std::filesystem::path candidate = base;
  std::error_code ec;
  for (unsigned n = 1; std::filesystem::exists(candidate, ec); ++n) candidate = base + "." + std::to_string(n);
  return candidate;
}

std::vector<std::filesystem::path> expired_rotations(const std::filesystem::path& file, SystemTime now,
                                                     std::chrono::seconds retention) {
  constexpr std::size_t kDaySize = 10;  // "2026-12-01"
  const std::string prefix = file.filename().string() + ".";
  std::vector<std::filesystem::path> expired;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(file.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix) || name.size() < prefix.size() + kDaySize) continue;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const std::string_view suffix = rest.substr(kDaySize);
    if (!suffix.empty() && (suffix.size() < 2 || suffix[0] != '.' ||
                            suffix.find_first_not_of("0123456789", 1) != std::string_view::npos)) {
      continue;
    }
    const auto day = usage::parse_day(rest.substr(0, kDaySize));
    if (day && *day + retention <= now) expired.push_back(entry.path());
  }
  return expired;
}

}  // namespace inferllama::http
