// How the commands print for people: sizes in binary units, and tables with aligned columns.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace inferllama::cli {

// "512 B", "1.5 KiB", "3.2 GiB"
std::string human_bytes(std::uint64_t bytes);

// How long ago a Unix time in milliseconds was: "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for 0.
std::string ago(std::int64_t unix_ms);

struct Column {
  std::string title;
  bool right_aligned = false;  // numbers
};
// The titles, then one line per row, each column as wide as its widest cell, two spaces apart.
void print_table(const std::vector<Column>& columns, const std::vector<std::vector<std::string>>& rows);

}  // namespace inferllama::cli
