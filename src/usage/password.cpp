#include "usage/password.hpp"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <semaphore>
#include <stdexcept>

namespace inferllama::usage {
namespace {

// libsodium's interactive level, above OWASP's Argon2id minimum (m = 19 MiB, t = 2): ~100 ms here.
constexpr unsigned long long kOpsLimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
constexpr std::size_t kMemLimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
static_assert(kOpsLimit == 2 && kMemLimit == 64 << 20, "the parameters password.hpp and SECURITY.md state");

std::counting_semaphore<kConcurrentHashings> hashing_turns(kConcurrentHashings);

// One of the kConcurrentHashings turns, held while it lives.
class HashingTurn {
 public:
  HashingTurn() { hashing_turns.acquire(); }
  ~HashingTurn() { hashing_turns.release(); }
  HashingTurn(const HashingTurn&) = delete;
  HashingTurn& operator=(const HashingTurn&) = delete;
};

void init_sodium() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not be initialised");
}

// libsodium reads a stored hash as a C string shorter than crypto_pwhash_STRBYTES.
std::optional<std::string> as_c_string(std::string_view stored_hash) {
  if (stored_hash.size() >= crypto_pwhash_STRBYTES || stored_hash.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  return std::string(stored_hash);
}

bool is_valid_utf8(std::string_view text) {
  try {
    (void)nlohmann::json(text).dump();  // nlohmann refuses to write what it could not read back
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// User names are ASCII: "Alice" is refused as alice's password as well.
bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [&](char x, char y) { return lower(x) == lower(y); });
}

}  // namespace

std::optional<std::string> password_problem(std::string_view password, std::string_view user_name) {
  if (password.size() < kMinPasswordBytes) {
    return "the password is too short: at least " + std::to_string(kMinPasswordBytes) + " bytes";
  }
  if (password.size() > kMaxPasswordBytes) {
    return "the password is too long: at most " + std::to_string(kMaxPasswordBytes) + " bytes";
  }
  if (equal_ignoring_ascii_case(password, user_name)) return std::string("the password may not be the user's name");
  if (password.find('\0') != std::string_view::npos || !is_valid_utf8(password)) {
    return std::string("the password is not UTF-8 text without NUL characters");
  }
  return std::nullopt;
}

std::string hash_password(std::string_view password) {
  init_sodium();
  char hash[crypto_pwhash_STRBYTES];
  HashingTurn turn;
  if (crypto_pwhash_str_alg(hash, password.data(), password.size(), kOpsLimit, kMemLimit,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    throw std::runtime_error("cannot hash the password: out of memory");
  }
  return hash;
}

bool verify_password(std::string_view stored_hash, std::string_view password) {
  init_sodium();
  const auto hash = as_c_string(stored_hash);
  if (!hash) return false;
  HashingTurn turn;
  return crypto_pwhash_str_verify(hash->c_str(), password.data(), password.size()) == 0;
}

bool needs_rehash(std::string_view stored_hash) {
  init_sodium();
  const auto hash = as_c_string(stored_hash);
  // -1 for what is no Argon2id hash (Argon2i included), 1 for other parameters.
  return !hash || crypto_pwhash_argon2id_str_needs_rehash(hash->c_str(), kOpsLimit, kMemLimit) != 0;
}

}  // namespace inferllama::usage
