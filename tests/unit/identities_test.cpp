#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "inferllama/index.hpp"
#include "test_support.hpp"
#include "usage/identities.hpp"

namespace inferllama::usage {
namespace {

using testing::ManualClock;

class IdentitiesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("identities");
    open();
  }
  void TearDown() override {
    identities_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  void open(const std::string& key_file = "secret.key") {
    identities_.reset();
    index_.reset();
    index_ = open_rocksdb_index(dir_ / "index");
    identities_ = std::make_unique<Identities>(index_->records(), clock_, SecretBox::from_file(dir_ / key_file));
  }
  // Every record of the identities table, as written.
  std::map<std::string, std::string> stored() {
    std::map<std::string, std::string> out;
    index_->records().scan(RecordTable::identities, "", [&](std::string_view key, std::string_view value) {
      out.emplace(key, value);
      return true;
    });
    return out;
  }
  // Whether any file of the index holds `text` (values, the write-ahead log, tables).
  bool on_disk(const std::string& text) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_ / "index")) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      if (bytes.str().find(text) != std::string::npos) return true;
    }
    return false;
  }
  Identities& ids() { return *identities_; }

  std::filesystem::path dir_;
  ManualClock clock_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<Identities> identities_;
};

template <class T>
T value_of(std::variant<T, std::string> v) {
  if (auto* error = std::get_if<std::string>(&v)) throw std::runtime_error(*error);
  return std::get<T>(std::move(v));
}

std::string error_of(const auto& v) {
  auto* error = std::get_if<std::string>(&v);
  return error ? *error : "(no error)";
}

TEST_F(IdentitiesTest, AddsListsDisablesAndEnablesUsers) {
  auto alice = value_of(ids().add_user("alice", "alice@example.org"));
  EXPECT_EQ(alice.name, "alice");
  EXPECT_EQ(alice.email, "alice@example.org");
  EXPECT_EQ(alice.created_ms, 1'796'083'200'000);
  EXPECT_FALSE(alice.disabled);
  EXPECT_FALSE(alice.has_hub_token);
  value_of(ids().add_user("Bob-2.x_y", ""));
  EXPECT_EQ(error_of(ids().add_user("alice", "")), "user alice exists");

  auto users = ids().users();
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0].name, "Bob-2.x_y");  // sorted by name
  EXPECT_EQ(users[1].name, "alice");

  EXPECT_EQ(ids().disable_user("alice"), std::nullopt);
  EXPECT_TRUE(ids().user("alice")->disabled);
  EXPECT_EQ(ids().disable_user("alice"), std::nullopt);  // already: nothing to do
  EXPECT_EQ(ids().enable_user("alice"), std::nullopt);
  EXPECT_FALSE(ids().user("alice")->disabled);
  EXPECT_TRUE(ids().disable_user("carol"));
  EXPECT_TRUE(ids().enable_user("carol"));
  EXPECT_FALSE(ids().user("carol"));
}

TEST_F(IdentitiesTest, RefusesBadNamesEmailsAndLabels) {
  for (const auto& name :
       std::vector<std::string>{"", ".alice", "-a", "_a", "a:b", "a|b", "a b", "al/ice", "é", std::string(65, 'a')}) {
    EXPECT_FALSE(Identities::is_valid_user_name(name)) << name;
    EXPECT_NE(error_of(ids().add_user(name, "")), "(no error)") << name;
  }
  EXPECT_TRUE(Identities::is_valid_user_name(std::string(64, 'a')));
  EXPECT_TRUE(Identities::is_valid_user_name("0.a-b_c"));

  for (const auto& email : std::vector<std::string>{"no-at", "a@b@c", "a b@c.org", "@example.org", "alice@",
                                                    "a\n@b.org", std::string(250, 'a') + "@b.org"}) {
    EXPECT_NE(error_of(ids().add_user("alice", email)), "(no error)") << email;
  }
  EXPECT_FALSE(ids().user("alice"));
  value_of(ids().add_user("alice", std::string(248, 'a') + "@b.org"));  // 254: the longest allowed

  for (const auto& label :
       std::vector<std::string>{std::string(101, 'x'), std::string("line\nbreak"), std::string("\xff\xfe"),
                                std::string("tab\there"), std::string("\xc3")}) {
    EXPECT_NE(error_of(ids().create_key("alice", label)), "(no error)") << label;
  }
  std::string hundred_accents;
  for (int i = 0; i < 100; ++i) hundred_accents += "\xc3\xa9";  // é: 100 characters in 200 bytes
  value_of(ids().create_key("alice", hundred_accents));
  value_of(ids().create_key("alice", ""));
  EXPECT_EQ(std::get<std::vector<ApiKey>>(ids().keys_of("alice")).size(), 2u);
}

