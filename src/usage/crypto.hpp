// Random bytes for keys and nonces (hex is in inferllama/digest.hpp, SHA-256 in cache/hashing.hpp).
#pragma once
#include <openssl/rand.h>

#include <array>
#include <cstddef>
#include <stdexcept>

namespace inferllama::usage::crypto {

// From the CSPRNG; throws when it cannot deliver (never silently weaker randomness).
template <std::size_t N>
std::array<unsigned char, N> random_bytes() {
  std::array<unsigned char, N> out{};
  if (RAND_bytes(out.data(), static_cast<int>(N)) != 1) throw std::runtime_error("the CSPRNG failed");
  return out;
}

}  // namespace inferllama::usage::crypto
