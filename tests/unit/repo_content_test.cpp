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
  // The file's id is git's; its bytes are the chunk store's, not kept a second time as a git object.
  EXPECT_EQ(files.at("a/b.txt").blob, make_git_object("blob", "hello\n").id);
  EXPECT_FALSE(content.object(files.at("a/b.txt").blob));
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

namespace inferllama::hosting {
namespace {

TEST(RepoContent, ObjectsNoBranchReachesAreCollected) {
  testing::MemoryRecords records;
  RepoContent content(records);
  const RepoId other{RepoType::model, "ada/other"};
  auto gone =
      content.commit(kRepo, "main", payload(std::nullopt, {AddFile{"a/only-here.txt", "x"}}), kWho, nothing_stored);
  auto kept = content.commit(other, "main", payload(std::nullopt, {AddFile{"b/kept.txt", "y"}}), kWho, nothing_stored);
  ASSERT_TRUE(std::holds_alternative<Sha1>(gone) && std::holds_alternative<Sha1>(kept));
  const auto gone_commit = content.object(std::get<Sha1>(gone));
  const auto kept_commit = content.object(std::get<Sha1>(kept));
  ASSERT_TRUE(gone_commit && kept_commit);
  const Sha1 gone_tree = parse_commit(gone_commit->content)->tree;
  const Sha1 kept_tree = parse_commit(kept_commit->content)->tree;
  content.forget(kRepo);
  content.collect_objects();
  EXPECT_FALSE(content.object(std::get<Sha1>(gone)));
  EXPECT_FALSE(content.object(gone_tree));
  EXPECT_TRUE(content.object(std::get<Sha1>(kept)));
  ASSERT_TRUE(content.object(kept_tree));
  // The subfolder's tree too: reached through the root's entry.
  std::size_t trees = 0;
  records.scan(RecordTable::hosting, "obj|", [&](std::string_view, std::string_view value) {
    trees += value.starts_with("tree");
    return true;
  });
  EXPECT_EQ(trees, 2u);  // the other repo's root and b/
}

}  // namespace
}  // namespace inferllama::hosting