TEST_F(IdentitiesTest, KeysAreCreatedListedAndRevokedAtOnce) {
  value_of(ids().add_user("alice", ""));
  auto created = value_of(ids().create_key("alice", "laptop"));
  EXPECT_TRUE(created.secret.starts_with("il_"));
  ASSERT_EQ(created.secret.size(), 46u);
  EXPECT_EQ(created.secret.find_first_not_of("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 3),
            std::string::npos);
  EXPECT_EQ(created.key.hint, created.secret.substr(0, 8));
  EXPECT_EQ(created.key.user, "alice");
  EXPECT_EQ(created.key.label, "laptop");
  ASSERT_EQ(created.key.id.size(), 20u);
  EXPECT_TRUE(created.key.id.starts_with("key_"));
  EXPECT_EQ(created.key.id.find_first_not_of("0123456789abcdef", 4), std::string::npos);
  EXPECT_FALSE(created.key.revoked_ms);
  EXPECT_TRUE(Identities::is_node_key(created.secret));
  EXPECT_FALSE(Identities::is_node_key("hf_abc"));

  auto who = value_of(ids().authenticate(created.secret));
  EXPECT_EQ(who.user, "alice");
  EXPECT_EQ(who.hub_token, "");

  auto keys = value_of(ids().keys_of("alice"));
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].id, created.key.id);
  EXPECT_EQ(error_of(ids().keys_of("bob")), "unknown user bob");
  EXPECT_EQ(error_of(ids().create_key("bob", "")), "unknown user bob");

  EXPECT_EQ(ids().revoke_key(created.key.id), std::nullopt);
  EXPECT_EQ(error_of(ids().authenticate(created.secret)), "this key was revoked");
  EXPECT_EQ(value_of(ids().keys_of("alice"))[0].revoked_ms, 1'796'083'200'000);
  EXPECT_EQ(ids().revoke_key("key_0000000000000000"), "unknown key key_0000000000000000");

  EXPECT_EQ(error_of(ids().authenticate("il_" + std::string(43, 'A'))), "unknown API key");
  EXPECT_EQ(error_of(ids().authenticate("hf_abc")), "not a node API key");
}

TEST_F(IdentitiesTest, SecretsSpanTheirWholeRangeAndAreNeverStored) {
  value_of(ids().add_user("alice", ""));
  std::vector<std::string> secrets;
  std::set<char> first_digits;
  for (int i = 0; i < 20; ++i) {
    secrets.push_back(value_of(ids().create_key("alice", "k" + std::to_string(i))).secret);
    first_digits.insert(secrets.back()[3]);
  }
  // All 256 bits reach the digits: the leading one is not stuck at '0' as with a short conversion.
  EXPECT_GT(first_digits.size(), 1u);
  EXPECT_EQ(std::set<std::string>(secrets.begin(), secrets.end()).size(), secrets.size());

  const auto records = stored();
  EXPECT_EQ(records.size(), 21u);  // one user, 20 keys
  for (const auto& secret : secrets) {
    for (const auto& [key, value] : records) {
      EXPECT_EQ(key.find(secret), std::string::npos);
      EXPECT_EQ(value.find(secret), std::string::npos);
      EXPECT_EQ(value.find(secret.substr(3)), std::string::npos);
    }
    EXPECT_FALSE(on_disk(secret.substr(3)));
  }
}

