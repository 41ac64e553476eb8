// Keeping snapshots warm: the `prefetch` entries as written, the patterns as huggingface_hub matches them, and
// the prefetcher over the fake Hub (what it fetches, pins, unpins and refuses). The real binary keeping a
// branch current is in tests/integration/test_prefetch.py.
#include "prefetch/prefetcher.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hub/snapshot_fetch.hpp"
#include "hub_fixture.hpp"
#include "prefetch/patterns.hpp"

namespace inferllama::prefetch {
namespace {

using namespace testing;  // the fake Hub and its fixture
using Json = nlohmann::json;

// ---- the setting ------------------------------------------------------------------------------------

TEST(PrefetchSpecTest, AnEntryIsARepoARevisionAndPatterns) {
  const auto spec = parse_prefetch_spec(" acme/model@v2:*.safetensors; config.json ;tokenizer/ ");
  EXPECT_EQ(spec.repo, (RepoId{RepoType::model, "acme/model"}));
  EXPECT_EQ(spec.rev, "v2");
  EXPECT_EQ(spec.patterns, (std::vector<std::string>{"*.safetensors", "config.json", "tokenizer/"}));
  EXPECT_EQ(spec.key(), "model/acme/model@v2");
  EXPECT_EQ(format_prefetch_spec(spec), "acme/model@v2:*.safetensors;config.json;tokenizer/");
  EXPECT_EQ(parse_prefetch_spec(format_prefetch_spec(spec)), spec);

  const auto dataset = parse_prefetch_spec("datasets/acme/data");
  EXPECT_EQ(dataset.repo, (RepoId{RepoType::dataset, "acme/data"}));
  EXPECT_EQ(dataset.rev, "main");
  EXPECT_TRUE(dataset.patterns.empty());
  EXPECT_EQ(format_prefetch_spec(dataset), "datasets/acme/data@main");
  // A revision with slashes (a pull request) and a pattern with a colon of its own.
  const auto pr = parse_prefetch_spec("spaces/acme/app@refs/pr/1:a:b");
  EXPECT_EQ(pr.repo.type, RepoType::space);
  EXPECT_EQ(pr.rev, "refs/pr/1");
  EXPECT_EQ(pr.patterns, std::vector<std::string>{"a:b"});
}

TEST(PrefetchSpecTest, BadEntriesAreRefusedWithTheirText) {
  for (const std::string& bad :
       std::vector<std::string>{"", "acme/model@", "not a repo", "acme/model:", "acme/model: ; ", "a/b/c",
                                "acme/model@main:" + std::string(kMaxPrefetchPatternLength + 1, 'x'),
                                "acme/model@" + std::string(kMaxPrefetchRevisionLength + 1, 'r')}) {
    EXPECT_THROW(parse_prefetch_spec(bad), ConfigError) << bad;
  }
  std::string many = "acme/model:";
  for (std::size_t i = 0; i <= kMaxPrefetchPatterns; ++i) many += "p" + std::to_string(i) + ";";
  try {
    parse_prefetch_spec(many);
    ADD_FAILURE() << "33 patterns were taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("at most 32"), std::string::npos) << e.what();
  }
  PrefetchSpec with_comma{RepoId{RepoType::model, "acme/model"}, "main", {"a,b"}};
  EXPECT_THROW(check_prefetch_spec(with_comma), ConfigError);
  with_comma.patterns = {"tab\there"};
  EXPECT_THROW(check_prefetch_spec(with_comma), ConfigError);
}

TEST(PrefetchSpecTest, TheListIsCommaSeparatedAndNamesEachSnapshotOnce) {
  const auto specs = parse_prefetch_list("acme/a:*.json, datasets/acme/b@v1 ,, acme/a@v2");
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].key(), "model/acme/a@main");
  EXPECT_EQ(specs[1].key(), "dataset/acme/b@v1");
  EXPECT_EQ(specs[2].key(), "model/acme/a@v2");
  EXPECT_TRUE(parse_prefetch_list("").empty());
  try {
    parse_prefetch_list("acme/a:*.json,acme/a@main:*.bin");
    ADD_FAILURE() << "the same snapshot twice was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model/acme/a@main is listed twice"), std::string::npos) << e.what();
  }
  ConfigSources sources;
  sources.flags["prefetch"] = "acme/a:";
  EXPECT_THROW(load_config(sources), ConfigError);
}

