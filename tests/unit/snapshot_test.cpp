// A commit applied to a hosted snapshot: the files it leaves and a commit id equal to git's for the same
// content, and the Hub's refusals.
#include "hosting/snapshot.hpp"

#include <gtest/gtest.h>

#include "cache/hashing.hpp"
#include "git_repo.hpp"

namespace inferllama::hosting {
namespace {

const CommitAuthor kWho{{"Ada L", "ada@example.org", testing::GitRepo::kAuthorTime},
                        {"InferLlama", "node@example.org", testing::GitRepo::kCommitterTime}};

CommitPayload payload(std::string summary, std::string description, std::vector<CommitOperation> operations) {
  return CommitPayload{{std::move(summary), std::move(description), std::nullopt}, std::move(operations)};
}

TEST(ApplyCommit, TwoCommitsHaveGitsIds) {
  testing::GitRepo git("apply-commit");
  const std::string weights(5000, 'w');
  const Sha256 oid = cache::sha256(weights);
  auto stored = [&](const Sha256& asked) -> std::optional<std::uint64_t> {
    if (asked == oid) return weights.size();
    return std::nullopt;
  };

  auto first = apply_commit({}, std::nullopt,
                            payload("Upload the model", "From the fine-tune.",
                                    {AddFile{"README.md", "# model\n"}, AddFile{"logs/a.txt", "a\n"},
                                     AddFile{"logs/b.txt", "b\n"}, AddLfsFile{"model.safetensors", oid, 5000}}),
                            kWho, stored);
  ASSERT_TRUE(std::holds_alternative<AppliedCommit>(first)) << std::get<CommitRefusal>(first).message;
  const auto& one = std::get<AppliedCommit>(first);
  git.stage("README.md", "# model\n");
  git.stage("logs/a.txt", "a\n");
  git.stage("logs/b.txt", "b\n");
  git.stage("model.safetensors", lfs_pointer(oid, 5000));
  const std::string tree = git.run("write-tree");
  EXPECT_EQ(one.commit.hex(), git.run("commit-tree " + tree + " -m 'Upload the model' -m 'From the fine-tune.'"));
  EXPECT_EQ(one.files.at("model.safetensors").lfs, oid);
  EXPECT_EQ(one.files.at("model.safetensors").size, 5000u);
  EXPECT_EQ(one.objects.back().type, "commit");

  auto second =
      apply_commit(one.files, one.commit,
                   payload("Tidy", "", {DeleteFolder{"logs"}, AddLfsFile{"copy.safetensors", oid, {}}}), kWho, stored);
  ASSERT_TRUE(std::holds_alternative<AppliedCommit>(second)) << std::get<CommitRefusal>(second).message;
  const auto& two = std::get<AppliedCommit>(second);
  git.unstage("logs/a.txt");
  git.unstage("logs/b.txt");
  git.stage("copy.safetensors", lfs_pointer(oid, 5000));
  EXPECT_EQ(two.commit.hex(), git.run("commit-tree " + git.run("write-tree") + " -p " + one.commit.hex() + " -m Tidy"));
  EXPECT_EQ(two.files.size(), 3u);
  EXPECT_FALSE(two.files.contains("logs/a.txt"));
}

TEST(ApplyCommit, TheHubsRefusals) {
  const Snapshot files = {{"a.txt", SnapshotFile{make_git_object("blob", "a").id, 1, std::nullopt}}};
  auto none = [](const Sha256&) -> std::optional<std::uint64_t> { return std::nullopt; };
  auto refusal = [&](std::vector<CommitOperation> operations,
                     const std::function<std::optional<std::uint64_t>(const Sha256&)>& stored) {
    auto result = apply_commit(files, std::nullopt, payload("s", "", std::move(operations)), kWho, stored);
    return std::holds_alternative<CommitRefusal>(result) ? std::get<CommitRefusal>(result) : CommitRefusal{0, "", ""};
  };
  auto missing = refusal({DeleteFile{"b.txt"}}, none);
  EXPECT_EQ(missing.status, 404u);
  EXPECT_EQ(missing.code, "EntryNotFound");
  EXPECT_NE(missing.message.find("A file with this name doesn't exist"), std::string::npos);
  EXPECT_EQ(refusal({DeleteFolder{"nothing"}}, none).code, "EntryNotFound");
  const Sha256 oid = cache::sha256("x");
  EXPECT_NE(refusal({AddLfsFile{"w.bin", oid, 1}}, none).message.find("does not exist"), std::string::npos)
      << "an LFS object never uploaded";
  auto ten = [](const Sha256&) -> std::optional<std::uint64_t> { return 10; };
  EXPECT_NE(refusal({AddLfsFile{"w.bin", oid, 11}}, ten).message.find("has 10 bytes"), std::string::npos);
  EXPECT_NE(refusal({AddFile{"a.txt/inner", "x"}}, none).message.find("a file and a folder"), std::string::npos);
}

}  // namespace
}  // namespace inferllama::hosting