TEST_F(IdentitiesTest, DisabledUsersAreRefusedFromTheNextRequestOn) {
  auto alice = value_of(ids().add_user("alice", ""));
  auto key = value_of(ids().create_key("alice", ""));
  ASSERT_EQ(alice.passkey.size(), 32u);
  EXPECT_EQ(alice.passkey.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(ids().user_of_passkey(alice.passkey), "alice");
  EXPECT_FALSE(ids().user_of_passkey(std::string(32, '0')));

  ASSERT_EQ(ids().disable_user("alice"), std::nullopt);
  EXPECT_EQ(error_of(ids().authenticate(key.secret)), "user alice is disabled");
  EXPECT_FALSE(ids().user_of_passkey(alice.passkey));
  EXPECT_EQ(error_of(ids().create_key("alice", "")), "user alice is disabled");
  ASSERT_EQ(ids().enable_user("alice"), std::nullopt);
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).user, "alice");
  EXPECT_EQ(ids().user_of_passkey(alice.passkey), "alice");
}

TEST_F(IdentitiesTest, ANewPasskeyRefusesTheOldOneAtOnceAndIsKept) {
  auto alice = value_of(ids().add_user("alice", ""));
  ASSERT_EQ(ids().set_hub_token("alice", "hf_own"), std::nullopt);
  ASSERT_EQ(ids().new_passkey("alice"), std::nullopt);
  const std::string fresh = ids().user("alice")->passkey;
  EXPECT_NE(fresh, alice.passkey);
  EXPECT_EQ(fresh.size(), 32u);
  EXPECT_FALSE(ids().user_of_passkey(alice.passkey));
  EXPECT_EQ(ids().user_of_passkey(fresh), "alice");
  EXPECT_EQ(ids().new_passkey("nobody"), "unknown user nobody");
  open();
  EXPECT_EQ(ids().user_of_passkey(fresh), "alice");
  EXPECT_FALSE(ids().user_of_passkey(alice.passkey));
  EXPECT_TRUE(ids().user("alice")->has_hub_token);  // the rest of the record is kept
}

TEST_F(IdentitiesTest, EverythingSurvivesAReopen) {
  auto alice = value_of(ids().add_user("alice", "a@example.org"));
  value_of(ids().add_user("bob", ""));
  auto kept = value_of(ids().create_key("alice", "kept"));
  clock_.advance(std::chrono::milliseconds(1));
  auto revoked = value_of(ids().create_key("alice", "revoked"));
  ASSERT_EQ(ids().revoke_key(revoked.key.id), std::nullopt);
  ASSERT_EQ(ids().disable_user("bob"), std::nullopt);

  open();
  auto users = ids().users();
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0].email, "a@example.org");
  EXPECT_EQ(users[0].passkey, alice.passkey);
  EXPECT_TRUE(users[1].disabled);
  EXPECT_EQ(value_of(ids().authenticate(kept.secret)).user, "alice");
  EXPECT_EQ(error_of(ids().authenticate(revoked.secret)), "this key was revoked");
  auto keys = value_of(ids().keys_of("alice"));
  ASSERT_EQ(keys.size(), 2u);  // oldest first
  EXPECT_EQ(keys[0].label, "kept");
  EXPECT_EQ(keys[1].hint, revoked.key.hint);
  EXPECT_EQ(ids().user_of_passkey(alice.passkey), "alice");
}

