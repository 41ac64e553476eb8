#include "usage/accounts_api.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "inferllama/index.hpp"
#include "test_support.hpp"
#include "usage/usage_json.hpp"

namespace inferllama::usage {
namespace {

using testing::ManualClock;

using Json = nlohmann::json;

// 2026-12-01T22:30:00Z
const SystemTime kStart = SystemTime(std::chrono::seconds(1796164200));
constexpr std::uint64_t kTokenSize = 1000;

class AccountsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("accounts");
    clock_.set(kStart);
    index_ = open_rocksdb_index(dir_ / "index");
    std::array<unsigned char, 32> key{};
    key.fill(7);
    identities_ = std::make_unique<Identities>(index_->records(), clock_, SecretBox(key));
    usage_ = std::make_unique<UsageLog>(index_->records(), clock_);
    accounts_ = std::make_unique<Accounts>(Accounts{*identities_, *usage_, kTokenSize});
  }
  void TearDown() override {
    accounts_.reset();
    usage_.reset();
    identities_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }

  // The answer of an admin route, which must be one.
  ApiAnswer admin(std::string_view method, std::string_view path, const Json& body = nullptr,
                  std::string_view query = "") {
    auto answer = answer_admin(*accounts_, method, path, query, body.is_null() ? "" : body.dump());
    EXPECT_TRUE(answer.has_value()) << method << " " << path;
    return answer.value_or(ApiAnswer{0, "", ""});
  }
  static Json json_of(const ApiAnswer& answer) {
    EXPECT_EQ(answer.content_type, "application/json");
    return Json::parse(answer.body);
  }
  static std::string error_of(const ApiAnswer& answer) { return json_of(answer).value("error", ""); }

  Json add_user(const std::string& name, const std::string& email = "") {
    auto answer = admin("POST", "users", {{"name", name}, {"email", email}});
    EXPECT_EQ(answer.status, 201u) << answer.body;
    return json_of(answer);
  }
  Json create_key(const std::string& user, const std::string& label = "") {
    auto answer = admin("POST", "keys", {{"user", user}, {"label", label}});
    EXPECT_EQ(answer.status, 201u) << answer.body;
    return json_of(answer);
  }

  std::filesystem::path dir_;
  ManualClock clock_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<Identities> identities_;
  std::unique_ptr<UsageLog> usage_;
  std::unique_ptr<Accounts> accounts_;
};

TEST_F(AccountsApiTest, AddsAndListsUsers) {
  Json alice = add_user("alice", "alice@example.org");
  EXPECT_EQ(alice["name"], "alice");
  EXPECT_EQ(alice["email"], "alice@example.org");
  EXPECT_EQ(alice["created"], "2026-12-01T22:30:00Z");
  EXPECT_EQ(alice["disabled"], false);
  EXPECT_EQ(alice["has_hub_token"], false);
  EXPECT_EQ(alice["passkey"].get<std::string>().size(), 32u);
  clock_.advance(std::chrono::seconds(90));
  EXPECT_EQ(add_user("Bob.2")["created"], "2026-12-01T22:31:30Z");
  add_user("aaron");

  auto listed = admin("GET", "users");
  ASSERT_EQ(listed.status, 200u);
  Json users = json_of(listed)["users"];
  ASSERT_EQ(users.size(), 3u);
  EXPECT_EQ(users[0]["name"], "Bob.2");  // by name, in byte order
  EXPECT_EQ(users[1]["name"], "aaron");
  EXPECT_EQ(users[2], alice);
}

