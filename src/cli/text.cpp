#include "cli/text.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace inferllama::cli {

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string ago(std::int64_t unix_ms) {
  if (unix_ms == 0) return "never";
  const auto now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  const std::int64_t seconds = std::max<std::int64_t>(0, (now - unix_ms) / 1000);
  if (seconds < 120) return std::to_string(seconds) + " s ago";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + " min ago";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + " h ago";
  return std::to_string(seconds / 86400) + " d ago";
}

void print_table(const std::vector<Column>& columns, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& column : columns) widths.push_back(column.title.size());
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  auto print_line = [&](auto cell_of) {
    std::string line;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      const std::string cell = cell_of(i);
      const std::string pad(widths[i] - cell.size(), ' ');
      if (i > 0) line += "  ";
      line += columns[i].right_aligned ? pad + cell : cell + (i + 1 < columns.size() ? pad : "");
    }
    std::printf("%s\n", line.c_str());
  };
  print_line([&](std::size_t i) { return columns[i].title; });
  for (const auto& row : rows) print_line([&](std::size_t i) { return i < row.size() ? row[i] : std::string(); });
}

}  // namespace inferllama::cli
