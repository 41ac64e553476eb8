// The one-time tokens that emailed links carry: verify an address, reset a password, accept an invitation.
// Kept in the `sessions` record table as the SHA-256 of the token, so a copy of the database opens no
// account; each is good once and until it expires, and only a user's newest token of a purpose works.
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "inferllama/clock.hpp"
#include "inferllama/records.hpp"

namespace inferllama::console {

enum class TokenPurpose { verify_email, reset_password, invite };

class MailTokens {
 public:
  MailTokens(RecordStore& records, const Clock& clock) : records_(records), clock_(clock) {}

  // A new token for `user` (and the address it is for, when verifying one), valid `ttl`; the user's
  // earlier token of this purpose stops working. Throws when the store refuses the write.
  std::string issue(const std::string& user, TokenPurpose purpose, std::chrono::seconds ttl,
                    const std::string& email = {});
  struct Redeemed {
    std::string user;
    std::string email;
  };
  // The user of a live token of `purpose`, without spending it (to check what the link will do first).
  std::optional<Redeemed> find(std::string_view token, TokenPurpose purpose);
  // Spends a live token of `purpose`: its user, once.
  std::optional<Redeemed> redeem(std::string_view token, TokenPurpose purpose);
  // Drops expired tokens; how many.
  std::size_t expire();
  // Every token of the user (an account deleted or renamed).
  void forget(const std::string& user);

 private:
  std::int64_t now_ms() const;
  std::optional<Redeemed> look_up(std::string_view token, TokenPurpose purpose, bool spend);

  RecordStore& records_;
  const Clock& clock_;
  std::mutex mutex_;  // issue and redeem read, then write
};

}  // namespace inferllama::console
