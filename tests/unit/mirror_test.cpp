// The mirror's decisions before and around the swarm, with a scripted source node (no network). What a
// real source and swarm do is in tests/integration/test_mirror.py and test_admin_socket.py.
#include "torrent/mirror.hpp"

#include <gtest/gtest.h>

#include "hub_fixture.hpp"

namespace inferllama::torrent {
namespace {

using namespace testing;  // the fake Hub and its fixture

constexpr std::string_view kSource = "http://node.test";

// A v1 single-file torrent of `length` bytes named `name` (its piece hashes are not checked before a swarm).
std::string single_file_torrent(const std::string& name, std::uint64_t length) {
  const std::uint64_t pieces = (length + 16383) / 16384;
  return "d4:infod6:lengthi" + std::to_string(length) + "e4:name" + std::to_string(name.size()) + ":" + name +
         "12:piece lengthi16384e6:pieces" + std::to_string(pieces * 20) + ":" + std::string(pieces * 20, 'x') + "ee";
}

UpstreamResponse node_health() { return UpstreamResponse{200, {{"x-inferllama-node", "0.1.0"}}, "ok", {}}; }

class MirrorTest : public HubFixture {
 protected:
  void SetUp() override {
    HubFixture::SetUp();
    config_.bt_listen = "127.0.0.1:0";
    hub_api_.put("acme/one", repo_with(FakeHub::Access::open, {{"config.json", kConfig}}));
    torrents_ = std::make_unique<SnapshotTorrents>(*store_, *index_, *hub_, SnapshotTorrents::Hooks{});
    mirror_ = std::make_unique<Mirror>(Mirror::Parts{config_, *store_, *index_, workers_, *hub_, *downloads_, *evictor_,
                                                     *torrents_, &source_});
  }
  void TearDown() override {
    mirror_.reset();
    torrents_.reset();
    HubFixture::TearDown();
  }

  hub::Reply refused(const std::string& repo, const std::string& from = std::string(kSource)) {
    auto outcome = mirror_->mirror(RepoId{RepoType::model, repo}, "main", from);
    if (auto* reply = std::get_if<hub::Reply>(&outcome)) return *reply;
    ADD_FAILURE() << repo << " was mirrored from " << from;
    return {};
  }
  std::string torrent_url(const std::string& repo) const {
    return std::string(kSource) + "/api/models/" + repo + "/torrent/main";
  }

