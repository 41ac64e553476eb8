#pragma once
#include <cstdint>
#include <string_view>

namespace inferllama::http {

// A single byte range of a `size`-byte file (RFC 9110 §14). Several ranges, or a header we don't
// understand, are answered with the whole file, as the RFC allows.
struct ByteRange {
  enum class Kind { whole, partial, unsatisfiable };
  Kind kind = Kind::whole;
  std::uint64_t first = 0;
  std::uint64_t last = 0;  // inclusive
  std::uint64_t length() const { return last - first + 1; }
};

ByteRange parse_range(std::string_view header, std::uint64_t size);

}  // namespace inferllama::http