TEST_F(IdentitiesTest, ARenameCarriesTheAccountOverAndKeepsTheOldNameForIt) {
  const auto alice = value_of(ids().add_user("alice", "a@example.org"));
  value_of(ids().add_user("bob", ""));
  const auto key = value_of(ids().create_key("alice", "laptop"));
  ASSERT_EQ(ids().set_password("alice", "correct horse battery staple"), std::nullopt);
  ASSERT_EQ(ids().set_hub_token("alice", "hf_AliceOwnHubToken0123456789"), std::nullopt);
  ASSERT_EQ(ids().set_admin("alice", true), std::nullopt);

  ASSERT_EQ(ids().rename_user("alice", "alicia"), std::nullopt);
  EXPECT_FALSE(ids().user("alice"));
  const auto renamed = ids().user("alicia");
  ASSERT_TRUE(renamed);
  EXPECT_EQ(renamed->email, "a@example.org");
  EXPECT_EQ(renamed->created_ms, alice.created_ms);
  EXPECT_TRUE(renamed->admin);
  const auto who = value_of(ids().authenticate(key.secret));
  EXPECT_EQ(who.user, "alicia");
  EXPECT_EQ(who.hub_token, "hf_AliceOwnHubToken0123456789");
  EXPECT_EQ(ids().user_of_passkey(alice.passkey), "alicia");
  EXPECT_TRUE(ids().check_password("alicia", "correct horse battery staple"));
  EXPECT_FALSE(ids().check_password("alice", "correct horse battery staple"));
  EXPECT_EQ(value_of(ids().keys_of("alicia")).size(), 1u);
  EXPECT_EQ(ids().unfinished_renames(), (std::vector<std::pair<std::string, std::string>>{{"alice", "alicia"}}));

  // The old name is the account's: nobody else gets it, nor the new one.
  EXPECT_EQ(ids().former_owner("alice"), "alicia");
  EXPECT_TRUE(ids().name_taken("alice"));
  EXPECT_FALSE(ids().has_user("alice"));
  EXPECT_EQ(error_of(ids().add_user("alice", "")), "the name alice was another user's and stays reserved");
  EXPECT_EQ(ids().rename_user("bob", "alice"), "the name alice is taken");
  EXPECT_EQ(ids().rename_user("bob", "alicia"), "the name alicia is taken");
  EXPECT_EQ(ids().rename_user("bob", "no way"),
            "invalid user name \"no way\": 1 to 64 of A-Z a-z 0-9 . _ -, starting "
            "with a letter or a digit");
  EXPECT_EQ(ids().rename_user("nobody", "x"), "unknown user nobody");

  // Kept across a restart, with the moves still to do.
  open();
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).user, "alicia");
  EXPECT_EQ(ids().former_owner("alice"), "alicia");
  ASSERT_EQ(ids().finish_rename("alice"), std::nullopt);
  EXPECT_TRUE(ids().unfinished_renames().empty());

  // Renamed again, every former name points at the newest, and the account may take one back.
  ASSERT_EQ(ids().rename_user("alicia", "ally"), std::nullopt);
  EXPECT_EQ(ids().former_owner("alice"), "ally");
  EXPECT_EQ(ids().former_owner("alicia"), "ally");
  ASSERT_EQ(ids().rename_user("ally", "alice"), std::nullopt);
  EXPECT_FALSE(ids().former_owner("alice"));
  EXPECT_EQ(ids().former_owner("ally"), "alice");
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).user, "alice");

  // A deleted account is not renamed; a purged one frees every name it had.
  ASSERT_EQ(ids().delete_user("alice"), std::nullopt);
  EXPECT_EQ(ids().rename_user("alice", "alex"), "user alice is deleted");
  ASSERT_EQ(ids().purge_user("alice"), std::nullopt);
  for (const std::string name : {"alice", "alicia", "ally"}) {
    EXPECT_FALSE(ids().name_taken(name)) << name;
    value_of(ids().add_user(name, ""));
  }
}

TEST_F(IdentitiesTest, HubTokensAreSealedAtRestAndOpenAfterAReopen) {
  value_of(ids().add_user("alice", ""));
  auto key = value_of(ids().create_key("alice", ""));
  const std::string token = "hf_ThisIsAliceOwnHubToken0123456789";
  ASSERT_EQ(ids().set_hub_token("alice", token), std::nullopt);
  EXPECT_TRUE(ids().user("alice")->has_hub_token);
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).hub_token, token);
  for (const auto& [k, value] : stored()) EXPECT_EQ(value.find(token), std::string::npos) << k;
  EXPECT_FALSE(on_disk(token));
  EXPECT_TRUE(stored().at("user|alice").find("\"hub_token\":\"v1:") != std::string::npos);

  // Disabling rewrites the record: the token stays, sealed.
  ASSERT_EQ(ids().disable_user("alice"), std::nullopt);
  ASSERT_EQ(ids().enable_user("alice"), std::nullopt);
  open();
  EXPECT_TRUE(ids().user("alice")->has_hub_token);
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).hub_token, token);
  EXPECT_FALSE(on_disk(token));

  EXPECT_TRUE(ids().set_hub_token("alice", "hf_x\r\nX-Injected: 1"));
  EXPECT_TRUE(ids().set_hub_token("bob", "hf_x"));
  ASSERT_EQ(ids().set_hub_token("alice", ""), std::nullopt);
  EXPECT_FALSE(ids().user("alice")->has_hub_token);
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).hub_token, "");
  open();
  EXPECT_EQ(value_of(ids().authenticate(key.secret)).hub_token, "");
}