  // The source node: /healthz and the torrent answers, as the test sets them.
  UpstreamResponse health = node_health();
  UpstreamResponse torrent;
  ScriptedUpstream source_{[this](const UpstreamRequest& request) {
    return request.url.ends_with("/healthz") ? health : torrent;
  }};
  std::unique_ptr<SnapshotTorrents> torrents_;
  std::unique_ptr<Mirror> mirror_;
};

TEST_F(MirrorTest, ASourceThatIsNoNodesBaseUrlIsAskedNothing) {
  for (const std::string from : {"ftp://node.test", "http://node.test/a b", "http://node.test/a\\b",
                                 "http://node.test/\x01", "http://", "https://:443", "http://user@node.test",
                                 "http://node.test/?x=1", "http://node.test/#top"}) {
    EXPECT_EQ(refused("acme/one", from).status, 400u) << from;
  }
  EXPECT_EQ(refused("not a repo").status, 400u);
  EXPECT_TRUE(source_.urls().empty());
}

TEST_F(MirrorTest, ARepoTheHubCallsGatedIsRefusedBeforeTheSourceIsAsked) {
  hub_api_.put("acme/gated", repo_with(FakeHub::Access::gated, {{"config.json", kConfig}}));
  EXPECT_EQ(refused("acme/gated").status, 403u);
  EXPECT_TRUE(source_.urls().empty());
}

TEST_F(MirrorTest, ASourceIsAskedForMoreOnlyOnceItsHealthzSaysItIsANode) {
  const std::vector<std::string> probe_only{std::string(kSource) + "/healthz"};
  health = UpstreamResponse{0, {}, {}, "connection refused"};
  hub::Reply unreachable = refused("acme/one");
  EXPECT_EQ(unreachable.status, 502u);
  EXPECT_NE(unreachable.body.find("cannot be reached"), std::string::npos) << unreachable.body;

  health = UpstreamResponse{301, {{"location", "http://elsewhere.test/healthz"}, {"x-inferllama-node", "0.1.0"}}, {},
                            {}};
  hub::Reply redirect = refused("acme/one");
  EXPECT_EQ(redirect.status, 502u);
  EXPECT_NE(redirect.body.find("redirect"), std::string::npos) << redirect.body;

  health = UpstreamResponse{404, {{"x-inferllama-node", "0.1.0"}}, {}, {}};
  hub::Reply missing = refused("acme/one");
  EXPECT_EQ(missing.status, 502u);
  EXPECT_NE(missing.body.find("not an InferLlama node"), std::string::npos) << missing.body;

  std::vector<std::string> asked = source_.urls();
  EXPECT_EQ(asked, std::vector<std::string>(3, probe_only.front()));
}

TEST_F(MirrorTest, TheSourcesTorrentAnswerIsCheckedAndItsRedirectsRefused) {
  const std::string commit_header = "x-repo-commit";
  const std::uint64_t size = kConfig.bytes.size();
  torrent = UpstreamResponse{302, {{"location", "http://elsewhere.test/t"}}, {}, {}};
  hub::Reply redirect = refused("acme/one");
  EXPECT_EQ(redirect.status, 502u);
  EXPECT_NE(redirect.body.find("redirects are refused"), std::string::npos) << redirect.body;
  const std::vector<std::string> asked{std::string(kSource) + "/healthz", torrent_url("acme/one")};
  EXPECT_EQ(source_.urls(), asked) << "the Location is not followed";

  torrent = UpstreamResponse{404, {{"x-error-message", "no such revision here"}}, {}, {}};
  EXPECT_NE(refused("acme/one").body.find("no such revision here"), std::string::npos);

  torrent = UpstreamResponse{200, {}, single_file_torrent("config.json", size), {}};
  EXPECT_NE(refused("acme/one").body.find("names no commit"), std::string::npos);

  torrent = UpstreamResponse{200, {{commit_header, kCommit1}}, "not bencode", {}};
  EXPECT_NE(refused("acme/one").body.find("torrent is not acceptable"), std::string::npos);

  // The Hub decides which commit the branch names: a source behind or ahead is not taken.
  torrent = UpstreamResponse{200, {{commit_header, kCommit2}}, single_file_torrent("config.json", size), {}};
  EXPECT_EQ(refused("acme/one").status, 409u);

  // The torrent must list exactly the files of the commit's tree, with their sizes.
  torrent = UpstreamResponse{200, {{commit_header, kCommit1}}, single_file_torrent("other.json", size), {}};
  EXPECT_NE(refused("acme/one").body.find("does not list the files"), std::string::npos);
  torrent = UpstreamResponse{200, {{commit_header, kCommit1}}, single_file_torrent("config.json", size + 1), {}};
  EXPECT_NE(refused("acme/one").body.find("does not list the files"), std::string::npos);
  EXPECT_FALSE(index_->get_file(RepoId{RepoType::model, "acme/one"}, kCommit1, "config.json"));
}

TEST_F(MirrorTest, CancelEndsTheSwarmDownloadAndEveryLaterOne) {
  torrent = UpstreamResponse{200, {{"x-repo-commit", kCommit1}},
                             single_file_torrent("config.json", kConfig.bytes.size()), {}};
  mirror_->cancel();
  hub::Reply cancelled = refused("acme/one");
  EXPECT_EQ(cancelled.status, 502u);
  EXPECT_NE(cancelled.body.find("cancelled"), std::string::npos) << cancelled.body;
  EXPECT_FALSE(index_->get_file(RepoId{RepoType::model, "acme/one"}, kCommit1, "config.json"));
  EXPECT_EQ(refused("acme/one").body, cancelled.body) << "and every later one";
}

}  // namespace
}  // namespace inferllama::torrent
