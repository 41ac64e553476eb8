#include "console/sign_in_guard.hpp"

#include "inferllama/metrics.hpp"

namespace inferllama::console {
namespace {

// An account takes 10 wrong passwords at once, then one a minute: a person who mistypes is never held
// up for long, a guesser gets 1,440 tries a day at most. A network (an address, or its /64) takes 20 at
// once, then one every 20 s, whichever accounts it tries.
LimitPolicy policy(std::uint64_t burst, std::chrono::seconds per) {
  LimitPolicy p;
  p.requests = 1;
  p.request_window = per;
  p.request_burst = burst;
  return p;
}

constexpr metrics::FamilySpec kFailures{"inferllama_signin_failures_total", "counter",
                                        "Console sign-ins refused for a wrong user name or password"};
constexpr metrics::FamilySpec kBlocked{
    "inferllama_signin_blocked_total", "counter",
    "Console sign-ins refused (429) because their account or network had too many failures"};
constexpr metrics::FamilySpec kTracked{"inferllama_signin_tracked", "gauge",
                                       "Accounts and networks with recent failed sign-ins"};

}  // namespace

SignInGuard::SignInGuard(const Clock& clock)
    : by_account_(clock, policy(10, std::chrono::seconds(60))),
      by_network_(clock, policy(20, std::chrono::seconds(20))),
      // Three mails to one account at once, then one every ten minutes; ten from a network, then one a minute.
      mail_by_account_(clock, policy(3, std::chrono::seconds(600))),
      mail_by_network_(clock, policy(10, std::chrono::seconds(60))) {}

bool SignInGuard::blocked(const std::string& account, const std::string& network,
                          std::chrono::milliseconds& retry_after) {
  return by_account_.blocked(account, retry_after) || by_network_.blocked(network, retry_after);
}

void SignInGuard::failed(const std::string& account, const std::string& network) {
  by_account_.failed(account);
  by_network_.failed(network);
}

bool SignInGuard::allow_mail(const std::string& account, const std::string& network) {
  std::chrono::milliseconds ignored{0};
  if (mail_by_account_.blocked(account, ignored) || mail_by_network_.blocked(network, ignored)) return false;
  mail_by_account_.failed(account);
  mail_by_network_.failed(network);
  return true;
}

void SignInGuard::render_metrics(std::string& out) const {
  using metrics::write_family;
  write_family(out, kFailures, static_cast<double>(by_account_.failures()));
  write_family(out, kBlocked, static_cast<double>(by_account_.refusals() + by_network_.refusals()));
  write_family(out, kTracked, static_cast<double>(by_account_.tracked() + by_network_.tracked()));
}

}  // namespace inferllama::console