// ---- the patterns -----------------------------------------------------------------------------------

TEST(PrefetchPatternsTest, GlobsMatchAsPythonsFnmatch) {
  // Each case checked against Python 3.11's fnmatch.fnmatchcase (what huggingface_hub calls on Linux).
  struct Case {
    const char* pattern;
    const char* path;
    bool matches;
  };
  for (const Case& c : {Case{"*.safetensors", "model.safetensors", true},
                        Case{"*.safetensors", "sub/dir/model.safetensors", true},  // `*` crosses folders
                        Case{"config.json", "sub/config.json", false},             // the whole path
                        Case{"*/config.json", "config.json", false},
                        Case{"?odel.bin", "model.bin", true},
                        Case{"?odel.bin", "mmodel.bin", false},
                        Case{"[mn]odel.bin", "model.bin", true},
                        Case{"[!m]odel.bin", "model.bin", false},
                        Case{"[a-c]x", "bx", true},
                        Case{"[z-a]x", "bx", false},  // a reversed range holds nothing
                        Case{"[!z-a]x", "bx", true},
                        Case{"[]]x", "]x", true},
                        Case{"[!]]x", "]x", false},
                        Case{"[abc", "[abc", true},  // no `]`: the `[` is itself
                        Case{"[abc", "a", false},
                        Case{"[a-]x", "-x", true},
                        Case{"tok*.json", "tokenizer_config.json", true},
                        Case{"na?ve.txt", "na\xc3\xafve.txt", true},  // `?` is one character, not one byte
                        Case{"MODEL.BIN", "model.bin", false},        // case counts
                        Case{"a\\b", "a\\b", true},                   // no escapes
                        Case{"*a*b*c", "xaybzc", true},
                        Case{"*a*b*c", "xaybzcd", false}}) {
    EXPECT_EQ(glob_match(c.pattern, c.path), c.matches) << c.pattern << " ~ " << c.path;
  }
}

TEST(PrefetchPatternsTest, NoPatternsWantEverythingAndAFolderPatternItsFiles) {
  EXPECT_TRUE(wanted("anything/at/all.bin", {}));
  const std::vector<std::string> patterns{"tokenizer/", "*.json"};
  EXPECT_TRUE(wanted("tokenizer/vocab.txt", patterns));
  EXPECT_TRUE(wanted("tokenizer/deep/merges.txt", patterns));
  EXPECT_TRUE(wanted("config.json", patterns));
  EXPECT_FALSE(wanted("tokenizer", patterns));
  EXPECT_FALSE(wanted("model.safetensors", patterns));
}

// ---- the prefetcher ---------------------------------------------------------------------------------

const FakeHub::File kConfig2{R"({"model_type": "tiny", "version": 2})", false, std::nullopt};
const FakeHub::File kAdapter{std::string(100 * 1024, 'a'), true, std::nullopt};

// The operator's rules as a test sets them: one repo's answer, the rest allowed.
class OneRule final : public RepoPolicy {
 public:
  OneRule(std::string repo, RepoAccess access) : repo_(std::move(repo)), access_(access) {}
  RepoDecision decide(const RepoId& repo) const override {
    if (repo.name != repo_) return {};
    return RepoDecision{access_, std::nullopt, "acme/*"};
  }

 private:
  std::string repo_;
  RepoAccess access_;
};

