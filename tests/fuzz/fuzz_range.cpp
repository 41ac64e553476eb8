// libFuzzer target: http::parse_range (src/http/range.cpp). The first 8 input bytes (little-endian,
// zero-padded when shorter) are the file size; the rest is the Range header value.
#include <charconv>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "http/range.hpp"

namespace {

std::optional<std::uint64_t> number(std::string_view t) {
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (t.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || p != t.data() + t.size()) return std::nullopt;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using inferllama::http::ByteRange;
  std::uint8_t raw[8] = {};
  const std::size_t n = size < 8 ? size : 8;
  std::memcpy(raw, data, n);
  std::uint64_t file_size = 0;
  for (int i = 7; i >= 0; --i) file_size = file_size << 8 | raw[i];
  const std::string header(reinterpret_cast<const char*>(data) + n, size - n);

  const ByteRange r = inferllama::http::parse_range(header, file_size);
  const std::string shown = header.substr(0, 200);
  switch (r.kind) {
    case ByteRange::Kind::partial:
      FUZZ_CHECK(r.first <= r.last && r.last < file_size,
                 "partial [%" PRIu64 ", %" PRIu64 "] of size %" PRIu64 " for \"%s\"", r.first, r.last, file_size,
                 shown.c_str());
      FUZZ_CHECK(r.length() >= 1 && r.length() <= file_size, "bad length %" PRIu64, r.length());
      break;
    case ByteRange::Kind::unsatisfiable: {
      // Only when size == 0, first >= size, or a zero-length suffix ("bytes=-0").
      const std::string_view h = header;
      FUZZ_CHECK(h.starts_with("bytes="), "unsatisfiable without bytes= in \"%s\"", shown.c_str());
      const std::string_view spec = h.substr(6);
      const auto dash = spec.find('-');
      FUZZ_CHECK(dash != std::string_view::npos && spec.find(',') == std::string_view::npos,
                 "unsatisfiable for a header that is not a single range: \"%s\"", shown.c_str());
      const std::string_view from = spec.substr(0, dash), to = spec.substr(dash + 1);
      if (from.empty()) {
        const auto suffix = number(to);
        FUZZ_CHECK(suffix && (*suffix == 0 || file_size == 0),
                   "unsatisfiable suffix range \"%s\" of size %" PRIu64, shown.c_str(), file_size);
      } else {
        const auto first = number(from);
        FUZZ_CHECK(first && (file_size == 0 || *first >= file_size),
                   "unsatisfiable range \"%s\" of size %" PRIu64, shown.c_str(), file_size);
      }
      break;
    }
    case ByteRange::Kind::whole:
      break;
  }
  return 0;
}
