// Credential stuffing and password guessing at sign-in: failed sign-ins are counted per account and per
// client network, each under its own GCRA policy; either one past its burst refuses further sign-ins (429)
// until it recovers. Each table is bounded (FailedAttempts), so names made up by a guesser cannot grow it.
#pragma once
#include <chrono>
#include <string>

#include "inferllama/clock.hpp"
#include "usage/failed_attempts.hpp"

namespace inferllama::console {

class SignInGuard {
 public:
  explicit SignInGuard(const Clock& clock);

  // Whether a sign-in for `account` from `network` may be tried now; if not, how long until it may.
  bool blocked(const std::string& account, const std::string& network, std::chrono::milliseconds& retry_after);
  void failed(const std::string& account, const std::string& network);
  // Mail the node sends on a request (sign-up, reset link, changed address): whether one more may go to
  // `account` from `network` now, counting it when it may. Bounds mail bombing through the node.
  bool allow_mail(const std::string& account, const std::string& network);
  void render_metrics(std::string& out) const;

 private:
  usage::FailedAttempts by_account_;
  usage::FailedAttempts by_network_;
  usage::FailedAttempts mail_by_account_;
  usage::FailedAttempts mail_by_network_;
};

}  // namespace inferllama::console