class PrefetcherTest : public HubFixture {
 protected:
  void SetUp() override {
    HubFixture::SetUp();
    // acme/moving: main at kCommit1; kCommit2 changes the config and adds an adapter.
    auto moving = repo_with(FakeHub::Access::open, {{"config.json", kConfig}, {"model.bin", kWeights}});
    moving.snapshots[kCommit2] = {{"config.json", kConfig2}, {"model.bin", kWeights}, {"adapter.bin", kAdapter}};
    moving.branches["v1"] = kCommit1;
    hub_api_.put("acme/moving", std::move(moving));
    hub_api_.put("acme/gated", repo_with(FakeHub::Access::gated, {{"model.bin", kWeights}}));
  }
  void TearDown() override {
    prefetcher_.reset();
    HubFixture::TearDown();
  }
  // A prefetcher (again, as after a restart) under the repo rules `policy` (none: every repo allowed).
  Prefetcher& start(const RepoPolicy* policy = nullptr) {
    hub_->set_policy(policy);
    prefetcher_ = std::make_unique<Prefetcher>(Prefetcher::Parts{config_, *index_, *hub_, [this] { ++wakes_; }});
    return *prefetcher_;
  }
  bool held(const std::string& repo, const FakeHub::File& file) {
    return hub::stored_for(*index_, RepoId{RepoType::model, repo}, FakeHub::etag_of(file));
  }
  bool pinned(const std::string& repo, const std::string& commit) {
    const auto all = index_->pinned();
    return std::find(all.begin(), all.end(), std::pair{RepoId{RepoType::model, repo}, commit}) != all.end();
  }
  Entry entry(const std::string& key) {
    for (auto& e : prefetcher_->entries())
      if (e.spec.key() == key) return e;
    ADD_FAILURE() << key << " is not listed";
    return {};
  }
  std::pair<unsigned, Json> ask(const std::string& method, const std::string& action, const Json& body = {}) {
    auto [status, text] = prefetcher_->answer(method, action, body.is_null() ? "" : body.dump());
    return {status, Json::parse(text)};
  }
  std::string metrics() {
    std::string out;
    prefetcher_->render_metrics(out);
    return out;
  }

  std::unique_ptr<Prefetcher> prefetcher_;
  int wakes_ = 0;
};