TEST_F(IdentitiesTest, PasswordsAreHashedCheckedAndSurviveAReopen) {
  const std::string password = "correct horse battery";
  value_of(ids().add_user("alice", ""));
  value_of(ids().add_user("bob", ""));
  EXPECT_FALSE(ids().user("alice")->has_password);
  EXPECT_FALSE(ids().check_password("alice", password));  // none set yet
  ASSERT_EQ(ids().set_password("alice", password), std::nullopt);
  EXPECT_TRUE(ids().user("alice")->has_password);
  EXPECT_FALSE(ids().user("bob")->has_password);
  EXPECT_TRUE(ids().check_password("alice", password));
  EXPECT_FALSE(ids().check_password("alice", "correct horse batterY"));
  EXPECT_FALSE(ids().check_password("bob", password));
  EXPECT_FALSE(ids().check_password("nobody", password));
  EXPECT_FALSE(ids().check_password("alice", password + std::string(1024, ' ')));

  const std::string record = stored().at("user|alice");
  EXPECT_NE(record.find("\"password\":\"$argon2id$v=19$m=65536,t=2,p=1$"), std::string::npos) << record;
  EXPECT_EQ(record.find(password), std::string::npos);
  EXPECT_FALSE(on_disk(password));

  ASSERT_EQ(ids().disable_user("alice"), std::nullopt);
  EXPECT_FALSE(ids().check_password("alice", password));
  ASSERT_EQ(ids().enable_user("alice"), std::nullopt);
  // Every other change rewrites the record and keeps the password.
  ASSERT_EQ(ids().set_hub_token("alice", "hf_own"), std::nullopt);
  ASSERT_EQ(ids().new_passkey("alice"), std::nullopt);
  open();
  EXPECT_TRUE(ids().user("alice")->has_password);
  EXPECT_TRUE(ids().user("alice")->has_hub_token);
  EXPECT_TRUE(ids().check_password("alice", password));
  ASSERT_EQ(ids().set_hub_token("alice", ""), std::nullopt);
  ASSERT_EQ(ids().set_password("alice", "another good one"), std::nullopt);
  open();
  EXPECT_FALSE(ids().check_password("alice", password));
  EXPECT_TRUE(ids().check_password("alice", "another good one"));
  EXPECT_FALSE(ids().user("alice")->has_hub_token);
}

TEST_F(IdentitiesTest, PasswordsBreakingThePolicyAreRefused) {
  value_of(ids().add_user("administrator", ""));
  EXPECT_EQ(ids().set_password("administrator", "short"), "the password is too short: at least 10 bytes");
  EXPECT_EQ(ids().set_password("administrator", "Administrator"), "the password may not be the user's name");
  EXPECT_EQ(ids().set_password("administrator", std::string("ten bytes\0!", 11)),
            "the password is not UTF-8 text without NUL characters");
  EXPECT_EQ(ids().set_password("nobody", "correct horse battery"), "unknown user nobody");
  EXPECT_FALSE(ids().user("administrator")->has_password);
}

TEST_F(IdentitiesTest, ARecordWrittenBeforePasswordsHasNone) {
  index_->records().write(RecordTable::identities,
                          {{"user|old", R"({"name":"old","email":"","created_ms":1,"disabled":false,)"
                                        R"("passkey":"0123456789abcdef0123456789abcdef"})"}},
                          true);
  open();
  EXPECT_FALSE(ids().user("old")->has_password);
  EXPECT_FALSE(ids().check_password("old", "correct horse battery"));
  ASSERT_EQ(ids().set_password("old", "correct horse battery"), std::nullopt);
  EXPECT_TRUE(ids().check_password("old", "correct horse battery"));
  EXPECT_EQ(ids().user_of_passkey("0123456789abcdef0123456789abcdef"), "old");
}

