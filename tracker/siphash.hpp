#pragma once
// SipHash-2-4 (Aumasson & Bernstein): a fast keyed MAC for short inputs. It names UDP connection ids
// and spreads info-hashes over the swarm table so crafted hashes cannot pile into one bucket.
#include <array>
#include <cstdint>
#include <cstring>
#include <span>

namespace inferllama::tracker {

using SipKey = std::array<std::uint64_t, 2>;

inline std::uint64_t siphash24(const SipKey& key, std::span<const std::uint8_t> in) {
  auto rotl = [](std::uint64_t x, int b) { return (x << b) | (x >> (64 - b)); };
  std::uint64_t v0 = 0x736f6d6570736575ULL ^ key[0];
  std::uint64_t v1 = 0x646f72616e646f6dULL ^ key[1];
  std::uint64_t v2 = 0x6c7967656e657261ULL ^ key[0];
  std::uint64_t v3 = 0x7465646279746573ULL ^ key[1];
  auto round = [&] {
    v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
    v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
    v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
    v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
  };
  const std::size_t whole = in.size() / 8 * 8;
  for (std::size_t i = 0; i < whole; i += 8) {
    std::uint64_t m = 0;
    for (int b = 7; b >= 0; --b) m = m << 8 | in[i + static_cast<std::size_t>(b)];
    v3 ^= m;
    round(), round();
    v0 ^= m;
  }
  std::uint64_t last = static_cast<std::uint64_t>(in.size() & 0xff) << 56;
  for (std::size_t i = whole; i < in.size(); ++i) last |= static_cast<std::uint64_t>(in[i]) << (8 * (i - whole));
  v3 ^= last;
  round(), round();
  v0 ^= last;
  v2 ^= 0xff;
  round(), round(), round(), round();
  return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace inferllama::tracker