TEST_F(PrefetcherTest, AConfiguredEntryFetchesTheFilesItsPatternsWantAndPinsTheCommit) {
  config_.prefetch = parse_prefetch_list("acme/open:*.json");
  auto& prefetcher = start();
  prefetcher.sync();
  EXPECT_TRUE(held("acme/open", kConfig));
  EXPECT_FALSE(held("acme/open", kWeights)) << "a file no pattern wants was fetched";
  EXPECT_EQ(hub_api_.count("/model.bin"), 0u);
  EXPECT_TRUE(pinned("acme/open", kCommit1));
  const auto e = entry("model/acme/open@main");
  EXPECT_TRUE(e.configured);
  EXPECT_EQ(e.status.commit, kCommit1);
  EXPECT_EQ(e.status.files_wanted, 1u);
  EXPECT_EQ(e.status.files_held, 1u);
  EXPECT_EQ(e.status.bytes_held, kConfig.bytes.size());
  EXPECT_TRUE(e.status.current()) << e.status.error;
  // Listed at its commit like a client's download, so the pin keeps it.
  EXPECT_TRUE(index_->get_file(RepoId{RepoType::model, "acme/open"}, kCommit1, "config.json"));
  const auto text = metrics();
  EXPECT_NE(text.find("inferllama_prefetch_entries 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("inferllama_prefetch_entries_current 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("inferllama_prefetch_files_held 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("inferllama_prefetch_fetched_files_total 1\n"), std::string::npos) << text;

  // The next run finds everything held: the Hub is asked the revision and the tree (kept), no file.
  const auto heads = hub_api_.count("HEAD ");
  prefetcher.sync();
  EXPECT_EQ(hub_api_.count("HEAD "), heads);
  EXPECT_EQ(hub_api_.count("/revision/main"), 2u) << "each run asks the Hub what the branch names now";
}

TEST_F(PrefetcherTest, AMovedBranchIsFetchedAtTheNextRunAndTheOldCommitUnpinnedOnceTheNewIsComplete) {
  config_.prefetch = parse_prefetch_list("acme/moving");
  auto& prefetcher = start();
  prefetcher.sync();
  EXPECT_TRUE(held("acme/moving", kWeights));
  EXPECT_TRUE(pinned("acme/moving", kCommit1));

  hub_api_.move_branch("acme/moving", "main", kCommit2);
  prefetcher.sync();  // within ref_ttl: the prefetch asks the Hub, not the node's memo of the branch
  const auto e = entry("model/acme/moving@main");
  EXPECT_EQ(e.status.commit, kCommit2);
  EXPECT_EQ(e.status.complete_commit, kCommit2);
  EXPECT_EQ(e.status.files_held, 3u);
  EXPECT_TRUE(held("acme/moving", kConfig2));
  EXPECT_TRUE(held("acme/moving", kAdapter));
  EXPECT_TRUE(pinned("acme/moving", kCommit2));
  EXPECT_FALSE(pinned("acme/moving", kCommit1));
  EXPECT_EQ(e.status.pins, std::vector<std::string>{kCommit2});
  // The branch remembers where it was: eviction takes what only kCommit1 holds first.
  const auto ref = index_->get_ref(RepoId{RepoType::model, "acme/moving"}, "main");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->commit, kCommit2);
  EXPECT_EQ(ref->before, std::vector<std::string>{kCommit1});
  // And clients see the new commit at once: the prefetch's answer is the node's memo now.
  EXPECT_EQ(answered("acme/moving", "main", "config.json").commit, kCommit2);
}

TEST_F(PrefetcherTest, EntriesAddedAtRunTimeSurviveARestartAndRemovingOneUnpinsItsCommit) {
  config_.prefetch = parse_prefetch_list("acme/open:*.json");
  start();
  auto [status, added] = ask("POST", "prefetch/add", Json{{"repo", "acme/moving"}, {"include", {"*.bin"}}});
  ASSERT_EQ(status, 200u) << added.dump();
  EXPECT_TRUE(added.value("changed", false));
  EXPECT_EQ(wakes_, 1) << "an added entry is fetched at once";
  EXPECT_EQ(ask("POST", "prefetch/add", Json{{"repo", "acme/moving"}, {"include", {"*.bin"}}}).second["changed"],
            false);
  EXPECT_EQ(wakes_, 1);

  start();  // a restart: the entry comes back from the index
  prefetcher_->sync();
  EXPECT_TRUE(held("acme/moving", kWeights));
  EXPECT_EQ(hub_api_.count("/acme/moving/resolve/" + kCommit1 + "/config.json"), 0u) << "not wanted, not fetched";
  EXPECT_TRUE(pinned("acme/moving", kCommit1));
  auto [listed, list] = ask("GET", "prefetch");
  ASSERT_EQ(listed, 200u);
  ASSERT_EQ(list["entries"].size(), 2u);
  EXPECT_EQ(list["entries"][0]["source"], "config");
  EXPECT_EQ(list["entries"][1]["source"], "added");
  EXPECT_EQ(list["entries"][1]["repo"], "acme/moving");
  EXPECT_EQ(list["entries"][1]["files_held"], 1);
  EXPECT_EQ(list["entries"][1]["current"], true);

  // A configured entry is the setting's to remove.
  auto [refused, why] = ask("POST", "prefetch/remove", Json{{"repo", "acme/open"}});
  EXPECT_EQ(refused, 409u);
  EXPECT_NE(why["error"].get<std::string>().find("prefetch setting"), std::string::npos);
  EXPECT_EQ(ask("POST", "prefetch/add", Json{{"repo", "acme/open"}}).first, 409u);

  auto [removed, answer] = ask("POST", "prefetch/remove", Json{{"repo", "acme/moving"}});
  ASSERT_EQ(removed, 200u) << answer.dump();
  EXPECT_EQ(answer["unpinned"], Json::array({kCommit1}));
  EXPECT_FALSE(pinned("acme/moving", kCommit1));
  EXPECT_EQ(ask("POST", "prefetch/remove", Json{{"repo", "acme/moving"}}).first, 404u);
  start();
  EXPECT_EQ(prefetcher_->entries().size(), 1u);
}

TEST_F(PrefetcherTest, AddRefusesWhatTheSettingWouldRefuse) {
  start();
  for (const Json& bad :
       {Json{{"repo", "not a repo"}}, Json{{"repo", "acme/x"}, {"type", "bucket"}},
        Json{{"repo", "acme/x"}, {"include", "*.json"}}, Json{{"repo", "acme/x"}, {"include", {"a,b"}}},
        Json{{"repo", "acme/x"}, {"include", {""}}}, Json{{"repo", "acme/x"}, {"revision", 3}},
        Json{{"repo", "acme/x"}, {"include", Json(std::vector<std::string>(33, "*.json"))}}}) {
    auto [status, answer] = ask("POST", "prefetch/add", bad);
    EXPECT_EQ(status, 400u) << bad.dump() << " " << answer.dump();
  }
  EXPECT_EQ(ask("GET", "prefetch/add").first, 405u);
  EXPECT_EQ(ask("POST", "prefetch").first, 405u);
  EXPECT_EQ(wakes_, 0);
  EXPECT_TRUE(prefetcher_->entries().empty());
}

TEST_F(PrefetcherTest, ASnapshotPinnedByHandStaysPinnedAndTwoEntriesShareAPin) {
  start();
  const RepoId moving{RepoType::model, "acme/moving"};
  ASSERT_EQ(ask("POST", "prefetch/add", Json{{"repo", "acme/moving"}, {"include", {"*.json"}}}).first, 200u);
  ASSERT_EQ(ask("POST", "prefetch/add", Json{{"repo", "acme/moving"}, {"revision", "v1"}}).first, 200u);
  prefetcher_->sync();
  EXPECT_TRUE(pinned("acme/moving", kCommit1));
  // main and v1 name one commit: removing one leaves it pinned for the other.
  EXPECT_EQ(ask("POST", "prefetch/remove", Json{{"repo", "acme/moving"}}).second["unpinned"], Json::array());
  EXPECT_TRUE(pinned("acme/moving", kCommit1));
  EXPECT_EQ(ask("POST", "prefetch/remove", Json{{"repo", "acme/moving"}, {"revision", "v1"}}).second["unpinned"],
            Json::array({kCommit1}));
  EXPECT_FALSE(pinned("acme/moving", kCommit1));

  // Pinned by the operator before the prefetch came: theirs, whatever the prefetch does.
  index_->set_pinned(moving, kCommit1, true);
  ASSERT_EQ(ask("POST", "prefetch/add", Json{{"repo", "acme/moving"}}).first, 200u);
  prefetcher_->sync();
  EXPECT_TRUE(entry("model/acme/moving@main").status.pins.empty());
  EXPECT_EQ(ask("POST", "prefetch/remove", Json{{"repo", "acme/moving"}}).second["unpinned"], Json::array());
  EXPECT_TRUE(pinned("acme/moving", kCommit1));
}

TEST_F(PrefetcherTest, RepoRulesAndGatedReposAreSkippedWithTheirReason) {
  config_.prefetch = parse_prefetch_list("acme/open,acme/gated");
  const OneRule deny("acme/open", RepoAccess::deny);
  start(&deny).sync();
  auto denied = entry("model/acme/open@main").status;
  EXPECT_NE(denied.error.find("refused by this node's repo rule \"acme/*\""), std::string::npos) << denied.error;
  EXPECT_FALSE(held("acme/open", kConfig));
  auto gated = entry("model/acme/gated@main").status;
  EXPECT_NE(gated.error.find("gated, private or missing"), std::string::npos) << gated.error;
  EXPECT_EQ(hub_api_.count("HEAD "), 0u) << "nothing was fetched for either";
  EXPECT_TRUE(index_->pinned().empty());
  EXPECT_FALSE(denied.current());
  EXPECT_NE(metrics().find("inferllama_prefetch_failures_total 2\n"), std::string::npos) << metrics();

  const OneRule pass("acme/open", RepoAccess::pass);
  start(&pass).sync();
  denied = entry("model/acme/open@main").status;
  EXPECT_NE(denied.error.find("passes through this node without being kept"), std::string::npos) << denied.error;

  // Allowed: the same entry fetches, and a later deny rule undoes its pin.
  start().sync();
  EXPECT_TRUE(held("acme/open", kConfig));
  EXPECT_TRUE(pinned("acme/open", kCommit1));
  start(&deny).sync();
  EXPECT_FALSE(pinned("acme/open", kCommit1));
}

TEST_F(PrefetcherTest, EntriesNoLongerConfiguredAreForgottenWithTheirPins) {
  config_.prefetch = parse_prefetch_list("acme/open:config.json");
  start().sync();
  EXPECT_TRUE(pinned("acme/open", kCommit1));
  config_.prefetch.clear();  // the setting changed across a restart
  start().sync();
  EXPECT_FALSE(pinned("acme/open", kCommit1));
  EXPECT_TRUE(PrefetchTable(index_->records()).statuses().empty());
  EXPECT_TRUE(held("acme/open", kConfig)) << "the files stay cached, evictable again";
}

TEST_F(PrefetcherTest, WhileTheHubIsDownTheEntryKeepsItsCommitAndSaysWhy) {
  config_.prefetch = parse_prefetch_list("acme/open:*.json");
  start().sync();
  hub_api_.set_down(true);
  prefetcher_->sync();
  const auto e = entry("model/acme/open@main");
  EXPECT_EQ(e.status.commit, kCommit1);
  EXPECT_EQ(e.status.files_held, 1u);
  EXPECT_FALSE(e.status.error.empty());
  EXPECT_TRUE(pinned("acme/open", kCommit1));
}

}  // namespace
}  // namespace inferllama::prefetch