TEST_F(AccountsApiTest, RefusesTakenInvalidAndMalformedUsers) {
  add_user("alice");
  auto taken = admin("POST", "users", {{"name", "alice"}});
  EXPECT_EQ(taken.status, 409u);
  EXPECT_NE(error_of(taken).find("alice"), std::string::npos);
  for (const char* name : {"no:colons", "", "-starts-with-dash", "has space"}) {
    auto invalid = admin("POST", "users", {{"name", name}});
    EXPECT_EQ(invalid.status, 400u) << name;
    EXPECT_FALSE(error_of(invalid).empty());
  }
  EXPECT_EQ(admin("POST", "users", {{"name", "carol"}, {"email", "not an address"}}).status, 400u);
  // Bodies that are not {name, email?} of strings.
  auto missing = admin("POST", "users", Json::object());
  EXPECT_EQ(missing.status, 400u);
  EXPECT_NE(error_of(missing).find("\"name\" is missing"), std::string::npos) << error_of(missing);
  auto unknown = admin("POST", "users", {{"name", "carol"}, {"emial", "c@example.org"}});
  EXPECT_EQ(unknown.status, 400u);
  EXPECT_NE(error_of(unknown).find("emial"), std::string::npos);
  EXPECT_EQ(admin("POST", "users", {{"name", 7}}).status, 400u);
  auto not_json = answer_admin(*accounts_, "POST", "users", "", "{name: carol");
  ASSERT_TRUE(not_json);
  EXPECT_EQ(not_json->status, 400u);
  EXPECT_EQ(json_of(admin("GET", "users"))["users"].size(), 1u);
}

TEST_F(AccountsApiTest, DisablesAndEnablesUsers) {
  add_user("alice");
  std::string secret = create_key("alice")["key"];
  auto disabled = admin("POST", "users/alice/disable");
  ASSERT_EQ(disabled.status, 200u) << disabled.body;
  EXPECT_EQ(json_of(disabled)["disabled"], true);
  EXPECT_TRUE(std::holds_alternative<std::string>(identities_->authenticate(secret)));
  auto enabled = admin("POST", "users/alice/enable");
  ASSERT_EQ(enabled.status, 200u);
  EXPECT_EQ(json_of(enabled)["disabled"], false);
  EXPECT_TRUE(std::holds_alternative<Authenticated>(identities_->authenticate(secret)));

  auto unknown = admin("POST", "users/nobody/disable");
  EXPECT_EQ(unknown.status, 404u);
  EXPECT_EQ(error_of(unknown), "no user named \"nobody\"");
  EXPECT_EQ(admin("POST", "users/nobody/enable").status, 404u);
  EXPECT_EQ(admin("GET", "users/alice/disable").status, 405u);
  EXPECT_EQ(error_of(admin("DELETE", "users/alice/enable")), "use POST");
}

TEST_F(AccountsApiTest, SetsAndRemovesAUsersHubToken) {
  add_user("alice");
  std::string secret = create_key("alice")["key"];
  auto set = admin("POST", "users/alice/hub-token", {{"token", "hf_abc123"}});
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(json_of(set)["has_hub_token"], true);
  EXPECT_EQ(set.body.find("hf_abc123"), std::string::npos);  // the token is never answered back
  auto who = identities_->authenticate(secret);
  ASSERT_TRUE(std::holds_alternative<Authenticated>(who));
  EXPECT_EQ(std::get<Authenticated>(who).hub_token, "hf_abc123");

  auto removed = admin("POST", "users/alice/hub-token", {{"token", ""}});
  ASSERT_EQ(removed.status, 200u);
  EXPECT_EQ(json_of(removed)["has_hub_token"], false);

  EXPECT_EQ(admin("POST", "users/alice/hub-token", Json::object()).status, 400u);
  EXPECT_EQ(admin("POST", "users/alice/hub-token", {{"token", "with space"}}).status, 400u);
  EXPECT_EQ(admin("POST", "users/nobody/hub-token", {{"token", "hf_x"}}).status, 404u);
  EXPECT_EQ(admin("PUT", "users/alice/hub-token", {{"token", "hf_x"}}).status, 405u);
}

