#include "util/rendezvous.hpp"

#include <openssl/evp.h>

#include <string>

namespace inferllama {

std::uint64_t rendezvous_weight(std::string_view name, std::string_view key) {
  std::string input;
  input.reserve(name.size() + 1 + key.size());
  input.append(name).append(1, '\n').append(key);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(input.data(), input.size(), digest, &length, EVP_sha256(), nullptr);
  std::uint64_t weight = 0;
  for (int i = 0; i < 8; ++i) weight = (weight << 8) | digest[i];
  return weight;
}

}  // namespace inferllama
