// Preupload's decision, regular or LFS: the .gitattributes rules checked against git's own check-attr.
#include "hosting/upload_mode.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace inferllama::hosting {
namespace {

namespace fs = std::filesystem;

// Whether git, given `gitattributes`, sets filter=lfs on `path`.
bool git_says_lfs(const fs::path& repo, const std::string& path) {
  const std::string command = "cd '" + repo.string() + "' && git check-attr filter -- '" + path + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[512];
  while (pipe && std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
  EXPECT_EQ(pipe ? ::pclose(pipe) : -1, 0) << command << ": " << out;
  return out.ends_with(": filter: lfs\n");
}

TEST(LfsRules, AgreeWithGitsCheckAttr) {
  const fs::path repo = fs::temp_directory_path() / ("inferllama-attr-" + std::to_string(::getpid()));
  fs::remove_all(repo);
  fs::create_directories(repo);
  const std::string attributes = std::string(kDefaultGitAttributes) +
                                 "# a comment\n"
                                 "docs/*.png filter=lfs diff=lfs merge=lfs -text\n"
                                 "/top.dat filter=lfs\n"
                                 "*.bin -filter\n"
                                 "keep.bin filter=lfs\n"
                                 "weights/[a-c]?.raw filter=lfs\n"
                                 "deep/**/x.y filter=lfs\n";
  std::ofstream(repo / ".gitattributes") << attributes;
  ASSERT_EQ(std::system(("git init -q '" + repo.string() + "'").c_str()), 0);
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
    EXPECT_EQ(rules.is_lfs(path), git_says_lfs(repo, path)) << path;
  }
  fs::remove_all(repo);
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