TEST_F(AccountsApiTest, SetsAUsersPasswordAndNeverAnswersItsHash) {
  add_user("alice");
  EXPECT_EQ(json_of(admin("GET", "users"))["users"][0]["has_password"], false);
  auto set = admin("POST", "users/alice/password", {{"password", "correct horse battery"}});
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(json_of(set)["name"], "alice");
  EXPECT_EQ(json_of(set)["has_password"], true);
  EXPECT_TRUE(identities_->check_password("alice", "correct horse battery"));
  auto listed = admin("GET", "users");
  EXPECT_EQ(json_of(listed)["users"][0]["has_password"], true);
  for (const auto* answer : {&set, &listed}) {
    EXPECT_EQ(answer->body.find("argon2"), std::string::npos) << answer->body;
    EXPECT_EQ(answer->body.find("correct horse battery"), std::string::npos);
  }

  auto short_one = admin("POST", "users/alice/password", {{"password", "short"}});
  EXPECT_EQ(short_one.status, 400u);
  EXPECT_EQ(error_of(short_one), "the password is too short: at least 10 bytes");
  EXPECT_TRUE(identities_->check_password("alice", "correct horse battery"));  // unchanged
  EXPECT_EQ(admin("POST", "users/alice/password", Json::object()).status, 400u);
  EXPECT_EQ(admin("POST", "users/alice/password", {{"password", 1234567890}}).status, 400u);
  auto unknown = admin("POST", "users/nobody/password", {{"password", "correct horse battery"}});
  EXPECT_EQ(unknown.status, 404u);
  EXPECT_EQ(error_of(unknown), "no user named \"nobody\"");
  EXPECT_EQ(error_of(admin("GET", "users/alice/password")), "use POST");
  EXPECT_EQ(admin("PUT", "users/alice/password", {{"password", "correct horse battery"}}).status, 405u);
}

TEST_F(AccountsApiTest, CreatesListsAndRevokesKeys) {
  add_user("alice");
  add_user("bob");
  Json created = create_key("alice", "laptop");
  const std::string secret = created["key"];
  EXPECT_TRUE(secret.starts_with("il_")) << secret;
  EXPECT_TRUE(created["id"].get<std::string>().starts_with("key_"));
  EXPECT_EQ(created["user"], "alice");
  EXPECT_EQ(created["label"], "laptop");
  EXPECT_EQ(created["hint"], secret.substr(0, 8));
  EXPECT_EQ(created["created"], "2026-12-01T22:30:00Z");
  EXPECT_TRUE(created["revoked"].is_null());
  clock_.advance(std::chrono::seconds(1));
  Json second = create_key("alice");
  create_key("bob");

  auto listed = admin("GET", "keys", nullptr, "user=alice");
  ASSERT_EQ(listed.status, 200u) << listed.body;
  Json keys = json_of(listed)["keys"];
  ASSERT_EQ(keys.size(), 2u);
  Json without_secret = created;
  without_secret.erase("key");
  EXPECT_EQ(keys[0], without_secret);  // oldest first, and never the secret again
  EXPECT_EQ(keys[1]["id"], second["id"]);
  EXPECT_EQ(listed.body.find(secret), std::string::npos);

  clock_.advance(std::chrono::minutes(1));
  const std::string id = created["id"];
  auto revoked = admin("POST", "keys/" + id + "/revoke");
  ASSERT_EQ(revoked.status, 200u) << revoked.body;
  EXPECT_EQ(json_of(revoked)["revoked"], "2026-12-01T22:31:01Z");
  EXPECT_TRUE(std::holds_alternative<std::string>(identities_->authenticate(secret)));
  // Revoking again answers the key as it is, keeping the first revocation's time.
  clock_.advance(std::chrono::minutes(1));
  auto again = admin("DELETE", "keys/" + id);
  ASSERT_EQ(again.status, 200u);
  EXPECT_EQ(json_of(again), json_of(revoked));
  auto deleted = admin("DELETE", "keys/" + second["id"].get<std::string>());
  ASSERT_EQ(deleted.status, 200u);
  EXPECT_EQ(json_of(deleted)["revoked"], "2026-12-01T22:32:01Z");
  EXPECT_EQ(json_of(admin("GET", "keys", nullptr, "user=alice"))["keys"][1]["revoked"], "2026-12-01T22:32:01Z");
}

TEST_F(AccountsApiTest, RefusesKeysOfNobodyAndUnknownKeys) {
  add_user("alice");
  EXPECT_EQ(admin("POST", "keys", {{"user", "nobody"}}).status, 404u);
  EXPECT_EQ(admin("POST", "keys", {{"label", "x"}}).status, 400u);
  EXPECT_EQ(admin("POST", "keys", {{"user", "alice"}, {"label", std::string(1, '\n')}}).status, 400u);
  admin("POST", "users/alice/disable");
  EXPECT_EQ(admin("POST", "keys", {{"user", "alice"}}).status, 409u);

  EXPECT_EQ(admin("GET", "keys", nullptr, "user=nobody").status, 404u);
  auto whose = admin("GET", "keys");
  EXPECT_EQ(whose.status, 400u);
  EXPECT_NE(error_of(whose).find("?user=NAME"), std::string::npos);
  EXPECT_EQ(admin("GET", "keys", nullptr, "user=alice&user=bob").status, 400u);
  EXPECT_EQ(admin("PUT", "keys").status, 405u);

  auto unknown = admin("POST", "keys/key_0123456789abcdef/revoke");
  EXPECT_EQ(unknown.status, 404u);
  EXPECT_EQ(error_of(unknown), "no key with id \"key_0123456789abcdef\"");
  EXPECT_EQ(admin("DELETE", "keys/key_0123456789abcdef").status, 404u);
  EXPECT_EQ(admin("GET", "keys/key_0123456789abcdef").status, 405u);
  EXPECT_EQ(admin("GET", "keys/key_0123456789abcdef/revoke").status, 405u);
}

