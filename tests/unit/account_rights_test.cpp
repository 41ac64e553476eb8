// The data rights on a whole set of a node's account records, with a clock moved by hand: the export holds
// everything and no secret; a deletion refuses the account everywhere at once and keeps its name; a restore
// within the 30 days gives it back; the purge after them removes every trace and frees the name.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "console/account_data.hpp"
#include "console/account_deletion.hpp"
#include "console/account_rename.hpp"
#include "console/data_export.hpp"
#include "console/rights_api.hpp"
#include "inferllama/index.hpp"
#include "test_support.hpp"

namespace inferllama::console {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
using hosting::Requester;
using testing::ManualClock;

constexpr std::string_view kPassword = "correct horse battery staple";
constexpr std::string_view kWeights = "the bytes of alice's own model, hers alone";

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

template <class T>
T value_of(std::variant<T, std::string> v) {
  if (auto* error = std::get_if<std::string>(&v)) throw std::runtime_error(*error);
  return std::get<T>(std::move(v));
}

// What a user has on the node once they have used it: the secrets they were given, to look for later.
struct Footprint {
  std::string key_secret;
  std::string passkey;
  std::string session_jwt;
  std::string csrf;
  std::string mail_token;
};

class AccountRightsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("rights");
    open();
  }
  void TearDown() override {
    close();
    std::filesystem::remove_all(dir_);
  }
  void close() {
    data_.reset();
    hosting_.reset();
    mail_.reset();
    sessions_.reset();
    audit_.reset();
    usage_.reset();
    identities_.reset();
    index_.reset();
    store_.reset();
  }
  // Every part as the node builds it, over the same index.
  void open() {
    close();
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
    std::array<unsigned char, 32> key{};
    key.fill(7);
    const usage::SecretBox box(key);
    identities_ = std::make_unique<usage::Identities>(records(), clock_, box);
    usage_ = std::make_unique<usage::UsageLog>(records(), clock_);
    audit_ = std::make_unique<usage::AuditLog>(records(), clock_);
    sessions_ = std::make_unique<Sessions>(records(), clock_, box);
    mail_ = std::make_unique<MailTokens>(records(), clock_);
    hosting::Hosting::Deps deps{records(),
                                *index_,
                                *store_,
                                clock_,
                                [this](std::string_view name) { return identities_->name_taken(std::string(name)); },
                                [](std::string_view) { return std::string(); },
                                [this](const std::vector<std::string>& etags) {
                                  released_.insert(etags.begin(), etags.end());
                                  for (const auto& etag : etags) index_->remove_blob(etag);
                                },
                                {},
                                [this](std::string_view ns) {
                                  const auto user = identities_->user(std::string(ns));
                                  return user && user->deleted_ms.has_value();
                                }};
    hosting_ = std::make_unique<hosting::Hosting>(deps, hosting::HostingSettings{.chunk_size = 64 * 1024});
    data_ = std::make_unique<AccountData>(AccountData{clock_, records(), *identities_, *usage_, *audit_, *sessions_,
                                                      *mail_, hosting_->namespaces(), 1000, hosting_.get(),
                                                      [this] { ++visibility_changes_; }});
  }
  RecordStore& records() { return index_->records(); }

  // A user with a password, a key, a console session, an emailed link, usage (stored and not yet flushed),
  // a private hosted repo with a file of their own, a membership of "acme" and audit events.
  Footprint use_the_node(const std::string& name) {
    Footprint f;
    value_of(identities_->add_user(name, name + "@example.org"));
    EXPECT_EQ(identities_->set_password(name, kPassword), std::nullopt);
    f.key_secret = value_of(identities_->create_key(name, "laptop")).secret;
    f.passkey = identities_->user(name)->passkey;
    const auto session = sessions_->open(name);
    f.session_jwt = session.jwt;
    f.csrf = session.csrf;
    f.mail_token = mail_->issue(name, TokenPurpose::reset_password, 1h);
    usage_->add(UserId::user(name), "model/" + name + "/tiny", usage::UsageCounts{3, 300, 0, 300});
    usage_->flush();
    usage_->add(UserId::user(name), "", usage::UsageCounts{1, 0, 0, 0});  // still in memory
    const Json body{{"name", name + "/tiny"},
                    {"private", true},
                    {"files", {{{"path", "weights.bin"}, {"content", base64(std::string(kWeights) + name)}}}}};
    const auto created = hosting_->create_repo(Requester{name}, body.dump(), "http://node.test");
    EXPECT_TRUE(created && created->status == 200) << (created ? created->body : "not hosted");
    if (!hosting_->namespaces().is_org("acme")) hosting_->namespaces().add_org("acme");
    hosting_->namespaces().set_member("acme", name, hosting::Role::write);
    audit_->record(name, usage::AuditEvent::signed_in, usage::Actor::user, "203.0.113.7");
    return f;
  }

  Json exported(const std::string& name) { return value_of(export_account(*data_, name)); }

  std::string commit_of(const std::string& repo) {
    return hosting_->commit_of(RepoId{RepoType::model, repo}, "main").value_or("");
  }

  std::filesystem::path dir_;
  ManualClock clock_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<usage::Identities> identities_;
  std::unique_ptr<usage::UsageLog> usage_;
  std::unique_ptr<usage::AuditLog> audit_;
  std::unique_ptr<Sessions> sessions_;
  std::unique_ptr<MailTokens> mail_;
  std::unique_ptr<hosting::Hosting> hosting_;
  std::unique_ptr<AccountData> data_;
  std::set<std::string> released_;
  int visibility_changes_ = 0;
};

