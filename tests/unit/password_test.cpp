#include "usage/password.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace inferllama::usage {
namespace {

const std::string kPassword = "correct horse battery";

TEST(PasswordTest, HashesWithArgon2idAndVerifies) {
  const std::string hash = hash_password(kPassword);
  EXPECT_TRUE(hash.starts_with("$argon2id$v=19$m=65536,t=2,p=1$")) << hash;
  EXPECT_TRUE(verify_password(hash, kPassword));
  EXPECT_FALSE(verify_password(hash, "correct horse batterY"));
  EXPECT_FALSE(verify_password(hash, ""));
  EXPECT_NE(hash_password(kPassword), hash);  // a new salt each time
  EXPECT_FALSE(needs_rehash(hash));
}

TEST(PasswordTest, MalformedAndOtherParametersHashes) {
  const std::string hash = hash_password(kPassword);
  std::string other_parameters = hash;
  other_parameters.replace(other_parameters.find(",t=2,"), 5, ",t=3,");
  EXPECT_TRUE(needs_rehash(other_parameters));
  EXPECT_FALSE(verify_password(other_parameters, kPassword));
  EXPECT_FALSE(verify_password(hash.substr(0, hash.size() - 4), kPassword));
  // Argon2i is no longer what the node makes: a hash of it is one to replace.
  for (const std::string& malformed : {std::string(), std::string("not a hash"), hash + std::string(200, 'A'),
                                       std::string("$argon2i") + hash.substr(9)}) {
    EXPECT_FALSE(verify_password(malformed, kPassword)) << malformed;
    EXPECT_TRUE(needs_rehash(malformed)) << malformed;
  }
}

TEST(PasswordTest, PolicyNamesWhatIsWrong) {
  EXPECT_EQ(password_problem("123456789", "alice"), "the password is too short: at least 10 bytes");
  EXPECT_EQ(password_problem("", "alice"), "the password is too short: at least 10 bytes");
  EXPECT_EQ(password_problem("1234567890", "alice"), std::nullopt);
  EXPECT_EQ(password_problem(std::string(1024, 'x'), "alice"), std::nullopt);
  EXPECT_EQ(password_problem(std::string(1025, 'x'), "alice"), "the password is too long: at most 1024 bytes");
  EXPECT_EQ(password_problem("administrator", "administrator"), "the password may not be the user's name");
  EXPECT_EQ(password_problem("Administrator", "administrator"), "the password may not be the user's name");
  EXPECT_EQ(password_problem("administrator1", "administrator"), std::nullopt);
  EXPECT_EQ(password_problem("p\xc3\xa4sswort!", "alice"), std::nullopt);  // ä: UTF-8 is fine
  for (const std::string& invalid :
       {std::string("password\xff\xfe"), std::string("pass\0word12", 11), std::string("password1\xc3")}) {
    EXPECT_EQ(password_problem(invalid, "alice"), "the password is not UTF-8 text without NUL characters");
  }
}

TEST(PasswordTest, MoreCallersThanTurnsAllGetOne) {
  const std::string hash = hash_password(kPassword);
  std::vector<std::thread> threads;
  std::vector<char> verified(kConcurrentHashings * 2, 0);
  for (auto& result : verified) threads.emplace_back([&] { result = verify_password(hash, kPassword); });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(std::count(verified.begin(), verified.end(), 1), kConcurrentHashings * 2);
}

}  // namespace
}  // namespace inferllama::usage
