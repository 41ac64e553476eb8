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
  ~EvpContext() { EVP_MD_CTX_free(ctx_); }
  EvpContext(const EvpContext&) = delete;
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

Sha256 piece_root(std::span<const std::uint8_t> chunk, std::size_t piece_size) {
  const std::size_t leaves = std::max<std::size_t>(1, piece_size / kMerkleBlock);
  std::vector<Sha256> layer(leaves);  // zero-initialised: BEP 52's padding leaves
  Sha256Stream s;
  for (std::size_t i = 0, off = 0; off < chunk.size(); ++i, off += kMerkleBlock) {
    s.update(chunk.subspan(off, std::min(kMerkleBlock, chunk.size() - off)));
    layer[i] = s.finish();
  }
  while (layer.size() > 1) {
    for (std::size_t i = 0; i < layer.size() / 2; ++i) {
      s.update(std::span<const std::uint8_t>(layer[2 * i].bytes));
      s.update(std::span<const std::uint8_t>(layer[2 * i + 1].bytes));
      layer[i] = s.finish();
    }
    layer.resize(layer.size() / 2);
  }
  return layer.front();
}

ChunkHashes hash_chunk(std::span<const std::uint8_t> chunk, std::size_t piece_size) {
  ChunkHashes out;
  out.root = piece_root(chunk, piece_size);
  Sha1Stream s;
  s.update(chunk);
  if (chunk.size() == piece_size) {
    out.piece_sha1 = s.finish();
    out.padded_sha1 = out.piece_sha1;
    return out;
  }
  // Hash the unpadded piece, then the same prefix followed by zeros (a second short pass only for the
  // last chunk of a file).
  out.piece_sha1 = s.finish();
  static const std::vector<std::uint8_t> zeros(std::size_t{64} * 1024, 0);
  s.update(chunk);
  for (std::size_t left = piece_size - chunk.size(); left > 0;) {
    std::size_t n = std::min(left, zeros.size());
    s.update(std::span<const std::uint8_t>(zeros.data(), n));
    left -= n;
  }
  out.padded_sha1 = s.finish();
  return out;
}

}  // namespace inferllama::cache
