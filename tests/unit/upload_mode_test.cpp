// Preupload's decision, regular or LFS: the .gitattributes rules checked against git's own check-attr.
#include "hosting/upload_mode.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "git_repo.hpp"

namespace inferllama::hosting {
namespace {

TEST(LfsRules, AgreeWithGitsCheckAttr) {
  testing::GitRepo git("check-attr");
  const std::string attributes = std::string(kDefaultGitAttributes) +
                                 "# a comment\n"
                                 "docs/*.png filter=lfs diff=lfs merge=lfs -text\n"
                                 "/top.dat filter=lfs\n"
                                 "*.bin -filter\n"
                                 "keep.bin filter=lfs\n"
                                 "weights/[a-c]?.raw filter=lfs\n"
                                 "deep/**/x.y filter=lfs\n";
  std::ofstream(git.dir() / ".gitattributes") << attributes;
  const LfsRules rules(attributes);
  for (const std::string path : {"model.safetensors",
                                 "sub/dir/model.safetensors",
                                 "pytorch_model.bin",
                                 "keep.bin",
                                 "a/keep.bin",
                                 "README.md",
                                 "config.json",
                                 "docs/a.png",
                                 "docs/sub/a.png",
                                 "x/docs/a.png",
                                 "top.dat",
                                 "sub/top.dat",
                                 "saved_model/variables/data",
                                 "saved_model/x",
                                 "data.tar.gz",
                                 "archive.tar",
                                 "events.out.tfevents.1",
                                 "weights/a1.raw",
                                 "weights/d1.raw",
                                 "weights/a12.raw",
                                 "deep/x.y",
                                 "deep/a/b/x.y",
                                 "model.lfs.json",
                                 "notes.txt"}) {
    const bool git_says_lfs = git.run("check-attr filter -- '" + path + "'").ends_with(": filter: lfs");
    EXPECT_EQ(rules.is_lfs(path), git_says_lfs) << path;
  }
}

TEST(UploadMode, BySizeRulesAndContent) {
  const LfsRules rules(kDefaultGitAttributes);
  EXPECT_EQ(upload_mode(rules, "README.md", 100, "# hello"), UploadMode::regular);
  EXPECT_EQ(upload_mode(rules, "model.safetensors", 100, "{}"), UploadMode::lfs);
  EXPECT_EQ(upload_mode(rules, "model.safetensors", 0, ""), UploadMode::regular) << "empty files are regular";
  EXPECT_EQ(upload_mode(rules, "big.txt", kRegularFileLimit, "text"), UploadMode::lfs);
  EXPECT_EQ(upload_mode(rules, "big.txt", kRegularFileLimit - 1, "text"), UploadMode::regular);
  EXPECT_EQ(upload_mode(rules, "blob.dat", 10, std::string("ab\0cd", 5)), UploadMode::lfs) << "binary";
}

TEST(GlobMatch, SegmentsClassesAndEscapes) {
  EXPECT_TRUE(glob_match("*.txt", "a.txt"));
  EXPECT_FALSE(glob_match("*.txt", "a/b.txt"));
  EXPECT_TRUE(glob_match("a/**/b", "a/b"));
  EXPECT_TRUE(glob_match("a/**/b", "a/x/y/b"));
  EXPECT_TRUE(glob_match("a/**", "a/x/y"));
  EXPECT_TRUE(glob_match("[!a]x", "bx"));
  EXPECT_FALSE(glob_match("[!a]x", "ax"));
  EXPECT_TRUE(glob_match("\\*x", "*x"));
  EXPECT_FALSE(glob_match("\\*x", "ax"));
  EXPECT_FALSE(glob_match("?", "/"));
  EXPECT_FALSE(glob_match("[a-", "a")) << "an unclosed class matches nothing past the pattern";
}

}  // namespace
}  // namespace inferllama::hosting
