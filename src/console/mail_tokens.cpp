#include "console/mail_tokens.hpp"

#include <nlohmann/json.hpp>
#include <vector>

#include "cache/hashing.hpp"
#include "console/jwt.hpp"
#include "usage/crypto.hpp"

namespace inferllama::console {
namespace {

using nlohmann::json;

constexpr std::string_view kTokenPrefix = "mailtoken|";      // + SHA-256 hex -> {user, purpose, email, expires_ms}
constexpr std::string_view kNewestPrefix = "mailtoken_of|";  // + user|purpose -> the newest token's SHA-256

const char* name_of(TokenPurpose purpose) {
  switch (purpose) {
    case TokenPurpose::verify_email:
      return "verify_email";
    case TokenPurpose::reset_password:
      return "reset_password";
    case TokenPurpose::invite:
      return "invite";
  }
  return "";
}

std::string newest_key(const std::string& user, TokenPurpose purpose) {
  return std::string(kNewestPrefix) + user + '|' + name_of(purpose);
}

}  // namespace

std::int64_t MailTokens::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now().time_since_epoch()).count();
}

std::string MailTokens::issue(const std::string& user, TokenPurpose purpose, std::chrono::seconds ttl,
                              const std::string& email) {
  const auto bytes = usage::crypto::random_bytes<32>();
  const std::string token = base64url(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  const std::string hash = cache::sha256(token).hex();
  const json record = {{"user", user},
                       {"purpose", name_of(purpose)},
                       {"email", email},
                       {"expires_ms", now_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count()}};
  std::lock_guard lock(mutex_);
  std::vector<RecordStore::Write> writes{{std::string(kTokenPrefix) + hash, record.dump()},
                                         {newest_key(user, purpose), hash}};
  if (auto earlier = records_.get(RecordTable::sessions, newest_key(user, purpose))) {
    writes.push_back({std::string(kTokenPrefix) + *earlier, std::nullopt});
  }
  records_.write(RecordTable::sessions, writes, /*sync=*/true);
  return token;
}

std::optional<MailTokens::Redeemed> MailTokens::find(std::string_view token, TokenPurpose purpose) {
  return look_up(token, purpose, /*spend=*/false);
}

std::optional<MailTokens::Redeemed> MailTokens::redeem(std::string_view token, TokenPurpose purpose) {
  return look_up(token, purpose, /*spend=*/true);
}

std::optional<MailTokens::Redeemed> MailTokens::look_up(std::string_view token, TokenPurpose purpose, bool spend) {
  if (token.empty() || token.size() > 128) return std::nullopt;
  const std::string key = std::string(kTokenPrefix) + cache::sha256(token).hex();
  std::lock_guard lock(mutex_);
  const auto stored = records_.get(RecordTable::sessions, key);
  if (!stored) return std::nullopt;
  const auto record = json::parse(*stored, nullptr, false);
  if (!record.is_object() || record.value("purpose", "") != name_of(purpose) ||
      record.value("expires_ms", std::int64_t{0}) <= now_ms()) {
    return std::nullopt;
  }
  if (spend) records_.write(RecordTable::sessions, {{key, std::nullopt}}, /*sync=*/true);
  return Redeemed{record.value("user", ""), record.value("email", "")};
}

std::size_t MailTokens::expire() {
  const std::int64_t now = now_ms();
  std::vector<RecordStore::Write> writes;
  std::lock_guard lock(mutex_);
  records_.scan(RecordTable::sessions, kTokenPrefix, [&](std::string_view key, std::string_view value) {
    const auto record = json::parse(value, nullptr, false);
    if (!record.is_object() || record.value("expires_ms", std::int64_t{0}) <= now) {
      writes.push_back({std::string(key), std::nullopt});
    }
    return true;
  });
  if (!writes.empty()) records_.write(RecordTable::sessions, writes, /*sync=*/true);
  return writes.size();
}

void MailTokens::forget(const std::string& user) {
  std::vector<RecordStore::Write> writes;
  std::lock_guard lock(mutex_);
  for (const auto purpose : {TokenPurpose::verify_email, TokenPurpose::reset_password, TokenPurpose::invite}) {
    if (auto hash = records_.get(RecordTable::sessions, newest_key(user, purpose))) {
      writes.push_back({std::string(kTokenPrefix) + *hash, std::nullopt});
      writes.push_back({newest_key(user, purpose), std::nullopt});
    }
  }
  if (!writes.empty()) records_.write(RecordTable::sessions, writes, /*sync=*/true);
}

}  // namespace inferllama::console
