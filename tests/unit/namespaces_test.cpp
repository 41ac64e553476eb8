// Hosted namespaces: users' own, organisations and their members' roles, repos and their visibility.
#include "hosting/namespaces.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"

namespace inferllama::hosting {
namespace {

using testing::ManualClock;
using testing::MemoryRecords;
using Outcome = Namespaces::Outcome;

RepoId model(std::string name) {
  return RepoId{RepoType::model, std::move(name)};
}

class NamespacesTest : public ::testing::Test {
 protected:
  MemoryRecords records;
  ManualClock clock;
  Namespaces namespaces{records, clock};
};

TEST_F(NamespacesTest, AUserOwnsTheNamespaceOfTheirNameAndMembersHaveTheirRole) {
  EXPECT_EQ(namespaces.role_in("ada", "ada"), Role::admin);
  EXPECT_EQ(namespaces.role_in("ada", "acme"), std::nullopt);
  EXPECT_EQ(namespaces.role_in("", ""), std::nullopt) << "anonymous owns nothing";

  EXPECT_EQ(namespaces.set_member("acme", "ada", Role::write), Outcome::missing) << "no such organisation";
  EXPECT_EQ(namespaces.add_org("acme"), Outcome::done);
  EXPECT_EQ(namespaces.add_org("acme"), Outcome::exists);
  EXPECT_EQ(namespaces.add_org("bad/name"), Outcome::invalid);
  EXPECT_EQ(namespaces.set_member("acme", "ada", Role::write), Outcome::done);
  EXPECT_EQ(namespaces.set_member("acme", "bob", Role::read), Outcome::done);
  EXPECT_EQ(namespaces.role_in("ada", "acme"), Role::write);
  EXPECT_EQ(namespaces.role_in("bob", "acme"), Role::read);
  EXPECT_EQ(namespaces.set_member("acme", "ada", Role::admin), Outcome::done);
  EXPECT_EQ(namespaces.role_in("ada", "acme"), Role::admin) << "a member's role changes in place";
  EXPECT_EQ(namespaces.members("acme").size(), 2u);
  ASSERT_EQ(namespaces.orgs_of("ada").size(), 1u);
  EXPECT_EQ(namespaces.orgs_of("ada")[0], (std::pair<std::string, Role>{"acme", Role::admin}));

  EXPECT_EQ(namespaces.remove_member("acme", "bob"), Outcome::done);
  EXPECT_EQ(namespaces.remove_member("acme", "bob"), Outcome::missing);
  EXPECT_EQ(namespaces.role_in("bob", "acme"), std::nullopt);
  EXPECT_TRUE(namespaces.orgs_of("bob").empty());
}

TEST_F(NamespacesTest, ReposAreCreatedOnceAndKeepTheirIdAndVisibility) {
  auto first = namespaces.create_repo(model("ada/llama-ft"), true);
  EXPECT_TRUE(first.created);
  EXPECT_EQ(first.repo.id.size(), 24u);
  EXPECT_TRUE(first.repo.is_private);
  EXPECT_EQ(first.repo.created, 1'796'083'200);
  auto again = namespaces.create_repo(model("ada/llama-ft"), false);
  EXPECT_FALSE(again.created) << "it exists: the Hub answers 409 with its url";
  EXPECT_EQ(again.repo.id, first.repo.id);
  EXPECT_TRUE(again.repo.is_private);

  // Another type is another repo of the same name.
  EXPECT_TRUE(namespaces.create_repo(RepoId{RepoType::dataset, "ada/llama-ft"}, false).created);
  EXPECT_EQ(namespaces.repos_in("ada").size(), 2u);
  EXPECT_TRUE(namespaces.repos_in("ad").empty()) << "a namespace is matched whole";

  EXPECT_EQ(namespaces.set_private(model("ada/llama-ft"), false), Outcome::done);
  EXPECT_FALSE(namespaces.repo(model("ada/llama-ft"))->is_private);
  EXPECT_EQ(namespaces.set_private(model("ada/none"), false), Outcome::missing);

  EXPECT_EQ(namespaces.delete_repo(model("ada/llama-ft")), Outcome::done);
  EXPECT_EQ(namespaces.delete_repo(model("ada/llama-ft")), Outcome::missing);
  EXPECT_FALSE(namespaces.repo(model("ada/llama-ft")));
}

TEST_F(NamespacesTest, AnOrganisationGoesOnlyOnceItHostsNothing) {
  ASSERT_EQ(namespaces.add_org("acme"), Outcome::done);
  ASSERT_EQ(namespaces.set_member("acme", "ada", Role::admin), Outcome::done);
  namespaces.create_repo(model("acme/model"), false);
  EXPECT_EQ(namespaces.remove_org("acme"), Outcome::exists);
  namespaces.delete_repo(model("acme/model"));
  EXPECT_EQ(namespaces.remove_org("acme"), Outcome::done);
  EXPECT_FALSE(namespaces.is_org("acme"));
  EXPECT_TRUE(namespaces.orgs_of("ada").empty()) << "its members' records go with it";
  EXPECT_EQ(namespaces.remove_org("acme"), Outcome::missing);
}

TEST_F(NamespacesTest, AFailedWriteChangesNothing) {
  records.fail = true;
  EXPECT_THROW(namespaces.add_org("acme"), std::runtime_error);
  EXPECT_THROW(namespaces.create_repo(model("ada/x"), false), std::runtime_error);
  records.fail = false;
  EXPECT_FALSE(namespaces.is_org("acme"));
  EXPECT_FALSE(namespaces.repo(model("ada/x")));
}

}  // namespace
}  // namespace inferllama::hosting
