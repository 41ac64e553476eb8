#pragma once
#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace inferllama {

// The value of one hex digit (either case), or -1.
constexpr int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Writes the lower-case hex of bytes, 2 * bytes.size() characters, to `out`.
inline void hex_to(std::span<const std::uint8_t> bytes, char* out) {
  static constexpr char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0xf];
  }
}

// Lower-case hex of bytes.
inline std::string hex(std::span<const std::uint8_t> bytes) {
  std::string out(2 * bytes.size(), '0');
  hex_to(bytes, out.data());
  return out;
}
inline std::string hex(std::string_view bytes) {
  return hex(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

// Fills `out` from exactly 2 * out.size() hex digits (either case); false for anything else.
inline bool unhex_to(std::string_view text, std::span<std::uint8_t> out) {
  if (text.size() != 2 * out.size()) return false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int high = hex_digit(text[2 * i]), low = hex_digit(text[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<std::uint8_t>(high << 4 | low);
  }
  return true;
}

// The bytes of an even number of hex digits (either case); nullopt for anything else.
inline std::optional<std::string> unhex(std::string_view text) {
  std::string out(text.size() / 2, '\0');
  if (!unhex_to(text, std::span(reinterpret_cast<std::uint8_t*>(out.data()), out.size()))) return std::nullopt;
  return out;
}

// A fixed-size hash value; the Tag keeps SHA-1 and SHA-256 values from being mixed up.
template <std::size_t N, class Tag>
struct Digest {
  static constexpr std::size_t size = N;
  std::array<std::uint8_t, N> bytes{};

  std::string hex() const { return inferllama::hex(bytes); }
  std::string_view raw() const { return {reinterpret_cast<const char*>(bytes.data()), N}; }

  static std::optional<Digest> from_hex(std::string_view text) {
    Digest d;
    if (!unhex_to(text, d.bytes)) return std::nullopt;
    return d;
  }
  static std::optional<Digest> from_raw(std::string_view raw) {
    if (raw.size() != N) return std::nullopt;
    Digest d;
    for (std::size_t i = 0; i < N; ++i) d.bytes[i] = static_cast<std::uint8_t>(raw[i]);
    return d;
  }
  auto operator<=>(const Digest&) const = default;
};

using Sha256 = Digest<32, struct Sha256Tag>;
using Sha1 = Digest<20, struct Sha1Tag>;

}  // namespace inferllama