TEST_F(AccountsApiTest, DecodesPathSegmentsAndQueryValues) {
  add_user("al.ice");
  EXPECT_EQ(admin("POST", "users/al%2Eice/disable").status, 200u);
  EXPECT_EQ(json_of(admin("GET", "keys", nullptr, "user=al%2eice"))["keys"].size(), 0u);
  auto malformed = admin("POST", "users/al%zzice/disable");
  EXPECT_EQ(malformed.status, 400u);
  EXPECT_EQ(error_of(malformed), "malformed percent-escape in the path");
  EXPECT_EQ(admin("GET", "keys", nullptr, "user=%G1").status, 400u);
  // A decoded name that is no user's, whatever bytes it holds, is answered as valid JSON.
  auto odd = admin("POST", "users/%FF%2F/disable");
  EXPECT_EQ(odd.status, 404u);
  EXPECT_NO_THROW(Json::parse(odd.body));
}

TEST_F(AccountsApiTest, LeavesOtherPathsToTheServer) {
  for (const char* path : {"pin", "gc", "mirror", "", "users/alice", "users/alice/rename", "usersx", "keys/a/b/c",
                           "users/alice/disable/more"}) {
    EXPECT_FALSE(answer_admin(*accounts_, "POST", path, "", "")) << path;
  }
}

class AccountsUsageTest : public AccountsApiTest {
 protected:
  void SetUp() override {
    AccountsApiTest::SetUp();
    add_user("alice");
    add_user("bob");
    usage_->add(UserId::user("alice"), "model/acme/tiny", {2, 1500, 0, 1500});
    usage_->add(UserId::user("bob"), "model/acme/tiny", {1, 0, 2000, 2000});
    usage_->flush();
    clock_.advance(std::chrono::hours(24));
    usage_->add(UserId::user("alice"), "", {1, 0, 0, 0});
    usage_->add(UserId::user("alice"), "dataset/acme/a,\"quoted\"", {1, 0, 1, 1});
    usage_->add(UserId::address("203.0.113.7"), "model/acme/tiny", {3, 999, 1, 1000});
  }
  ApiAnswer usage(std::string_view query, const std::optional<std::string>& viewer = std::nullopt) {
    return answer_usage(*accounts_, viewer, query);
  }
  static std::vector<std::string> identities_of(const ApiAnswer& answer) {
    std::vector<std::string> out;
    const Json json = json_of(answer);
    for (const auto& row : json["usage"]) out.push_back(row["user"]);
    return out;
  }
};

TEST_F(AccountsUsageTest, TheAdminSeesEveryRowFlushedOrNot) {
  auto answer = usage("");
  ASSERT_EQ(answer.status, 200u) << answer.body;
  Json json = json_of(answer);
  EXPECT_EQ(json["token_size"], kTokenSize);
  ASSERT_EQ(json["usage"].size(), 5u);
  EXPECT_EQ(json["usage"][0], (Json{{"day", "2026-12-01"},
                                    {"user", "alice"},
                                    {"repo", "model/acme/tiny"},
                                    {"requests", 2},
                                    {"tokens", 2},  // 1500 bytes of 1000-byte tokens
                                    {"bytes_from_cache", 1500},
                                    {"bytes_from_upstream", 0}}));
  EXPECT_EQ(json["usage"][1]["tokens"], 2);  // exactly 2000 bytes
  EXPECT_EQ(json["usage"][2]["repo"], "");
  EXPECT_EQ(json["usage"][2]["tokens"], 0);
  EXPECT_EQ(json["usage"][3]["tokens"], 1);
  EXPECT_EQ(json["usage"][4]["user"], "anon:203.0.113.7");
  EXPECT_EQ(json["usage"][4]["tokens"], 1);

  EXPECT_EQ(identities_of(usage("user=bob")), std::vector<std::string>{"bob"});
  EXPECT_EQ(identities_of(usage("user=anon%3A203.0.113.7")), std::vector<std::string>{"anon:203.0.113.7"});
  EXPECT_EQ(identities_of(usage("since=2026-12-02&user=alice")), (std::vector<std::string>{"alice", "alice"}));
  EXPECT_EQ(json_of(usage("since=2026-12-03"))["usage"].size(), 0u);
}

