// The admin API of organisations, and the rule that a namespace the node hosts (a user's name, an
// organisation's) is never another's, nor a Hub namespace the node has cached repos of unless forced.
#include "hosting/org_admin.hpp"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "usage/accounts_api.hpp"
#include "usage/identities.hpp"
#include "usage/secret_box.hpp"
#include "usage/usage_log.hpp"

namespace inferllama::hosting {
namespace {

using Json = nlohmann::json;
using testing::ManualClock;

class OrgAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("org-admin");
    index_ = open_rocksdb_index(dir_ / "index");
    namespaces_ = std::make_unique<Namespaces>(index_->records(), clock_);
    std::array<unsigned char, 32> key{};
    key.fill(7);
    identities_ = std::make_unique<usage::Identities>(index_->records(), clock_, usage::SecretBox(key));
    usage_ = std::make_unique<usage::UsageLog>(index_->records(), clock_);
    accounts_ = std::make_unique<usage::Accounts>(usage::Accounts{*identities_, *usage_, 1000});
    // As the node wires them: users from the identities, cached namespaces from the index.
    context_.user_exists = [this](std::string_view name) { return identities_->user(std::string(name)).has_value(); };
    context_.cached_upstream = [this](std::string_view ns) { return namespace_cached(*index_, ns); };
    accounts_->namespace_refusal = [this](std::string_view name, bool force) {
      return user_namespace_refusal(*namespaces_, context_.cached_upstream, name, force);
    };
  }
  void TearDown() override {
    accounts_.reset();
    usage_.reset();
    identities_.reset();
    namespaces_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }

  hub::Reply orgs(std::string_view method, std::string_view after_orgs, const Json& body = nullptr) {
    return answer_org_admin(*namespaces_, context_, method, after_orgs, body.is_null() ? "" : body.dump());
  }
  hub::Reply orgs_raw(std::string_view method, std::string_view after_orgs, const std::string& body) {
    return answer_org_admin(*namespaces_, context_, method, after_orgs, body);
  }
  static Json json_of(const hub::Reply& reply) {
    EXPECT_EQ(reply.content_type, "application/json");
    return Json::parse(reply.body);
  }
  static std::string error_of(const hub::Reply& reply) { return json_of(reply).value("error", ""); }

  usage::ApiAnswer add_user(const Json& body) {
    return answer_admin(*accounts_, "POST", "users", "", body.dump()).value_or(usage::ApiAnswer{0, "", ""});
  }
  void cache(RepoType type, const std::string& name) { index_->put_ref(RepoId{type, name}, "main", {"abc123", 1}); }

  std::filesystem::path dir_;
  ManualClock clock_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<Namespaces> namespaces_;
  std::unique_ptr<usage::Identities> identities_;
  std::unique_ptr<usage::UsageLog> usage_;
  std::unique_ptr<usage::Accounts> accounts_;
  OrgAdminContext context_;
};

TEST_F(OrgAdminTest, AddsListsAndRemovesOrganisations) {
  EXPECT_EQ(json_of(orgs("GET", "")), (Json{{"orgs", Json::array()}}));

  auto added = orgs("POST", "", {{"name", "acme"}});
  EXPECT_EQ(added.status, 201u) << added.body;
  EXPECT_EQ(json_of(added), (Json{{"name", "acme"}, {"members", Json::array()}}));
  EXPECT_TRUE(namespaces_->is_org("acme"));
  auto again = orgs("POST", "", {{"name", "acme"}});
  EXPECT_EQ(again.status, 409u);
  EXPECT_EQ(error_of(again), "organisation acme exists");
  EXPECT_EQ(orgs("POST", "", {{"name", "zeta"}, {"force", false}}).status, 201u);

  EXPECT_EQ(json_of(orgs("GET", "")),
            (Json{{"orgs",
                   {{{"name", "acme"}, {"members", Json::array()}}, {{"name", "zeta"}, {"members", Json::array()}}}}}));

  auto removed = orgs("DELETE", "/zeta");
  EXPECT_EQ(removed.status, 200u) << removed.body;
  EXPECT_EQ(json_of(removed), (Json{{"name", "zeta"}}));
  EXPECT_FALSE(namespaces_->is_org("zeta"));
  auto gone = orgs("DELETE", "/zeta");
  EXPECT_EQ(gone.status, 404u);
  EXPECT_EQ(error_of(gone), "no organisation named \"zeta\"");
  EXPECT_EQ(orgs("DELETE", "/").status, 404u);

  // An organisation that still hosts a repo stays.
  namespaces_->create_repo(RepoId{RepoType::model, "acme/tiny"}, false);
  auto hosting = orgs("DELETE", "/acme");
  EXPECT_EQ(hosting.status, 409u);
  EXPECT_NE(error_of(hosting).find("still hosts repos"), std::string::npos) << hosting.body;
  EXPECT_TRUE(namespaces_->is_org("acme"));
  namespaces_->delete_repo(RepoId{RepoType::model, "acme/tiny"});
  EXPECT_EQ(orgs("DELETE", "/acme").status, 200u);
}