TEST_F(IdentitiesTest, ARecordSealedUnderAnotherKeyStopsTheStart) {
  value_of(ids().add_user("alice", ""));
  ASSERT_EQ(ids().set_hub_token("alice", "hf_token"), std::nullopt);
  try {
    open("another.key");
    FAIL() << "opened a Hub token sealed under another key";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("secret key file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("alice"), std::string::npos) << e.what();
  }
  open();  // the right key still opens it
  EXPECT_TRUE(ids().user("alice")->has_hub_token);
}

TEST_F(IdentitiesTest, ARecordThatIsNotJsonStopsTheStart) {
  index_->records().write(RecordTable::identities, {{"user|mallory", "{not json"}}, true);
  EXPECT_THROW(open(), std::runtime_error);
}

TEST(IdentitiesStoreTest, AFailedWriteChangesNothing) {
  testing::MemoryRecords records;
  ManualClock clock;
  std::array<unsigned char, 32> key{};
  Identities ids(records, clock, SecretBox(key));
  value_of(ids.add_user("alice", ""));
  auto created = value_of(ids.create_key("alice", ""));
  records.fail = true;
  EXPECT_EQ(error_of(ids.add_user("bob", "")), "cannot save the change: disk full");
  EXPECT_FALSE(ids.user("bob"));
  EXPECT_EQ(ids.revoke_key(created.key.id), "cannot save the change: disk full");
  EXPECT_EQ(value_of(ids.authenticate(created.secret)).user, "alice");
  EXPECT_TRUE(ids.disable_user("alice"));
  EXPECT_FALSE(ids.user("alice")->disabled);
  EXPECT_TRUE(std::holds_alternative<std::string>(ids.create_key("alice", "")));
  EXPECT_EQ(value_of(ids.keys_of("alice")).size(), 1u);
  EXPECT_TRUE(ids.set_hub_token("alice", "hf_x"));
  EXPECT_FALSE(ids.user("alice")->has_hub_token);
  EXPECT_EQ(ids.set_password("alice", "correct horse battery"), "cannot save the change: disk full");
  EXPECT_FALSE(ids.user("alice")->has_password);
  EXPECT_FALSE(ids.check_password("alice", "correct horse battery"));
}

// The same temporary directory, for the key files.
class IdentitiesSecretBoxTest : public IdentitiesTest {};

TEST_F(IdentitiesSecretBoxTest, KeyFileIsCreatedPrivateAndReadBack) {
  const auto file = dir_ / "box.key";
  auto box = SecretBox::from_file(file);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.size(), 64u);
  EXPECT_EQ(line.find_first_not_of("0123456789abcdef"), std::string::npos);

  auto again = SecretBox::from_file(file);
  const auto sealed = box.seal("secret value");
  EXPECT_EQ(again.open(sealed), "secret value");
  EXPECT_NE(box.seal("secret value"), sealed);  // a fresh nonce each time
  EXPECT_EQ(box.open(box.seal("")), "");
  EXPECT_FALSE(SecretBox::from_file(dir_ / "other.key").open(sealed));
}

TEST_F(IdentitiesSecretBoxTest, AlteredValuesDoNotOpen) {
  auto box = SecretBox::from_file(dir_ / "box.key");
  auto sealed = box.seal("secret value");
  ASSERT_TRUE(sealed.starts_with("v1:"));
  for (std::size_t at : {std::size_t{3}, sealed.size() / 2, sealed.size() - 1}) {
    auto altered = sealed;
    altered[at] = altered[at] == '0' ? '1' : '0';
    EXPECT_FALSE(box.open(altered)) << at;
  }
  EXPECT_FALSE(box.open(sealed.substr(0, sealed.size() - 2)));
  EXPECT_FALSE(box.open("v1:zz"));
  EXPECT_FALSE(box.open("v2:" + sealed.substr(3)));
  EXPECT_FALSE(box.open(""));
}

TEST_F(IdentitiesSecretBoxTest, AMalformedKeyFileIsRefused) {
  for (const auto& contents :
       std::vector<std::string>{std::string("not hex"), std::string(63, 'a'), std::string(66, 'a'), std::string()}) {
    const auto file = dir_ / "bad.key";
    std::ofstream(file) << contents;
    try {
      SecretBox::from_file(file);
      FAIL() << "accepted " << contents;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("malformed"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace inferllama::usage
