// A HubService over a FakeHub, with the real chunk store and RocksDB index in a scratch directory.
#pragma once
#include <gtest/gtest.h>
#include <strings.h>

#include <filesystem>

#include "fake_upstreams.hpp"
#include "hub/hub_service.hpp"
#include "test_support.hpp"

namespace inferllama::testing {

inline const std::string kCommit1(40, '1');
inline const std::string kCommit2(40, '2');
inline const std::string kApproved = "Bearer hf_approved";
inline const std::string kRefused = "Bearer hf_refused";

// A header of a reply, by its name in any case.
inline std::optional<std::string> header(const hub::Reply& reply, std::string_view name) {
  for (const auto& [k, v] : reply.headers)
    if (k.size() == name.size() && ::strncasecmp(k.data(), name.data(), name.size()) == 0) return v;
  return std::nullopt;
}

// A repo holding `files` at kCommit1 (its branch main) and at kCommit2; kApproved may read it however gated.
inline FakeHub::Repo repo_with(FakeHub::Access access, std::map<std::string, FakeHub::File> files) {
  FakeHub::Repo repo;
  repo.access = access;
  repo.approved = {kApproved};
  repo.branches["main"] = kCommit1;
  repo.snapshots[kCommit1] = files;
  repo.snapshots[kCommit2] = std::move(files);
  return repo;
}

inline const FakeHub::File kConfig{R"({"model_type": "tiny"})", false, std::nullopt};
inline const FakeHub::File kWeights{std::string(200 * 1024, 'w'), true, std::nullopt};

// The cache and a HubService over a FakeHub in a scratch directory, with acme/open public: what HubService
// and Mirror tests stand on.
class HubFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_test_dir("hub");
    config_.data_dir = dir_;
    config_.upstream = std::string(FakeHub::kUrl);
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
    cache::DownloadSettings settings;
    settings.chunk_size = 64 * 1024;
    settings.backoff = std::chrono::milliseconds(1);
    downloads_ = std::make_unique<cache::Downloads>(*store_, *index_, hub_api_, workers_, settings);
    evictor_ = std::make_unique<cache::Evictor>(*store_, *index_, 0);
    downloads_->set_hooks([this](const std::string& etag) { evictor_->stored(etag); },
                          [this](std::uint64_t bytes) { evictor_->make_room(bytes); });
    hub_api_.put("acme/open", repo_with(FakeHub::Access::open, {{"config.json", kConfig}, {"model.bin", kWeights}}));
    restart();
  }
  void TearDown() override {
    hub_.reset();
    downloads_->shutdown();
    downloads_.reset();
    workers_.join();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A new service over the same index and store: what it remembers in memory is gone, as after a restart.
  void restart() { hub_ = std::make_unique<hub::HubService>(config_, *index_, hub_api_, *downloads_, *evictor_); }

  std::variant<hub::FileAnswer, hub::Reply> resolve(const std::string& repo, const std::string& rev,
                                                    const std::string& path, const std::string& authorization = {}) {
    return hub_->resolve(RepoId{RepoType::model, repo}, rev, path, hub::Caller{authorization}, true);
  }
  // Resolves a file that must be answered, and waits for its download if it started one.
  hub::FileAnswer answered(const std::string& repo, const std::string& rev, const std::string& path,
                           const std::string& authorization = {}) {
    auto result = resolve(repo, rev, path, authorization);
    if (auto* reply = std::get_if<hub::Reply>(&result)) {
      ADD_FAILURE() << "HTTP " << reply->status << ": " << reply->body;
      return {};
    }
    hub::FileAnswer answer = std::get<hub::FileAnswer>(result);
    if (answer.download) {
      auto waiter = std::make_shared<Waiter>();
      answer.download->subscribe(waiter);
      waiter->until_done(*answer.download);
      EXPECT_EQ(answer.download->state(), cache::Download::State::complete) << answer.download->error();
    }
    return answer;
  }
  hub::Reply refused(const std::string& repo, const std::string& rev, const std::string& path,
                     const std::string& authorization = {}) {
    auto result = resolve(repo, rev, path, authorization);
    if (auto* reply = std::get_if<hub::Reply>(&result)) return *reply;
    ADD_FAILURE() << path << " was answered";
    return {};
  }

  std::filesystem::path dir_;
  Config config_;
  FakeHub hub_api_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  asio::thread_pool workers_{2};
  std::unique_ptr<cache::Downloads> downloads_;
  std::unique_ptr<cache::Evictor> evictor_;
  std::unique_ptr<hub::HubService> hub_;
};

}  // namespace inferllama::testing
