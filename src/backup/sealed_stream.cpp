#include "backup/sealed_stream.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace inferllama::backup {
namespace {

constexpr std::string_view kMagic{"ILBK\r\n\x1a\n", 8};
constexpr std::uint16_t kVersion = 1;
constexpr std::size_t kPrefixAt = 16;
constexpr std::size_t kHeaderTagAt = 24;
constexpr std::size_t kHeaderSize = 40;
constexpr std::size_t kTagSize = 16;
constexpr std::uint32_t kHeaderCounter = 0xffffffff;
// What a reader accepts from a header: a hostile segment size must not make it allocate without bound.
constexpr std::size_t kMinSegment = 16;
constexpr std::size_t kMaxSegment = 64 << 20;

void put_u16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}
void put_u32(std::string& out, std::uint32_t v) {
  put_u16(out, static_cast<std::uint16_t>(v >> 16));
  put_u16(out, static_cast<std::uint16_t>(v & 0xffff));
}
std::uint32_t get_u32(std::string_view in) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

std::array<unsigned char, 12> nonce(std::string_view header, std::uint32_t counter) {
  std::array<unsigned char, 12> out{};
  std::memcpy(out.data(), header.data() + kPrefixAt, 8);
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<unsigned char>(counter >> (24 - 8 * i));
  return out;
}

using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

// AES-256-GCM over `size` bytes of `in` into `out` (the same size; in == out allowed) with the tag in `tag`:
// computed when sealing, checked when opening (false: the bytes or the AAD are not what was sealed).
bool gcm(bool seal, const Key& key, const std::array<unsigned char, 12>& iv, std::string_view aad, const char* in,
         std::size_t size, char* out, unsigned char* tag) {
  CipherContext ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  if (!ctx) throw std::runtime_error("cannot allocate a cipher context");
  const auto* src = reinterpret_cast<const unsigned char*>(in);
  auto* dst = reinterpret_cast<unsigned char*>(out);
  int n = 0;
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data(), seal ? 1 : 0) != 1 ||
      EVP_CipherUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                       static_cast<int>(aad.size())) != 1 ||
      (size > 0 && EVP_CipherUpdate(ctx.get(), dst, &n, src, static_cast<int>(size)) != 1)) {
    throw std::runtime_error("AES-256-GCM failed");
  }
  if (!seal && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, tag) != 1) return false;
  if (EVP_CipherFinal_ex(ctx.get(), dst + size, &n) != 1) {
    if (seal) throw std::runtime_error("AES-256-GCM failed");
    return false;
  }
  if (seal && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize, tag) != 1)
    throw std::runtime_error("AES-256-GCM failed");
  return true;
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(std::string("cannot write the backup: ") + std::strerror(errno));
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Up to `size` bytes, fewer only at the end of the file.
std::size_t read_full(int fd, char* out, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, out + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(std::string("cannot read the backup: ") + std::strerror(errno));
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

}  // namespace

SealedWriter::SealedWriter(int fd, const Key& key, std::size_t segment_size)
    : fd_(fd), key_(key), segment_size_(segment_size) {
  if (segment_size < kMinSegment || segment_size > kMaxSegment) throw std::invalid_argument("segment size");
  header_ = kMagic;
  put_u16(header_, kVersion);
  put_u16(header_, 0);
  put_u32(header_, static_cast<std::uint32_t>(segment_size));
  std::array<unsigned char, 8> prefix{};
  if (RAND_bytes(prefix.data(), prefix.size()) != 1) throw std::runtime_error("the CSPRNG failed");
  header_.append(reinterpret_cast<const char*>(prefix.data()), prefix.size());
  std::array<unsigned char, kTagSize> tag{};
  gcm(true, key_, nonce(header_, kHeaderCounter), header_, nullptr, 0, nullptr, tag.data());
  header_.append(reinterpret_cast<const char*>(tag.data()), tag.size());
  write_all(fd_, header_);
  plain_.reserve(segment_size_);
}

