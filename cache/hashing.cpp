#include "cache/hashing.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <bit>
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

// The digest, fetched from the provider once: EVP_sha256() at every init has OpenSSL 3 look the
// algorithm up again (under a lock), which costs more than hashing a key.
template <class D>
const EVP_MD* digest_of() {
  static const EVP_MD* const md = [] {
    constexpr bool kSha256 = std::is_same_v<D, Sha256>;
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, kSha256 ? "SHA2-256" : "SHA1", nullptr);
    if (fetched != nullptr) return fetched;
    return kSha256 ? EVP_sha256() : EVP_sha1();
  }();
  return md;
}

// A whole input at once, on the thread's own context: a request's key check costs no allocation.
template <class D>
D digest_once(const void* data, std::size_t size) {
  thread_local EvpContext context(digest_of<D>());
  context.update(data, size);
  return context.template finish_and_reset<D>();
}

}  // namespace

template <class D>
struct DigestStream<D>::Impl {
  EvpContext ctx{digest_of<D>()};
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
  return digest_once<Sha256>(bytes.data(), bytes.size());
}

Sha1 sha1(std::span<const std::uint8_t> bytes) {
  return digest_once<Sha1>(bytes.data(), bytes.size());
}

Sha256 sha256(std::string_view text) {
  return digest_once<Sha256>(text.data(), text.size());
}

Sha1 sha1(std::string_view text) {
  return digest_once<Sha1>(text.data(), text.size());
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

namespace {

// Hashes pairs of nodes up to the root; `nodes` holds a power of two of them and is consumed.
Sha256 merkle_root(std::vector<Sha256>& nodes) {
  Sha256Stream s;
  while (nodes.size() > 1) {
    for (std::size_t i = 0; i < nodes.size() / 2; ++i) {
      s.update(std::span<const std::uint8_t>(nodes[2 * i].bytes));
      s.update(std::span<const std::uint8_t>(nodes[2 * i + 1].bytes));
      nodes[i] = s.finish();
    }
    nodes.resize(nodes.size() / 2);
  }
  return nodes.front();
}

Sha256 hash_pair(const Sha256& left, const Sha256& right) {
  Sha256Stream s;
  s.update(std::span<const std::uint8_t>(left.bytes));
  s.update(std::span<const std::uint8_t>(right.bytes));
  return s.finish();
}

}  // namespace

ChunkHashes ChunkHasher::finish() {
  ChunkHashes out;
  if (block_fill_ > 0) leaves_.push_back(block_.finish());
  // The file-width root first (zero leaves up to a power of two), then widened with all-zero subtrees
  // of the same height to a full piece (BEP 52): the two roots share every hash below the first.
  const std::size_t piece_leaves = std::max<std::size_t>(1, piece_size_ / kMerkleBlock);
  leaves_.resize(std::bit_ceil(std::max<std::size_t>(1, leaves_.size())));
  std::size_t width = leaves_.size();
  out.file_root = merkle_root(leaves_);
  out.root = out.file_root;
  Sha256 zero_subtree;  // the root of an all-zero subtree as wide as the tree so far
  for (std::size_t w = 1; w < width; w *= 2) zero_subtree = hash_pair(zero_subtree, zero_subtree);
  for (; width < piece_leaves; width *= 2) {
    out.root = hash_pair(out.root, zero_subtree);
    zero_subtree = hash_pair(zero_subtree, zero_subtree);
  }
  leaves_.clear();
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

Sha256 piece_layer_root(std::span<const Sha256> piece_layer, std::size_t piece_size) {
  Sha256 zero_piece;  // an all-zero leaf, then hashed up to the height of one piece
  for (std::size_t width = 1; width < piece_size / kMerkleBlock; width *= 2) {
    zero_piece = hash_pair(zero_piece, zero_piece);
  }
  std::vector<Sha256> nodes(piece_layer.begin(), piece_layer.end());
  nodes.resize(std::bit_ceil(std::max<std::size_t>(1, nodes.size())), zero_piece);
  return merkle_root(nodes);
}

ChunkHashes hash_chunk(std::span<const std::uint8_t> chunk, std::size_t piece_size) {
  ChunkHasher h(piece_size);
  h.update(chunk);
  return h.finish();
}

}  // namespace inferllama::cache
