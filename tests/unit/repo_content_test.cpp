// A hosted repo's content: commits move a branch atomically, a stale parent is a 412, and what was
// committed reads back.
#include "hosting/repo_content.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"

namespace inferllama::hosting {
namespace {

const CommitAuthor kWho{{"Ada L", "ada@example.org", 1700000000}, {"InferLlama", "node@example.org", 1700000100}};
const RepoId kRepo{RepoType::model, "ada/llama-ft"};

CommitPayload payload(std::optional<std::string> parent, std::vector<CommitOperation> operations) {
  return CommitPayload{{"s", "", std::move(parent)}, std::move(operations)};
}

std::optional<std::uint64_t> nothing_stored(const Sha256&) {
  return std::nullopt;
}

TEST(RepoContent, CommitsMoveTheBranchAndReadBack) {
  testing::MemoryRecords records;
  RepoContent content(records);
  EXPECT_FALSE(content.head(kRepo, "main"));
  auto first =
      content.commit(kRepo, "main", payload(std::nullopt, {AddFile{"a/b.txt", "hello\n"}}), kWho, nothing_stored);
  ASSERT_TRUE(std::holds_alternative<Sha1>(first)) << std::get<CommitRefusal>(first).message;
  const Sha1 one = std::get<Sha1>(first);
  EXPECT_EQ(content.head(kRepo, "main"), one);
  const Snapshot files = content.snapshot(kRepo, one);
  ASSERT_EQ(files.size(), 1u);
  const auto blob = content.object(files.at("a/b.txt").blob);
  ASSERT_TRUE(blob);
  EXPECT_EQ(blob->type, "blob");
  EXPECT_EQ(blob->content, "hello\n");
  EXPECT_EQ(content.object(one)->type, "commit");

  // The client names the head it saw: a stale one is refused and nothing moves.
  auto stale =
      content.commit(kRepo, "main", payload(std::string(40, '0'), {AddFile{"c.txt", "c"}}), kWho, nothing_stored);
  ASSERT_TRUE(std::holds_alternative<CommitRefusal>(stale));
  EXPECT_EQ(std::get<CommitRefusal>(stale).status, 412u);
  EXPECT_EQ(content.head(kRepo, "main"), one);

  auto second = content.commit(kRepo, "main", payload(one.hex(), {DeleteFile{"a/b.txt"}, AddFile{"c.txt", "c"}}), kWho,
                               nothing_stored);
  ASSERT_TRUE(std::holds_alternative<Sha1>(second));
  const Sha1 two = std::get<Sha1>(second);
  EXPECT_NE(two, one);
  EXPECT_EQ(content.snapshot(kRepo, two).size(), 1u);
  EXPECT_EQ(content.snapshot(kRepo, one).size(), 1u) << "the earlier commit keeps its snapshot";
  EXPECT_NE(content.object(two)->content.find("parent " + one.hex()), std::string::npos);
  EXPECT_FALSE(content.head(kRepo, "other"));

  content.forget(kRepo);
  EXPECT_FALSE(content.head(kRepo, "main"));
  EXPECT_TRUE(content.snapshot(kRepo, two).empty());
}

TEST(RepoContent, ARefusedOrFailedCommitLeavesNothing) {
  testing::MemoryRecords records;
  RepoContent content(records);
  auto refused = content.commit(kRepo, "main", payload(std::nullopt, {DeleteFile{"missing"}}), kWho, nothing_stored);
  ASSERT_TRUE(std::holds_alternative<CommitRefusal>(refused));
  EXPECT_EQ(std::get<CommitRefusal>(refused).code, "EntryNotFound");
  EXPECT_TRUE(records.rows.empty());

  records.fail = true;
  EXPECT_THROW(content.commit(kRepo, "main", payload(std::nullopt, {AddFile{"a", "a"}}), kWho, nothing_stored),
               std::runtime_error);
  records.fail = false;
  EXPECT_FALSE(content.head(kRepo, "main"));
  EXPECT_TRUE(records.rows.empty()) << "one batch: all of the commit or none";
}

}  // namespace
}  // namespace inferllama::hosting
