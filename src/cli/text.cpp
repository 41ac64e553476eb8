#include "cli/text.hpp"

#include <algorithm>
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
