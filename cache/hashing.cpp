#include "hashing.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace inferllama::cache {
namespace {

// One EVP context per stream, reused across init/final: cheaper than EVP_Digest's per-call setup.
class EvpContext {
 public:
  explicit EvpContext(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()), md_(md) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, md_, nullptr) != 1) {
      throw std::runtime_error("OpenSSL digest initialisation failed");
    }
  }
  EvpContext(const EvpContext& other) : ctx_(EVP_MD_CTX_new()), md_(other.md_) {
    if (ctx_ == nullptr || EVP_MD_CTX_copy_ex(ctx_, other.ctx_) != 1) {
      throw std::runtime_error("OpenSSL digest copy failed");
    }
  }
  ~EvpContext() { EVP_MD_CTX_free(ctx_); }
  EvpContext& operator=(const EvpContext&) = delete;

  void update(const void* data, std::size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  template <class D>
  D finish_and_reset() {
    D out;
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, out.bytes.data(), &len);
    EVP_DigestInit_ex(ctx_, md_, nullptr);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
  const EVP_MD* md_;
};

}  // namespace

template <class D>
struct DigestStream<D>::Impl {
  EvpContext ctx{std::is_same_v<D, Sha256> ? EVP_sha256() : EVP_sha1()};
};
template <class D>
DigestStream<D>::DigestStream() : impl_(std::make_unique<Impl>()) {}
template <class D>
DigestStream<D>::DigestStream(const DigestStream& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
template <class D>
DigestStream<D>::~DigestStream() = default;
template <class D>
void DigestStream<D>::update(std::span<const std::uint8_t> bytes) {
  impl_->ctx.update(bytes.data(), bytes.size());
}
template <class D>
void DigestStream<D>::update(std::string_view text) {
  impl_->ctx.update(text.data(), text.size());
}
template <class D>
D DigestStream<D>::finish() {
  return impl_->ctx.template finish_and_reset<D>();
}
template class DigestStream<Sha256>;
template class DigestStream<Sha1>;

Sha256 sha256(std::span<const std::uint8_t> bytes) {
  Sha256Stream s;
  s.update(bytes);
  return s.finish();
}

Sha1 sha1(std::span<const std::uint8_t> bytes) {
  Sha1Stream s;
  s.update(bytes);
  return s.finish();
}

void start_git_blob(Sha1Stream& stream, std::uint64_t size) {
  std::string header = "blob " + std::to_string(size);
  header.push_back('\0');
  stream.update(header);
}

ChunkHasher::ChunkHasher(std::size_t piece_size) : piece_size_(piece_size) {
  leaves_.reserve(std::max<std::size_t>(1, piece_size / kMerkleBlock));
}

void ChunkHasher::update(std::span<const std::uint8_t> bytes) {
  sha1_.update(bytes);
  size_ += bytes.size();
  while (!bytes.empty()) {
    const std::size_t n = std::min(bytes.size(), kMerkleBlock - block_fill_);
    block_.update(bytes.first(n));
    block_fill_ += n;
    bytes = bytes.subspan(n);
    if (block_fill_ == kMerkleBlock) {
      leaves_.push_back(block_.finish());
      block_fill_ = 0;
    }
  }
}

ChunkHashes ChunkHasher::finish() {
  ChunkHashes out;
  if (block_fill_ > 0) leaves_.push_back(block_.finish());
  // Zero leaves up to a full piece (BEP 52), then pairwise up to the root.
  leaves_.resize(std::max<std::size_t>(1, piece_size_ / kMerkleBlock));
  Sha256Stream s;
  while (leaves_.size() > 1) {
    for (std::size_t i = 0; i < leaves_.size() / 2; ++i) {
      s.update(std::span<const std::uint8_t>(leaves_[2 * i].bytes));
      s.update(std::span<const std::uint8_t>(leaves_[2 * i + 1].bytes));
      leaves_[i] = s.finish();
    }
    leaves_.resize(leaves_.size() / 2);
  }
  out.root = leaves_.front();
  if (size_ < piece_size_) {
    // The last chunk of a file: also the piece as BitTorrent v1 sees it, followed by pad-file zeros.
    static const std::vector<std::uint8_t> zeros(std::size_t{64} * 1024, 0);
    Sha1Stream padded(sha1_);
    for (std::size_t left = piece_size_ - size_; left > 0;) {
      const std::size_t n = std::min(left, zeros.size());
      padded.update(std::span<const std::uint8_t>(zeros.data(), n));
      left -= n;
    }
    out.padded_sha1 = padded.finish();
    out.piece_sha1 = sha1_.finish();
  } else {
    out.piece_sha1 = sha1_.finish();
    out.padded_sha1 = out.piece_sha1;
  }
  return out;
}

ChunkHashes hash_chunk(std::span<const std::uint8_t> chunk, std::size_t piece_size) {
  ChunkHasher h(piece_size);
  h.update(chunk);
  return h.finish();
}

}  // namespace inferllama::cache
