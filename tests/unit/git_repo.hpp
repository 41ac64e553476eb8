// A scratch git repository for tests that check the node's git objects against git itself: fixed author,
// committer and dates, so commit ids are reproducible.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace inferllama::testing {

class GitRepo {
 public:
  static constexpr std::int64_t kAuthorTime = 1700000000;
  static constexpr std::int64_t kCommitterTime = 1700000100;

  explicit GitRepo(const std::string& name)
      : dir_(std::filesystem::temp_directory_path() / ("inferllama-git-" + std::to_string(::getpid()) + "-" + name)) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    run("init -q .");
  }
  ~GitRepo() { std::filesystem::remove_all(dir_); }
  GitRepo(const GitRepo&) = delete;
  GitRepo& operator=(const GitRepo&) = delete;

  // `git ARGS` in the repository with the fixed names and dates; its first line of output.
  std::string run(const std::string& args) {
    const std::string command = "cd '" + dir_.string() +
                                "' && GIT_AUTHOR_NAME='Ada L' GIT_AUTHOR_EMAIL=ada@example.org "
                                "GIT_AUTHOR_DATE='" +
                                std::to_string(kAuthorTime) +
                                " +0000' GIT_COMMITTER_NAME='InferLlama' GIT_COMMITTER_EMAIL=node@example.org "
                                "GIT_COMMITTER_DATE='" +
                                std::to_string(kCommitterTime) + " +0000' git -c core.autocrlf=false " + args + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    EXPECT_NE(pipe, nullptr);
    std::string out;
    char buffer[256];
    while (pipe && std::fgets(buffer, sizeof buffer, pipe)) out += buffer;
    EXPECT_EQ(pipe ? ::pclose(pipe) : -1, 0) << "git " << args << ": " << out;
    return out.substr(0, out.find('\n'));
  }

  // Writes `content` at `path` and adds it to the index; the blob id git gave it.
  std::string stage(const std::string& path, const std::string& content) {
    const auto file = dir_ / path;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << content;
    run("add -- '" + path + "'");
    return run("hash-object -- '" + path + "'");
  }
  void unstage(const std::string& path) { run("rm -q --cached -- '" + path + "'"); }

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

}  // namespace inferllama::testing
