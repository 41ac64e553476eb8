// What a scanner found, bounded whatever the input: the first kMaxFindings distinct findings, each cut to
// kMaxFindingLength bytes, and how many there were in all.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/scan.hpp"

namespace inferllama::scan {

class Findings {
 public:
  // A finding equal to a kept one is not counted again; past kMaxFindings only the count grows.
  void add(std::string_view text);
  // Findings beyond those added, not kept.
  void count_more(std::uint32_t n);
  bool empty() const { return total_ == 0; }
  std::uint32_t total() const { return total_; }
  const std::vector<std::string>& kept() const { return kept_; }

 private:
  std::vector<std::string> kept_;
  std::uint32_t total_ = 0;
};

// `text` made printable and short: control and non-ASCII bytes as \xNN, cut to `limit` bytes with "...".
std::string printable(std::string_view text, std::size_t limit = kMaxFindingLength);

}  // namespace inferllama::scan
