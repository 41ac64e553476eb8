// Users' passwords: Argon2id hashes (libsodium's "$argon2id$v=19$m=...,t=...,p=...$salt$hash" strings) and
// the policy a new password meets. Hashing and verifying take 64 MiB and ~100 ms each (2-core test
// machine); at most kConcurrentHashings run at once, other callers wait for a turn.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace inferllama::usage {

// NIST SP 800-63B asks for at least 8; 10 multiplies a search of the shortest allowed ones by 95² (~9,000).
inline constexpr std::size_t kMinPasswordBytes = 10;
// Bounds what one hostile input costs to hash (passphrases fit easily).
inline constexpr std::size_t kMaxPasswordBytes = 1024;
// Each takes 64 MiB: however many sign-ins come at once, hashing holds at most 4 × 64 MiB = 256 MiB.
inline constexpr std::ptrdiff_t kConcurrentHashings = 4;

// Why `password` may not be `user_name`'s password, or nullopt: shorter than kMinPasswordBytes, longer
// than kMaxPasswordBytes, the user's name (in any case), or not UTF-8 text without NUL.
std::optional<std::string> password_problem(std::string_view password, std::string_view user_name);

// A new salt each call. Throws std::runtime_error when the hash cannot be made (out of memory).
std::string hash_password(std::string_view password);
// Whether `password` is the one `stored_hash` was made of; false for a malformed hash.
bool verify_password(std::string_view stored_hash, std::string_view password);
// Whether `stored_hash` was made with other parameters than hash_password uses now (or is no Argon2id hash).
bool needs_rehash(std::string_view stored_hash);

}  // namespace inferllama::usage
