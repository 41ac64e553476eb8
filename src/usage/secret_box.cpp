#include "usage/secret_box.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "inferllama/digest.hpp"
#include "usage/crypto.hpp"

namespace inferllama::usage {
namespace {

constexpr std::string_view kVersion = "v1:";
constexpr std::size_t kNonceSize = 12;
constexpr std::size_t kTagSize = 16;

using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

CipherContext new_context() {
  CipherContext ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  if (!ctx) throw std::runtime_error("cannot allocate a cipher context");
  return ctx;
}

std::runtime_error file_error(const std::string& what, const std::filesystem::path& file) {
  return std::runtime_error(what + " " + file.string() + ": " + std::strerror(errno));
}

std::array<unsigned char, 32> parse_key(const std::string& text, const std::filesystem::path& file) {
  std::string_view digits = text;
  while (!digits.empty() && (digits.back() == '\n' || digits.back() == '\r')) digits.remove_suffix(1);
  auto bytes = unhex(digits);
  if (!bytes || bytes->size() != 32) {
    throw std::runtime_error("the secret key file " + file.string() +
                             " is malformed: it must hold 64 hex characters (a 256-bit key)");
  }
  std::array<unsigned char, 32> key{};
  std::memcpy(key.data(), bytes->data(), key.size());
  return key;
}

// Creates the key file, or returns false when another process created it first.
bool create_key_file(const std::filesystem::path& file, const std::string& contents) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw file_error("cannot create the secret key file", file);
  }
  std::size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  const bool ok = written == contents.size() && ::fsync(fd) == 0;
  const int write_errno = errno;
  ::close(fd);
  if (!ok) {
    // A half-written key would be refused as malformed at the next start: leave none.
    ::unlink(file.c_str());
    errno = write_errno;
    throw file_error("cannot write the secret key file", file);
  }
  // The file's name reaches the disk with its directory.
  const int dir = ::open(file.parent_path().empty() ? "." : file.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return true;
}

}  // namespace

SecretBox SecretBox::from_file(const std::filesystem::path& key_file) {
  if (!std::filesystem::exists(key_file)) {
    if (!key_file.parent_path().empty()) std::filesystem::create_directories(key_file.parent_path());
    const auto key = crypto::random_bytes<32>();
    if (create_key_file(key_file, hex(key) + "\n")) {
      spdlog::info("created the secret key file {}", key_file.string());
      return SecretBox(key);
    }
  }
  std::ifstream in(key_file, std::ios::binary);
  if (!in) throw file_error("cannot read the secret key file", key_file);
  std::ostringstream text;
  text << in.rdbuf();
  struct stat st {};
  if (::stat(key_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("the secret key file {} can be read by other users: chmod 600 it", key_file.string());
  }
  return SecretBox(parse_key(text.str(), key_file));
}

std::string SecretBox::seal(std::string_view plaintext) const {
  const auto nonce = crypto::random_bytes<kNonceSize>();
  std::string out(kNonceSize + plaintext.size() + kTagSize, '\0');
  std::memcpy(out.data(), nonce.data(), kNonceSize);
  auto* cipher = reinterpret_cast<unsigned char*>(out.data() + kNonceSize);
  auto ctx = new_context();
  int produced = 0;
  int finished = 0;
  const bool ok =
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce.data()) == 1 &&
      EVP_EncryptUpdate(ctx.get(), cipher, &produced, reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx.get(), cipher + produced, &finished) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), cipher + plaintext.size()) == 1;
  if (!ok) throw std::runtime_error("AES-256-GCM encryption failed");
  return std::string(kVersion) + hex(out);
}

std::optional<std::string> SecretBox::open(std::string_view sealed) const {
  if (!sealed.starts_with(kVersion)) return std::nullopt;
  auto raw = unhex(sealed.substr(kVersion.size()));
  if (!raw || raw->size() < kNonceSize + kTagSize) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw->data());
  const std::size_t cipher_size = raw->size() - kNonceSize - kTagSize;
  std::string plaintext(cipher_size, '\0');
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  // The tag is only read by OpenSSL, whatever the signature says.
  auto* tag = const_cast<unsigned char*>(bytes + kNonceSize + cipher_size);
  auto ctx = new_context();
  int produced = 0;
  int finished = 0;
  const bool ok =
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), bytes) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out, &produced, bytes + kNonceSize, static_cast<int>(cipher_size)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), out + produced, &finished) == 1;
  if (!ok) return std::nullopt;
  return plaintext;
}

}  // namespace inferllama::usage
