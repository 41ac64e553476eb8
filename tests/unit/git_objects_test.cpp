// Hosted repos' git objects against git itself: the same files, message, names and times give the same
// blob, tree and commit ids.
#include "hosting/git_objects.hpp"

#include <gtest/gtest.h>

#include "cache/hashing.hpp"
#include "git_repo.hpp"

namespace inferllama::hosting {
namespace {

class GitObjectsTest : public ::testing::Test {
 protected:
  std::string git(const std::string& args) { return repo_.run(args); }
  std::string stage(const std::string& path, const std::string& content) { return repo_.stage(path, content); }

  testing::GitRepo repo_{::testing::UnitTest::GetInstance()->current_test_info()->name()};
};

Sha1 blob_of(const std::string& content) {
  return make_git_object("blob", content).id;
}

TEST_F(GitObjectsTest, BlobsAreGitsAndTheCacheNamesThemAlike) {
  for (const std::string& content : {std::string(), std::string("hello\n"), std::string("\0\xff binary", 9)}) {
    EXPECT_EQ(blob_of(content).hex(), stage("f", content));
    cache::Sha1Stream stream;
    cache::start_git_blob(stream, content.size());
    stream.update(content);
    EXPECT_EQ(stream.finish(), blob_of(content)) << "the Hub's etag of a regular file";
  }
  EXPECT_EQ(blob_of("").hex(), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}

TEST_F(GitObjectsTest, TreesAndCommitsAreGits) {
  const std::vector<std::pair<std::string, std::string>> files = {
      {"README.md", "# model\n"},
      {"config.json", "{}\n"},
      {"a/b/deep.txt", "deep\n"},
      {"a.txt", "sorted before the folder a/ by git's rule\n"},
      {"a-b", "'-' sorts before '/'\n"},
      {"empty", ""},
      {"with space/ünïcode.bin", std::string("\x01\x02", 2)},
  };
  std::vector<TreeFile> tree;
  for (const auto& [path, content] : files) {
    EXPECT_EQ(blob_of(content).hex(), stage(path, content)) << path;
    tree.push_back({path, blob_of(content)});
  }
  const auto trees = build_trees(tree);
  ASSERT_TRUE(trees);
  const Sha1 root = trees->back().id;
  EXPECT_EQ(root.hex(), git("write-tree"));
  for (const GitObject& object : *trees) {
    EXPECT_EQ(object.type, "tree");
    EXPECT_EQ(git("cat-file -t " + object.id.hex()), "tree") << "every subtree is one git wrote too";
  }

  const CommitFields first{root,
                           {},
                           {"Ada L", "ada@example.org", 1700000000},
                           {"InferLlama", "node@example.org", 1700000100},
                           "Upload the model\n\nWith a description."};
  const GitObject commit = make_commit(first);
  EXPECT_EQ(commit.id.hex(), git("commit-tree " + root.hex() + " -m 'Upload the model' -m 'With a description.'"));

  CommitFields second = first;
  second.parents = {commit.id};
  second.message = "Second";
  EXPECT_EQ(make_commit(second).id.hex(), git("commit-tree " + root.hex() + " -p " + commit.id.hex() + " -m Second"));
}

TEST_F(GitObjectsTest, AnLfsFileIsItsPointerBlob) {
  const std::string content(100000, 'x');
  const Sha256 oid = cache::sha256(content);
  const std::string pointer = lfs_pointer(oid, content.size());
  EXPECT_EQ(pointer, "version https://git-lfs.github.com/spec/v1\noid sha256:" + oid.hex() + "\nsize 100000\n");
  EXPECT_EQ(blob_of(pointer).hex(), stage("model.safetensors", pointer));
}

TEST(GitTrees, AnEmptySnapshotIsGitsEmptyTree) {
  const auto trees = build_trees({});
  ASSERT_TRUE(trees);
  ASSERT_EQ(trees->size(), 1u);
  EXPECT_EQ(trees->back().id.hex(), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
}

TEST(GitTrees, APathThatIsAFileAndAFolderOrTwiceIsRefused) {
  const Sha1 blob = blob_of("x");
  EXPECT_FALSE(build_trees({{"a", blob}, {"a/b", blob}}));
  EXPECT_FALSE(build_trees({{"a/b", blob}, {"a", blob}}));
  EXPECT_FALSE(build_trees({{"a/b", blob}, {"a/b", blob}}));
}

TEST(GitCommits, NamesCannotBreakTheHeader) {
  const CommitFields fields{blob_of(""), {}, {"Eve <x>\nparent 0", "e@x\n", 1}, {"n", "n@x", 1}, "m"};
  const std::string content = make_commit(fields).content;
  EXPECT_NE(content.find("author Eve xparent 0 <e@x> 1 +0000\n"), std::string::npos) << content;
  EXPECT_EQ(content.find("\nparent"), std::string::npos);
}

}  // namespace
}  // namespace inferllama::hosting
