#pragma once
#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace inferllama {

// A fixed-size hash value; the Tag keeps SHA-1 and SHA-256 values from being mixed up.
template <std::size_t N, class Tag>
struct Digest {
  static constexpr std::size_t size = N;
  std::array<std::uint8_t, N> bytes{};

  std::string hex() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(2 * N, '0');
    for (std::size_t i = 0; i < N; ++i) {
      out[2 * i] = digits[bytes[i] >> 4];
      out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    return out;
  }
  std::string_view raw() const { return {reinterpret_cast<const char*>(bytes.data()), N}; }

  static std::optional<Digest> from_hex(std::string_view text) {
    if (text.size() != 2 * N) return std::nullopt;
    Digest d;
    for (std::size_t i = 0; i < N; ++i) {
      int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      d.bytes[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return d;
  }
  static std::optional<Digest> from_raw(std::string_view raw) {
    if (raw.size() != N) return std::nullopt;
    Digest d;
    for (std::size_t i = 0; i < N; ++i) d.bytes[i] = static_cast<std::uint8_t>(raw[i]);
    return d;
  }
  auto operator<=>(const Digest&) const = default;

 private:
  static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
};

using Sha256 = Digest<32, struct Sha256Tag>;
using Sha1 = Digest<20, struct Sha1Tag>;

}  // namespace inferllama
