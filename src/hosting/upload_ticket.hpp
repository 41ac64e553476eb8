// The upload URLs the LFS batch answer hands out. Neither client sends Authorization on an upload PUT, so
// the URL carries its own: what may be uploaded (repo, object, size), by whom, until when, signed with a
// key the node keeps in its index (so URLs outlive a restart, and a client's retry after one succeeds).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "inferllama/digest.hpp"
#include "inferllama/records.hpp"
#include "inferllama/repo.hpp"

namespace inferllama::hosting {

struct UploadTicket {
  RepoId repo;
  Sha256 oid;
  std::uint64_t size = 0;
  std::string user;
  std::int64_t expires = 0;     // seconds since the epoch
  std::uint64_t part_size = 0;  // a multipart upload's part size; 0 for a single PUT
};

class TicketSigner {
 public:
  // Loads the signing key from `records`, making one the first time.
  explicit TicketSigner(RecordStore& records);
  // URL-safe: [A-Za-z0-9_-.] only.
  std::string sign(const UploadTicket& ticket) const;
  // The ticket, when the signature holds (expiry is the caller's to check).
  std::optional<UploadTicket> open(std::string_view token) const;

 private:
  std::array<unsigned char, 32> key_{};
};

}  // namespace inferllama::hosting