TEST_F(AccountsUsageTest, AUserSeesOnlyTheirOwnRows) {
  EXPECT_EQ(identities_of(usage("", "alice")), (std::vector<std::string>{"alice", "alice", "alice"}));
  EXPECT_EQ(identities_of(usage("user=alice", "alice")), (std::vector<std::string>{"alice", "alice", "alice"}));
  auto other = usage("user=bob", "alice");
  EXPECT_EQ(other.status, 403u);
  EXPECT_EQ(error_of(other), "you may see your own usage only");
  EXPECT_EQ(usage("user=anon:203.0.113.7", "alice").status, 403u);
  EXPECT_EQ(usage("user=alice&user=bob", "alice").status, 400u);
  EXPECT_EQ(identities_of(usage("", "carol")), std::vector<std::string>{});
}

TEST_F(AccountsUsageTest, RefusesBadQueries) {
  for (const char* since : {"since=2026-13-01", "since=yesterday", "since=2026-12-1", "since="}) {
    auto answer = usage(since);
    EXPECT_EQ(answer.status, 400u) << since;
    EXPECT_EQ(error_of(answer), "since is a day, YYYY-MM-DD") << since;
  }
  EXPECT_EQ(usage("format=xml").status, 400u);
  EXPECT_EQ(usage("user=nobody").status, 404u);
  EXPECT_EQ(usage("user=no%20body").status, 400u);
  EXPECT_EQ(usage("user=%zz").status, 400u);
}

TEST_F(AccountsUsageTest, AnswersCsvWithQuotedFields) {
  auto answer = usage("format=csv&user=alice");
  ASSERT_EQ(answer.status, 200u) << answer.body;
  EXPECT_EQ(answer.content_type, "text/csv");
  EXPECT_EQ(answer.body,
            "day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream\r\n"
            "2026-12-01,alice,model/acme/tiny,2,2,1500,0\r\n"
            "2026-12-02,alice,,1,0,0,0\r\n"
            "2026-12-02,alice,\"dataset/acme/a,\"\"quoted\"\"\",1,1,0,1\r\n");
  EXPECT_EQ(usage("format=csv&since=2030-01-01").body,
            "day,user,repo,requests,tokens,bytes_from_cache,bytes_from_upstream\r\n");
}

TEST(UsageJsonTest, FieldsAndTimes) {
  EXPECT_EQ(csv_field("plain"), "plain");
  EXPECT_EQ(csv_field(""), "");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_field("cr\r"), "\"cr\r\"");
  EXPECT_EQ(iso8601_utc(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(iso8601_utc(1796164200999), "2026-12-01T22:30:00Z");  // to the second, never rounded up
  EXPECT_EQ(tokens_of({0, 0, 0, 1}, 1000), 1u);
  EXPECT_EQ(tokens_of({0, 0, 0, 1000}, 1000), 1u);
  EXPECT_EQ(tokens_of({0, 0, 0, 1001}, 1000), 2u);
  EXPECT_EQ(tokens_of({0, 0, 0, 5}, 0), 0u);
}

TEST(SecretKeyPathTest, DefaultsToTheDataDirectory) {
  Config config;
  config.data_dir = "/srv/node";
  EXPECT_EQ(secret_key_path(config), std::filesystem::path("/srv/node/secret.key"));
  config.secret_key_file = "/etc/inferllama/secret.key";
  EXPECT_EQ(secret_key_path(config), std::filesystem::path("/etc/inferllama/secret.key"));
}

}  // namespace
}  // namespace inferllama::usage