SealedWriter::~SealedWriter() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

void SealedWriter::write(std::string_view bytes) {
  if (finished_) throw std::logic_error("write after finish");
  while (!bytes.empty()) {
    const std::size_t take = std::min(segment_size_ - plain_.size(), bytes.size());
    plain_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (plain_.size() == segment_size_) seal(false);
  }
}

void SealedWriter::finish() {
  if (finished_) return;
  seal(true);
  finished_ = true;
}

void SealedWriter::seal(bool last) {
  if (counter_ == kHeaderCounter) throw std::runtime_error("the backup is too large for its format");
  sealed_.resize(plain_.size() + kTagSize);
  gcm(true, key_, nonce(header_, counter_), header_ + (last ? '\1' : '\0'), plain_.data(), plain_.size(),
      sealed_.data(), reinterpret_cast<unsigned char*>(sealed_.data() + plain_.size()));
  write_all(fd_, sealed_);
  ++counter_;
  plain_.clear();
}

SealedReader::SealedReader(int fd, const Key& key) : fd_(fd), key_(key) {
  header_.resize(kHeaderSize);
  if (read_full(fd_, header_.data(), kHeaderSize) < kHeaderSize || !header_.starts_with(kMagic)) {
    throw SealError("not an InferLlama backup (no .ilbk header)");
  }
  if (header_[8] != 0 || header_[9] != static_cast<char>(kVersion) || header_[10] != 0 || header_[11] != 0) {
    throw SealError("a backup of another format version: restore it with the version of inferllama that made it");
  }
  segment_size_ = get_u32(std::string_view(header_).substr(12));
  auto* tag = reinterpret_cast<unsigned char*>(header_.data() + kHeaderTagAt);
  const std::string_view signed_part = std::string_view(header_).substr(0, kHeaderTagAt);
  if (!gcm(false, key_, nonce(header_, kHeaderCounter), signed_part, nullptr, 0, nullptr, tag)) {
    throw SealError(
        "the backup key does not open this backup: it was made with another key (or its header was altered)");
  }
  if (segment_size_ < kMinSegment || segment_size_ > kMaxSegment) throw SealError("the backup's header is damaged");
}

SealedReader::~SealedReader() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

std::size_t SealedReader::read(char* out, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    if (offset_ == plain_.size()) {
      if (!open_next()) break;
      continue;
    }
    const std::size_t n = std::min(size - done, plain_.size() - offset_);
    std::memcpy(out + done, plain_.data() + offset_, n);
    offset_ += n;
    done += n;
  }
  return done;
}

bool SealedReader::open_next() {
  if (ended_) return false;
  // One byte past a whole segment says whether another follows: the file's end decides which segment is
  // read as the last, and its AAD must agree.
  const std::size_t want = segment_size_ + kTagSize + 1;
  std::size_t have = sealed_.size();
  sealed_.resize(want);
  have += read_full(fd_, sealed_.data() + have, want - have);
  const bool last = have < want;
  const std::size_t length = last ? have : want - 1;
  const std::string damaged =
      "the backup is damaged, cut short or altered (segment " + std::to_string(counter_) + " does not authenticate)";
  if (length < kTagSize) throw SealError(damaged);
  const std::size_t size = length - kTagSize;
  plain_.resize(size);
  if (!gcm(false, key_, nonce(header_, counter_), header_ + (last ? '\1' : '\0'), sealed_.data(), size, plain_.data(),
           reinterpret_cast<unsigned char*>(sealed_.data() + size))) {
    plain_.clear();
    throw SealError(damaged);
  }
  ++counter_;
  offset_ = 0;
  ended_ = last;
  if (last) {
    sealed_.clear();
  } else {
    sealed_.assign(1, sealed_[want - 1]);
  }
  return true;
}

}  // namespace inferllama::backup