TEST_F(AccountRightsTest, TheExportHoldsEverythingKeptAboutTheUserAndNoSecret) {
  const Footprint alice = use_the_node("alice");
  use_the_node("bob");
  const Json e = exported("alice");
  EXPECT_EQ(e["format"], "inferllama-export");
  EXPECT_EQ(e["version"], 1);
  EXPECT_EQ(e["exported"], "2026-12-01T00:00:00Z");

  EXPECT_EQ(e["user"]["name"], "alice");
  EXPECT_EQ(e["user"]["email"], "alice@example.org");
  EXPECT_EQ(e["user"]["has_password"], true);
  EXPECT_EQ(e["user"]["deleted"], nullptr);
  EXPECT_FALSE(e["user"].contains("passkey"));

  ASSERT_EQ(e["keys"].size(), 1u);
  EXPECT_EQ(e["keys"][0]["label"], "laptop");
  EXPECT_EQ(e["keys"][0]["hint"], alice.key_secret.substr(0, 8));
  ASSERT_EQ(e["sessions"].size(), 1u);
  EXPECT_EQ(e["sessions"][0], (Json{{"created", "2026-12-01T00:00:00Z"},
                                    {"refreshed", "2026-12-01T00:00:00Z"},
                                    {"expires", "2026-12-31T00:00:00Z"}}));

  ASSERT_EQ(e["usage"].size(), 2u);  // the flushed row and the one still in memory
  EXPECT_EQ(e["usage"][1]["repo"], "model/alice/tiny");
  EXPECT_EQ(e["usage"][1]["requests"], 3);

  ASSERT_EQ(e["repos"].size(), 1u);
  const Json& repo = e["repos"][0];
  EXPECT_EQ(repo["repo"], "model/alice/tiny");
  EXPECT_EQ(repo["private"], true);
  ASSERT_EQ(repo["branches"].size(), 1u);
  EXPECT_EQ(repo["branches"][0]["name"], "main");
  EXPECT_EQ(repo["branches"][0]["commit"], commit_of("alice/tiny"));
  const Json& files = repo["branches"][0]["files"];
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1]["path"], "weights.bin");
  EXPECT_EQ(files[1]["size"], kWeights.size() + 5);
  EXPECT_EQ(files[1]["oid"].get<std::string>().size(), 40u);

  EXPECT_EQ(e["organizations"], (Json::array({{{"name", "acme"}, {"role", "write"}}})));
  ASSERT_EQ(e["audit"].size(), 1u);
  EXPECT_EQ(
      e["audit"][0],
      (Json{{"time", "2026-12-01T00:00:00Z"}, {"event", "signed_in"}, {"by", "user"}, {"network", "203.0.113.7"}}));

  const std::string text = e.dump();
  for (const std::string& secret : {alice.key_secret, alice.passkey, alice.session_jwt, alice.csrf, alice.mail_token,
                                    std::string(kPassword), std::string("$argon2")}) {
    EXPECT_EQ(text.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(text.find("bob"), std::string::npos);  // nothing of another user
  EXPECT_EQ(std::get<std::string>(export_account(*data_, "nobody")), "no user named \"nobody\"");
}

TEST_F(AccountRightsTest, ADeletedAccountIsRefusedEverywhereKeepsItsNameAndIsRestoredWithinTheGrace) {
  const Footprint alice = use_the_node("alice");
  const RepoId repo{RepoType::model, "alice/tiny"};
  const std::string commit = commit_of("alice/tiny");
  ASSERT_FALSE(commit.empty());

  ASSERT_EQ(delete_account(*data_, "alice", usage::Actor::user, "203.0.113.7"), std::nullopt);
  EXPECT_EQ(visibility_changes_, 1);
  // Refused as a disabled user is: keys, passkey, password, new keys, the console.
  EXPECT_EQ(std::get<std::string>(identities_->authenticate(alice.key_secret)), "this key was revoked");
  EXPECT_FALSE(identities_->user_of_passkey(alice.passkey));
  EXPECT_FALSE(identities_->check_password("alice", kPassword));
  EXPECT_EQ(std::get<std::string>(identities_->create_key("alice", "again")), "user alice is deleted");
  EXPECT_FALSE(sessions_->check(alice.session_jwt, std::nullopt));
  EXPECT_FALSE(mail_->redeem(alice.mail_token, TokenPurpose::reset_password));
  // The name stays taken, by a user or an organisation.
  EXPECT_EQ(std::get<std::string>(identities_->add_user("alice", "")), "user alice exists");
  EXPECT_TRUE(hosting_->owns_namespace("alice"));
  // Its repos are answered as missing, to the admin too, on every path that serves them.
  EXPECT_EQ(hosting_->read_refusal(Requester{"", true}, repo)->status, 404u);
  EXPECT_EQ(hosting_->read_refusal(Requester{"alice"}, repo)->status, 404u);
  EXPECT_FALSE(hosting_->visibility(repo));
  EXPECT_FALSE(hosting_->commit_of(repo, "main"));
  EXPECT_FALSE(hosting_->files(repo, commit));
  EXPECT_FALSE(hosting_->file(repo, commit, "weights.bin"));
  EXPECT_EQ(hosting_->list_repos(Requester{"", true}, RepoType::model, "alice").body, "[]");
  // Deleting again changes nothing: the grace runs from the first time.
  clock_.advance(1h);
  ASSERT_EQ(delete_account(*data_, "alice", usage::Actor::admin), std::nullopt);
  EXPECT_EQ(*identities_->user("alice")->deleted_ms, 1'796'083'200'000);
  const auto events = audit_->of_user("alice");
  EXPECT_EQ(std::count_if(events.begin(), events.end(),
                          [](const auto& e) { return e.event == usage::AuditEvent::deletion_requested; }),
            1);

  // It is written down: a restart keeps the account deleted.
  open();
  EXPECT_TRUE(identities_->user("alice")->deleted_ms);
  EXPECT_FALSE(identities_->check_password("alice", kPassword));

  // A day before the grace ends nothing is purged, and the admin may restore it.
  clock_.advance(kDeletionGrace - 1h - 24h);
  EXPECT_TRUE(purge_deleted_accounts(*data_).empty());
  ASSERT_EQ(restore_account(*data_, "alice"), std::nullopt);
  EXPECT_TRUE(identities_->user("alice")->active());
  EXPECT_TRUE(identities_->check_password("alice", kPassword));
  EXPECT_EQ(std::get<std::string>(identities_->authenticate(alice.key_secret)), "this key was revoked");
  EXPECT_EQ(hosting_->commit_of(repo, "main"), commit);
  EXPECT_FALSE(hosting_->read_refusal(Requester{"alice"}, repo));
  EXPECT_EQ(restore_account(*data_, "alice"), "user alice is not deleted");
  EXPECT_EQ(audit_->of_user("alice").back().event, usage::AuditEvent::restored);
}

TEST_F(AccountRightsTest, ThePurgeAfterTheGraceRemovesEveryTraceAndFreesTheName) {
  const Footprint alice = use_the_node("alice");
  use_the_node("bob");
  const Json before = exported("alice");
  const std::string weights = before["repos"][0]["branches"][0]["files"][1]["oid"];
  const std::string attributes = before["repos"][0]["branches"][0]["files"][0]["oid"];
  ASSERT_TRUE(index_->get_blob(weights));
  ASSERT_EQ(delete_account(*data_, "alice", usage::Actor::user), std::nullopt);
  usage_->add(UserId::user("alice"), "", usage::UsageCounts{1, 0, 0, 0});  // a request that was in flight

  clock_.advance(kDeletionGrace - 1ms);
  EXPECT_TRUE(purge_deleted_accounts(*data_).empty());
  clock_.advance(1ms);
  EXPECT_EQ(restore_account(*data_, "alice"),
            "the grace of user alice ended on 2026-12-31T00:00:00Z: it is being purged and cannot be restored");
  EXPECT_EQ(purge_deleted_accounts(*data_), std::vector<std::string>{"alice"});

  EXPECT_FALSE(identities_->user("alice"));
  EXPECT_FALSE(identities_->user_of_passkey(alice.passkey));
  EXPECT_EQ(std::get<std::string>(identities_->authenticate(alice.key_secret)), "unknown API key");
  EXPECT_TRUE(sessions_->of_user("alice").empty());
  EXPECT_TRUE(usage_->query(UserId::user("alice"), std::nullopt).empty());
  EXPECT_TRUE(audit_->of_user("alice").empty());
  EXPECT_TRUE(hosting_->namespaces().orgs_of("alice").empty());
  EXPECT_TRUE(hosting_->namespaces().repos_in("alice").empty());
  EXPECT_FALSE(mail_->redeem(alice.mail_token, TokenPurpose::reset_password));
  // The repo's own file left the store; the .gitattributes every repo shares stays with bob's.
  EXPECT_TRUE(released_.contains(weights));
  EXPECT_FALSE(index_->get_blob(weights));
  EXPECT_FALSE(released_.contains(attributes));
  // No record of any accounts table names alice any more: not a key, not a value (git objects included).
  for (const auto table : {RecordTable::identities, RecordTable::sessions, RecordTable::usage, RecordTable::hosting}) {
    records().scan(table, "", [](std::string_view key, std::string_view value) {
      EXPECT_EQ(std::string(key).find("alice"), std::string::npos) << key;
      EXPECT_EQ(std::string(value).find("alice"), std::string::npos) << key;
      return true;
    });
  }

  // Bob's account is untouched.
  const Json bob = exported("bob");
  EXPECT_EQ(bob["repos"].size(), 1u);
  EXPECT_EQ(bob["usage"].size(), 2u);
  EXPECT_EQ(bob["organizations"].size(), 1u);
  EXPECT_EQ(bob["audit"].size(), 1u);

  // The name is free: its namespace is nobody's, and a new user may take it with nothing of the old one.
  EXPECT_FALSE(hosting_->owns_namespace("alice"));
  value_of(identities_->add_user("alice", ""));
  const Json fresh = exported("alice");
  EXPECT_TRUE(fresh["repos"].empty());
  EXPECT_TRUE(fresh["usage"].empty());
  EXPECT_TRUE(fresh["keys"].empty());
  EXPECT_TRUE(fresh["organizations"].empty());
  EXPECT_TRUE(purge_deleted_accounts(*data_).empty());  // nothing left to do
}

TEST_F(AccountRightsTest, ARenameMovesEverythingKeptUnderTheNameAndKeepsTheOldOneForTheAccount) {
  const Footprint alice = use_the_node("alice");
  use_the_node("bob");
  const Json before = exported("alice");
  const std::string weights = before["repos"][0]["branches"][0]["files"][1]["oid"];
  const std::string commit = commit_of("alice/tiny");
  const RepoId old_repo{RepoType::model, "alice/tiny"}, new_repo{RepoType::model, "alicia/tiny"};
  ASSERT_TRUE(index_->blob_serves(weights, old_repo));
  const std::string repo_id = hosting_->namespaces().repo(old_repo)->id;

  ASSERT_FALSE(rename_account(*data_, "alice", "alicia", usage::Actor::user, "203.0.113.7"));
  EXPECT_EQ(visibility_changes_, 1);
  EXPECT_TRUE(identities_->unfinished_renames().empty());
  // The account answers to its new name: keys, passkey, password.
  EXPECT_EQ(std::get<usage::Authenticated>(identities_->authenticate(alice.key_secret)).user, "alicia");
  EXPECT_EQ(identities_->user_of_passkey(alice.passkey), "alicia");
  EXPECT_TRUE(identities_->check_password("alicia", kPassword));
  // The old name's sessions and mailed links ended.
  EXPECT_FALSE(sessions_->check(alice.session_jwt, std::nullopt));
  EXPECT_FALSE(mail_->redeem(alice.mail_token, TokenPurpose::reset_password));
  // Its usage (stored and still in memory), audit events, memberships and repos moved.
  EXPECT_TRUE(usage_->query(UserId::user("alice"), std::nullopt).empty());
  EXPECT_TRUE(audit_->of_user("alice").empty());
  EXPECT_TRUE(hosting_->namespaces().orgs_of("alice").empty());
  const Json after = exported("alicia");
  EXPECT_EQ(after["user"]["name"], "alicia");
  EXPECT_EQ(after["usage"].size(), 2u);
  EXPECT_EQ(after["organizations"], (Json::array({{{"name", "acme"}, {"role", "write"}}})));
  ASSERT_EQ(after["audit"].size(), 2u);
  EXPECT_EQ(after["audit"][1]["event"], "renamed");
  EXPECT_EQ(after["audit"][1]["detail"], "alice");
  ASSERT_EQ(after["repos"].size(), 1u);
  EXPECT_EQ(after["repos"][0]["repo"], "model/alicia/tiny");
  EXPECT_EQ(after["repos"][0]["created"], before["repos"][0]["created"]);
  EXPECT_EQ(hosting_->namespaces().repo(new_repo)->id, repo_id);
  EXPECT_EQ(after["repos"][0]["private"], true);
  EXPECT_EQ(after["repos"][0]["branches"], before["repos"][0]["branches"]);
  EXPECT_EQ(commit_of("alicia/tiny"), commit);
  EXPECT_FALSE(hosting_->read_refusal(Requester{"alicia"}, new_repo));
  EXPECT_EQ(hosting_->read_refusal(Requester{"bob"}, new_repo)->status, 404u);  // still private
  // The bytes answer for the new name only: the old one may be a Hub repo's some day.
  EXPECT_TRUE(index_->blob_serves(weights, new_repo));
  EXPECT_FALSE(index_->blob_serves(weights, old_repo));
  // The old names answer as missing repos, from a namespace that stays the node's.
  EXPECT_TRUE(hosting_->owns_namespace("alice"));
  EXPECT_EQ(hosting_->read_refusal(Requester{"", true}, old_repo)->status, 404u);
  EXPECT_FALSE(hosting_->commit_of(old_repo, "main"));

  // Refusals: the old name is the account's, other names are checked as at creation.
  EXPECT_EQ(rename_account(*data_, "bob", "alice", usage::Actor::admin)->status, 409u);
  EXPECT_EQ(rename_account(*data_, "bob", "alicia", usage::Actor::admin)->status, 409u);
  EXPECT_EQ(rename_account(*data_, "bob", "acme", usage::Actor::admin)->status, 409u);  // an organisation's
  EXPECT_EQ(rename_account(*data_, "bob", "bad name", usage::Actor::admin)->status, 400u);
  EXPECT_EQ(rename_account(*data_, "bob", "bob", usage::Actor::admin)->status, 400u);
  EXPECT_EQ(rename_account(*data_, "nobody", "x", usage::Actor::admin)->status, 404u);
  EXPECT_EQ(std::get<std::string>(identities_->add_user("alice", "")),
            "the name alice was another user's and stays reserved");

  // A rename cut short (here: nowhere to move repos to) is finished by the next run.
  AccountData cut_short = *data_;
  cut_short.hosting = nullptr;
  ASSERT_FALSE(rename_account(cut_short, "bob", "robert", usage::Actor::admin));
  EXPECT_EQ(identities_->unfinished_renames(), (std::vector<std::pair<std::string, std::string>>{{"bob", "robert"}}));
  EXPECT_EQ(hosting_->namespaces().repos_in("bob").size(), 1u);
  EXPECT_EQ(finish_renames(*data_), std::vector<std::string>{"bob"});
  EXPECT_TRUE(hosting_->namespaces().repos_in("bob").empty());
  EXPECT_EQ(exported("robert")["repos"].size(), 1u);
  EXPECT_EQ(exported("robert")["usage"].size(), 2u);

  // The account takes its old name back, after a restart.
  open();
  clock_.advance(1s);
  ASSERT_FALSE(rename_account(*data_, "alicia", "alice", usage::Actor::admin));
  EXPECT_EQ(commit_of("alice/tiny"), commit);
  EXPECT_TRUE(index_->blob_serves(weights, old_repo));
  EXPECT_EQ(exported("alice")["audit"].size(), 3u);

  // Purged, it frees every name it had, and leaves none of them anywhere.
  ASSERT_EQ(delete_account(*data_, "alice", usage::Actor::admin), std::nullopt);
  clock_.advance(kDeletionGrace);
  EXPECT_EQ(purge_deleted_accounts(*data_), std::vector<std::string>{"alice"});
  EXPECT_FALSE(identities_->name_taken("alicia"));
  for (const auto table : {RecordTable::identities, RecordTable::sessions, RecordTable::usage, RecordTable::hosting}) {
    records().scan(table, "", [](std::string_view key, std::string_view value) {
      for (const std::string name : {"alice", "alicia"}) {
        EXPECT_EQ(std::string(key).find(name), std::string::npos) << key;
        EXPECT_EQ(std::string(value).find(name), std::string::npos) << key;
      }
      return true;
    });
  }
}

usage::ApiAnswer admin(AccountData& data, std::string_view method, std::string_view path, std::string_view body = {}) {
  auto answer = answer_rights_admin(data, method, path, body);
  EXPECT_TRUE(answer) << path;
  return answer.value_or(usage::ApiAnswer{0, "", ""});
}

TEST_F(AccountRightsTest, TheAdminRoutesAnswerWithTheUsualStatuses) {
  use_the_node("alice");
  EXPECT_FALSE(answer_rights_admin(*data_, "GET", "users", ""));  // the accounts API's
  EXPECT_FALSE(answer_rights_admin(*data_, "POST", "users/alice/disable", ""));
  EXPECT_EQ(admin(*data_, "GET", "users/nobody/export").status, 404u);
  EXPECT_EQ(admin(*data_, "POST", "users/alice/export").status, 405u);
  EXPECT_EQ(admin(*data_, "GET", "users/alice").status, 405u);
  EXPECT_EQ(admin(*data_, "DELETE", "users/nobody").status, 404u);
  EXPECT_EQ(admin(*data_, "POST", "users/alice/restore").status, 409u);

  const auto exported = admin(*data_, "GET", "users/alice/export");
  EXPECT_EQ(exported.status, 200u);
  EXPECT_EQ(Json::parse(exported.body)["user"]["name"], "alice");
  EXPECT_EQ(audit_->of_user("alice").back().by, usage::Actor::admin);

  const auto deleted = admin(*data_, "DELETE", "users/alice");
  ASSERT_EQ(deleted.status, 200u) << deleted.body;
  EXPECT_EQ(Json::parse(deleted.body)["deleted"], "2026-12-01T00:00:00Z");
  EXPECT_EQ(Json::parse(deleted.body)["purge_after"], "2026-12-31T00:00:00Z");

  for (const std::string_view body : {"[]", "{\"older_than_days\": 31}", "{\"older_than_days\": -1}",
                                      "{\"older_than_days\": \"0\"}", "{\"days\": 0}"}) {
    EXPECT_EQ(admin(*data_, "POST", "purge", body).status, 400u) << body;
  }
  EXPECT_EQ(admin(*data_, "GET", "purge").status, 405u);
  EXPECT_EQ(admin(*data_, "POST", "purge").body, R"({"purged":[]})");
  EXPECT_EQ(admin(*data_, "POST", "purge", R"({"older_than_days": 0, "user": "bob"})").body, R"({"purged":[]})");
  EXPECT_EQ(admin(*data_, "POST", "purge", R"({"older_than_days": 0, "user": "alice"})").body,
            R"({"purged":["alice"]})");
  EXPECT_EQ(admin(*data_, "GET", "users/alice/export").status, 404u);

  AccountData without_hosting = *data_;
  without_hosting.hosting = nullptr;
  EXPECT_EQ(admin(without_hosting, "POST", "purge").status, 501u);

  use_the_node("carol");
  EXPECT_EQ(admin(*data_, "GET", "users/carol/rename").status, 405u);
  EXPECT_EQ(admin(*data_, "POST", "users/carol/rename", "{}").status, 400u);
  EXPECT_EQ(admin(*data_, "POST", "users/nobody/rename", R"({"name": "x"})").status, 404u);
  EXPECT_EQ(admin(*data_, "POST", "users/carol/rename", R"({"name": "acme"})").status, 409u);
  const auto renamed = admin(*data_, "POST", "users/carol/rename", R"({"name": "caroline"})");
  ASSERT_EQ(renamed.status, 200u) << renamed.body;
  EXPECT_EQ(Json::parse(renamed.body)["name"], "caroline");
  EXPECT_EQ(audit_->of_user("caroline").back().by, usage::Actor::admin);
}

}  // namespace
}  // namespace inferllama::console
