#include "hub/hub_service.hpp"

#include <gtest/gtest.h>

#include "hub_fixture.hpp"

namespace inferllama::hub {
namespace {

using namespace testing;  // the fake Hub and its fixture

class HubServiceTest : public HubFixture {};

TEST_F(HubServiceTest, APublicFileIsFetchedOnceThenAnsweredWithoutTheHub) {
  for (const std::string path : {"config.json", "model.bin"}) {
    const FileAnswer miss = answered("acme/open", "main", path);
    EXPECT_EQ(miss.commit, kCommit1);
    EXPECT_TRUE(miss.download) << path;
  }
  EXPECT_EQ(hub_->counters().misses.load(), 2u);
  // The LFS file's bytes came from where the Hub redirected, the regular one's from the resolve URL.
  EXPECT_EQ(hub_api_.count("RANGE http://hub.test/cdn/" + FakeHub::etag_of(kWeights)), 1u);
  EXPECT_EQ(hub_api_.count("RANGE http://hub.test/acme/open/resolve/" + kCommit1 + "/config.json"), 1u);

  const std::size_t calls = hub_api_.calls();
  for (const std::string path : {"config.json", "model.bin"}) {
    const FileAnswer hit = answered("acme/open", "main", path);
    EXPECT_FALSE(hit.download);
    ASSERT_TRUE(hit.blob);
    EXPECT_TRUE(hit.lease) << "a stored file is served under a lease";
    EXPECT_EQ(hit.commit, kCommit1);
    EXPECT_TRUE(hit.stale.empty());
    EXPECT_EQ(hit.file.size, path == "model.bin" ? kWeights.bytes.size() : kConfig.bytes.size());
    EXPECT_TRUE(hub_->resolve_fast(RepoId{RepoType::model, "acme/open"}, "main", path));
  }
  EXPECT_EQ(hub_api_.calls(), calls);
  EXPECT_EQ(hub_->counters().hits.load(), 4u);
}

TEST_F(HubServiceTest, ABranchIsAskedAgainOnceItsTtlPassedACommitShaNever) {
  answered("acme/open", "main", "config.json");
  EXPECT_EQ(hub_api_.count("HEAD "), 1u);
  hub_api_.move_branch("acme/open", "main", kCommit2);

  // Within ref_ttl the branch names the commit seen last.
  EXPECT_EQ(answered("acme/open", "main", "config.json").commit, kCommit1);
  EXPECT_EQ(hub_api_.count("HEAD "), 1u);

  // A branch looked up longer than ref_ttl ago is asked again (after a restart the index says when).
  const auto long_ago = std::chrono::system_clock::now() - config_.ref_ttl - std::chrono::seconds(1);
  index_->put_ref(
      RepoId{RepoType::model, "acme/open"}, "main",
      RefEntry{kCommit1, std::chrono::duration_cast<std::chrono::milliseconds>(long_ago.time_since_epoch()).count()});
  restart();
  const FileAnswer moved = answered("acme/open", "main", "config.json");
  EXPECT_EQ(moved.commit, kCommit2);
  EXPECT_EQ(hub_api_.count("HEAD "), 2u);
  EXPECT_FALSE(moved.download) << "the same bytes are not fetched again for another commit";
  EXPECT_TRUE(moved.blob);

  // A commit sha names the same files forever: never asked about.
  restart();
  EXPECT_EQ(answered("acme/open", kCommit1, "config.json").commit, kCommit1);
  EXPECT_EQ(hub_api_.count("HEAD "), 2u);

  // ref_ttl 0: every request asks.
  config_.ref_ttl = std::chrono::seconds(0);
  restart();
  answered("acme/open", "main", "config.json");
  answered("acme/open", "main", "config.json");
  EXPECT_EQ(hub_api_.count("HEAD "), 4u);
}

TEST_F(HubServiceTest, AForgottenBranchIsAskedAgainAtOnceAndRemembersTheCommitItLeft) {
  const RepoId open{RepoType::model, "acme/open"};
  EXPECT_FALSE(hub_->forget_ref(open, "main")) << "never resolved";
  answered("acme/open", "main", "config.json");
  hub_api_.move_branch("acme/open", "main", kCommit2);  // a force-push
  EXPECT_EQ(answered("acme/open", "main", "config.json").commit, kCommit1) << "within ref_ttl";
  const auto revisions = hub_api_.count("/revision/main");

  EXPECT_EQ(hub_->forget_ref(open, "main"), kCommit1);
  EXPECT_EQ(hub_->forget_ref(open, kCommit1), std::nullopt) << "a commit never moves";
  EXPECT_FALSE(hub_->resolve_fast(open, "main", "config.json")) << "the fast path forgot it too";
  EXPECT_EQ(std::get<std::string>(hub_->commit_of(open, "main")), kCommit2);
  EXPECT_EQ(hub_api_.count("/revision/main"), revisions + 1);
  EXPECT_EQ(answered("acme/open", "main", "config.json").commit, kCommit2);
  const auto ref = index_->get_ref(open, "main");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->before, std::vector<std::string>{kCommit1});