TEST_F(OrgAdminTest, RefusesBadBodiesAndNames) {
  for (const std::string& body : {std::string(""), std::string("[]"), std::string("{\"name\": 3}"),
                                  std::string("{\"name\": \"acme\", \"force\": \"yes\"}"),
                                  std::string("{\"name\": \"acme\", \"owner\": \"ada\"}"), std::string("{}")}) {
    auto refused = orgs_raw("POST", "", body);
    EXPECT_EQ(refused.status, 400u) << body;
    EXPECT_NE(error_of(refused).find("expected"), std::string::npos) << refused.body;
  }
  for (const std::string& name :
       std::vector<std::string>{"", "bad/name", "-dash", "has space", "no:colons", std::string(65, 'a')}) {
    auto refused = orgs("POST", "", {{"name", name}});
    EXPECT_EQ(refused.status, 400u) << name;
    EXPECT_NE(error_of(refused).find("invalid organisation name"), std::string::npos) << refused.body;
  }
  EXPECT_TRUE(namespaces_->orgs().empty());
}

TEST_F(OrgAdminTest, MembersAreUsersOfTheNodeWithARole) {
  ASSERT_EQ(add_user({{"name", "ada"}}).status, 201u);
  ASSERT_EQ(add_user({{"name", "bob"}}).status, 201u);
  ASSERT_EQ(orgs("POST", "", {{"name", "acme"}}).status, 201u);

  auto set = orgs("PUT", "/acme/members/ada", {{"role", "write"}});
  EXPECT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(json_of(set), (Json{{"org", "acme"}, {"user", "ada"}, {"role", "write"}}));
  EXPECT_EQ(namespaces_->role_in("ada", "acme"), Role::write);
  EXPECT_EQ(orgs("PUT", "/acme/members/bob", {{"role", "read"}}).status, 200u);
  EXPECT_EQ(orgs("PUT", "/acme/members/ada", {{"role", "admin"}}).status, 200u) << "a role changes in place";

  const Json listed{{"name", "acme"},
                    {"members", {{{"user", "ada"}, {"role", "admin"}}, {{"user", "bob"}, {"role", "read"}}}}};
  EXPECT_EQ(json_of(orgs("GET", "/acme/members")), listed);
  EXPECT_EQ(json_of(orgs("GET", ""))["orgs"][0], listed);

  auto nobody = orgs("PUT", "/acme/members/nobody", {{"role", "read"}});
  EXPECT_EQ(nobody.status, 404u);
  EXPECT_EQ(error_of(nobody), "no user named \"nobody\"");
  auto no_org = orgs("PUT", "/umbrella/members/ada", {{"role", "read"}});
  EXPECT_EQ(no_org.status, 404u);
  EXPECT_EQ(error_of(no_org), "no organisation named \"umbrella\"");
  EXPECT_EQ(orgs("GET", "/umbrella/members").status, 404u);
  auto bad_role = orgs("PUT", "/acme/members/bob", {{"role", "owner"}});
  EXPECT_EQ(bad_role.status, 400u);
  EXPECT_EQ(error_of(bad_role), "role is read, write or admin");
  EXPECT_EQ(orgs("PUT", "/acme/members/bob", Json::object()).status, 400u);
  EXPECT_EQ(orgs("PUT", "/acme/members/bob", {{"role", "read"}, {"until", "May"}}).status, 400u);
  EXPECT_EQ(namespaces_->role_in("bob", "acme"), Role::read);

  auto removed = orgs("DELETE", "/acme/members/bob");
  EXPECT_EQ(removed.status, 200u);
  EXPECT_EQ(json_of(removed), (Json{{"org", "acme"}, {"user", "bob"}}));
  EXPECT_EQ(namespaces_->role_in("bob", "acme"), std::nullopt);
  auto again = orgs("DELETE", "/acme/members/bob");
  EXPECT_EQ(again.status, 404u);
  EXPECT_EQ(error_of(again), "\"bob\" is no member of acme");
  EXPECT_EQ(orgs("DELETE", "/umbrella/members/ada").status, 404u);

  // Removing the organisation ends its memberships.
  EXPECT_EQ(orgs("DELETE", "/acme").status, 200u);
  EXPECT_TRUE(namespaces_->orgs_of("ada").empty());
}

TEST_F(OrgAdminTest, RoutesMethodsAndEscapes) {
  ASSERT_EQ(orgs("POST", "", {{"name", "acme"}}).status, 201u);
  EXPECT_EQ(orgs("PATCH", "").status, 405u);
  EXPECT_EQ(orgs("GET", "/acme").status, 405u);
  EXPECT_EQ(orgs("POST", "/acme/members").status, 405u);
  EXPECT_EQ(orgs("POST", "/acme/members/ada", {{"role", "read"}}).status, 405u);
  EXPECT_EQ(orgs("GET", "/acme/repos").status, 404u);
  EXPECT_EQ(orgs("GET", "/acme/members/ada/more").status, 404u);
  EXPECT_EQ(orgs("GET", "-extra").status, 404u);
  EXPECT_EQ(orgs("DELETE", "/ac%zz").status, 400u);
  // Segments are percent-decoded once.
  EXPECT_EQ(orgs("GET", "/ac%6de/members").status, 200u);
  EXPECT_EQ(orgs("DELETE", "/ac%6de").status, 200u);
}

