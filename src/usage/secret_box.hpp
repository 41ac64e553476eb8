#pragma once
#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace inferllama::usage {

// Encrypts small secrets at rest (users' own Hub tokens) with AES-256-GCM under a node key kept in a
// file of its own (0600), created with a CSPRNG the first time. Each value gets a fresh 96-bit nonce.
class SecretBox {
 public:
  // Reads the key file, creating it when missing. Throws std::runtime_error when it cannot.
  static SecretBox from_file(const std::filesystem::path& key_file);
  explicit SecretBox(const std::array<unsigned char, 32>& key) : key_(key) {}

  // "v1:" + hex(nonce | ciphertext | tag).
  std::string seal(std::string_view plaintext) const;
  // nullopt when the value was not sealed under this key or was altered.
  std::optional<std::string> open(std::string_view sealed) const;

 private:
  std::array<unsigned char, 32> key_;
};

}  // namespace inferllama::usage