  // After a restart the index alone says the branch must be asked again.
  hub_->forget_ref(open, "main");
  restart();
  EXPECT_EQ(index_->get_ref(open, "main")->fetched_at_ms, 0);
  EXPECT_EQ(std::get<std::string>(hub_->commit_of(open, "main")), kCommit2);
  EXPECT_EQ(hub_api_.count("/revision/main"), revisions + 2);
  // While the Hub cannot be asked, a forgotten branch still names the last commit seen.
  hub_->forget_ref(open, "main");
  hub_api_.set_down(true);
  std::string stale;
  EXPECT_EQ(std::get<std::string>(hub_->commit_of(open, "main", &stale)), kCommit2);
  EXPECT_FALSE(stale.empty());
  hub_api_.set_down(false);

  // Back to the first commit: the history holds each commit once, the current one not at all.
  hub_api_.move_branch("acme/open", "main", kCommit1);
  EXPECT_EQ(std::get<std::string>(hub_->commit_of(open, "main", nullptr, HubService::RefLookup::ask_hub)), kCommit1);
  EXPECT_EQ(index_->get_ref(open, "main")->before, std::vector<std::string>{kCommit2});
}

TEST_F(HubServiceTest, AGatedReposRefusalsAreRelayedAndItsStoredFilesServeOnlyWhomTheHubLetsIn) {
  hub_api_.put("acme/gated", repo_with(FakeHub::Access::gated, {{"model.bin", kWeights}}));
  Reply anonymous = refused("acme/gated", "main", "model.bin");
  EXPECT_EQ(anonymous.status, 401u);
  EXPECT_EQ(header(anonymous, "x-error-code"), "GatedRepo");
  Reply unapproved = refused("acme/gated", "main", "model.bin", kRefused);
  EXPECT_EQ(unapproved.status, 403u);
  EXPECT_EQ(header(unapproved, "x-error-code"), "GatedRepo");

  EXPECT_TRUE(answered("acme/gated", "main", "model.bin", kApproved).download);
  // Stored now, yet still the Hub's to decide for every other caller.
  EXPECT_EQ(refused("acme/gated", "main", "model.bin", kRefused).status, 403u);
  EXPECT_EQ(refused("acme/gated", "main", "model.bin").status, 401u);
  EXPECT_FALSE(hub_->resolve_fast(RepoId{RepoType::model, "acme/gated"}, "main", "model.bin"));
  // The approved caller is answered from the store while the Hub's yes is fresh (access_ttl).
  const std::size_t heads = hub_api_.count("HEAD ");
  EXPECT_TRUE(answered("acme/gated", "main", "model.bin", kApproved).blob);
  EXPECT_EQ(hub_api_.count("HEAD "), heads);
  EXPECT_EQ(hub_api_.count("RANGE "), 1u);
}

TEST_F(HubServiceTest, DuringAnOutageStoredFilesAreServedWithTheStaleNote) {
  config_.ref_ttl = std::chrono::seconds(0);  // every request asks the Hub first
  restart();
  hub_api_.put("acme/gated", repo_with(FakeHub::Access::gated, {{"model.bin", kWeights}}));
  answered("acme/open", "main", "config.json");
  answered("acme/gated", "main", "model.bin", kApproved);
  hub_api_.set_down(true);

  const FileAnswer by_branch = answered("acme/open", "main", "config.json");
  EXPECT_EQ(by_branch.commit, kCommit1);
  EXPECT_TRUE(by_branch.blob);
  EXPECT_NE(by_branch.stale.find("upstream unreachable"), std::string::npos) << by_branch.stale;
  EXPECT_NE(by_branch.stale.find(kCommit1), std::string::npos) << by_branch.stale;
  EXPECT_TRUE(answered("acme/open", kCommit1, "config.json").stale.empty()) << "a commit sha is never stale";

  EXPECT_EQ(refused("acme/open", "main", "model.bin").status, 504u) << "not stored";
  EXPECT_EQ(refused("acme/never-seen", "main", "config.json").status, 504u);
  // Gated bytes are not served without the Hub's confirmation (offline_grace is 0).
  EXPECT_EQ(refused("acme/gated", "main", "model.bin").status, 503u);
  EXPECT_EQ(hub_api_.count("RANGE "), 2u);
}

TEST_F(HubServiceTest, AnUpstreamClaimingAnotherSizeForStoredBytesIsA502AndNothingIsStored) {
  answered("acme/open", "main", "model.bin");
  FakeHub::File lie = kWeights;
  lie.claimed_size = kWeights.bytes.size() + 1;
  hub_api_.put("acme/liar", repo_with(FakeHub::Access::open, {{"copy.bin", lie}}));

  EXPECT_EQ(refused("acme/liar", "main", "copy.bin").status, 502u);
  EXPECT_FALSE(index_->get_file(RepoId{RepoType::model, "acme/liar"}, kCommit1, "copy.bin"));
  EXPECT_EQ(hub_api_.count("RANGE "), 1u);
  EXPECT_EQ(downloads_->in_flight(), 0u);
  EXPECT_EQ(index_->get_blob(FakeHub::etag_of(kWeights))->size, kWeights.bytes.size());
}

TEST_F(HubServiceTest, AStoredBlobOfAPrivateRepoAnswersAnotherRepoOnlyOnceItsUpstreamDeliveredIt) {
  hub_api_.put("acme/private", repo_with(FakeHub::Access::restricted, {{"model.bin", kWeights}}));
  hub_api_.put("other/private", repo_with(FakeHub::Access::restricted, {{"same.bin", kWeights}}));
  const std::string etag = FakeHub::etag_of(kWeights);
  const RepoId first{RepoType::model, "acme/private"};
  const RepoId second{RepoType::model, "other/private"};

  answered("acme/private", "main", "model.bin", kApproved);
  EXPECT_TRUE(index_->blob_serves(etag, first));
  EXPECT_FALSE(index_->blob_serves(etag, second));

  // The same hash in another repo: its own upstream must deliver the bytes before they answer for it.
  const FileAnswer other = answered("other/private", "main", "same.bin", kApproved);
  EXPECT_TRUE(other.download);
  EXPECT_FALSE(other.blob);
  EXPECT_EQ(hub_api_.count("RANGE "), 2u);
  EXPECT_TRUE(index_->blob_serves(etag, second));
  EXPECT_FALSE(index_->blob_serves(etag, RepoId{RepoType::model, "acme/open"}));

  // Forgotten, then stored again for the first repo only: the second's file entry stays, and still the
  // bytes wait for its own upstream.
  evictor_->forget({etag});
  EXPECT_TRUE(answered("acme/private", "main", "model.bin", kApproved).download);
  EXPECT_FALSE(index_->blob_serves(etag, second));
  EXPECT_TRUE(answered("other/private", "main", "same.bin", kApproved).download);
  EXPECT_EQ(hub_api_.count("RANGE "), 4u);
  EXPECT_TRUE(answered("other/private", "main", "same.bin", kApproved).blob);
  EXPECT_EQ(hub_api_.count("RANGE "), 4u);
}

TEST_F(HubServiceTest, MetadataAnswersAreStoredOnlyForTheAllowlistedQueries) {
  const RepoId repo{RepoType::model, "acme/open"};
  auto asked = [&](auto&& call) {
    const std::size_t before = hub_api_.calls();
    const Reply reply = call();
    EXPECT_EQ(reply.status, 200u) << reply.body;
    return hub_api_.calls() - before;
  };
  auto info = [&](std::string_view query) { return hub_->info(repo, std::string("main"), query, Caller{}); };
  auto tree = [&](std::string_view query) { return hub_->tree(repo, "main", "", query, Caller{}, "http://node"); };

  EXPECT_GE(asked([&] { return info("expand=sha"); }), 1u);
  EXPECT_EQ(asked([&] { return info("expand=sha"); }), 0u);
  EXPECT_EQ(asked([&] { return tree("recursive=true"); }), 1u);
  EXPECT_EQ(asked([&] { return tree("recursive=true"); }), 0u);
  EXPECT_EQ(asked([&] { return tree("recursive=1"); }), 0u) << "the same query in another spelling";
  EXPECT_EQ(hub_->counters().metadata_unstored.load(), 0u);

  // Parameters outside the allowlist are forwarded every time, and their answers not kept.
  EXPECT_EQ(asked([&] { return info("expand=sha&unknown=1"); }), 1u);
  EXPECT_EQ(asked([&] { return info("expand=sha&unknown=1"); }), 1u);
  EXPECT_EQ(asked([&] { return tree("recursive=true&unknown=1"); }), 1u);
  EXPECT_EQ(hub_->counters().metadata_unstored.load(), 3u);

  // What was stored answers while the Hub is away; what was not, cannot.
  hub_api_.set_down(true);
  EXPECT_EQ(info("expand=sha").status, 200u);
  EXPECT_EQ(tree("recursive=true").status, 200u);
  EXPECT_EQ(tree("recursive=true&unknown=1").status, 504u);
}

}  // namespace
}  // namespace inferllama::hub