TEST_F(OrgAdminTest, AnOrganisationIsNeverNamedLikeAUser) {
  ASSERT_EQ(add_user({{"name", "ada"}}).status, 201u);
  for (bool force : {false, true}) {
    auto refused = orgs("POST", "", {{"name", "ada"}, {"force", force}});
    EXPECT_EQ(refused.status, 409u);
    EXPECT_EQ(error_of(refused), "a user is named \"ada\": a user's name is their own namespace");
  }
  EXPECT_FALSE(namespaces_->is_org("ada"));
}

TEST_F(OrgAdminTest, AUserIsNeverNamedLikeAnOrganisation) {
  ASSERT_EQ(orgs("POST", "", {{"name", "acme"}}).status, 201u);
  for (bool force : {false, true}) {
    auto refused = add_user({{"name", "acme"}, {"force", force}});
    EXPECT_EQ(refused.status, 409u);
    EXPECT_EQ(Json::parse(refused.body)["error"],
              "an organisation is named \"acme\": a user's name is their own namespace");
  }
  EXPECT_FALSE(identities_->user("acme"));
  // A name a user has is refused as taken, and an invalid one as invalid, before any namespace question.
  ASSERT_EQ(add_user({{"name", "ada"}}).status, 201u);
  auto taken = add_user({{"name", "ada"}});
  EXPECT_EQ(taken.status, 409u);
  EXPECT_NE(taken.body.find("ada exists"), std::string::npos) << taken.body;
  EXPECT_EQ(add_user({{"name", "no:colons"}}).status, 400u);
  auto not_a_flag = add_user({{"name", "cyd"}, {"force", "yes"}});
  EXPECT_EQ(not_a_flag.status, 400u);
  EXPECT_NE(not_a_flag.body.find("\\\"force\\\" is not true or false"), std::string::npos) << not_a_flag.body;
}

TEST_F(OrgAdminTest, ACachedHubNamespaceIsTakenOnlyWhenForced) {
  cache(RepoType::model, "hubco/tiny-model");
  cache(RepoType::dataset, "dataco/rows");
  cache(RepoType::model, "gpt2");  // a repo without a namespace is in none

  EXPECT_TRUE(namespace_cached(*index_, "hubco"));
  EXPECT_TRUE(namespace_cached(*index_, "dataco"));
  EXPECT_FALSE(namespace_cached(*index_, "hub"));
  EXPECT_FALSE(namespace_cached(*index_, "hubco/tiny-model"));
  EXPECT_FALSE(namespace_cached(*index_, "gpt2"));
  EXPECT_FALSE(namespace_cached(*index_, "model"));

  for (const Json& body : {Json{{"name", "hubco"}}, Json{{"name", "hubco"}, {"force", false}}}) {
    auto refused = orgs("POST", "", body);
    EXPECT_EQ(refused.status, 409u);
    const std::string why = error_of(refused);
    EXPECT_NE(why.find("cached repos of the Hub's namespace \"hubco\""), std::string::npos) << why;
    EXPECT_NE(why.find("--force"), std::string::npos) << why;
    EXPECT_NE(why.find("will no longer be served"), std::string::npos) << why;
  }
  EXPECT_FALSE(namespaces_->is_org("hubco"));
  EXPECT_EQ(orgs("POST", "", {{"name", "hubco"}, {"force", true}}).status, 201u);
  EXPECT_TRUE(namespaces_->is_org("hubco"));
  EXPECT_EQ(orgs("POST", "", {{"name", "gpt2"}}).status, 201u);

  // The same for a user.
  auto refused = add_user({{"name", "dataco"}});
  EXPECT_EQ(refused.status, 409u);
  const std::string why = Json::parse(refused.body)["error"];
  EXPECT_NE(why.find("--force"), std::string::npos) << why;
  EXPECT_NE(why.find("will no longer be served"), std::string::npos) << why;
  EXPECT_FALSE(identities_->user("dataco"));
  EXPECT_EQ(add_user({{"name", "dataco"}, {"force", true}}).status, 201u);
  EXPECT_TRUE(identities_->user("dataco"));
}

TEST(OrgAdminRecords, AFailedWriteIsA500) {
  testing::MemoryRecords records;
  ManualClock clock;
  Namespaces namespaces(records, clock);
  records.fail = true;
  auto failed = answer_org_admin(namespaces, {}, "POST", "", R"({"name": "acme"})");
  EXPECT_EQ(failed.status, 500u);
  EXPECT_EQ(Json::parse(failed.body)["error"], "disk full");
}

}  // namespace
}  // namespace inferllama::hosting
