#include "policy/repo_rules.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hub_fixture.hpp"

namespace inferllama::policy {
namespace {

using testing::kCommit1;
using testing::kConfig;
using testing::kWeights;

RepoId model(const std::string& name) {
  return RepoId{RepoType::model, name};
}
RepoId dataset(const std::string& name) {
  return RepoId{RepoType::dataset, name};
}

// The error parse_rules throws for `text`, or "" when it parses.
std::string error_of(std::string_view text) {
  try {
    parse_rules(text, "repo_rules");
  } catch (const RuleError& e) {
    return e.what();
  }
  return "";
}

TEST(GlobMatch, StarStaysWithinASegmentDoubleStarCrossesThemAStarAloneMatchesEverything) {
  EXPECT_TRUE(glob_match("acme/*", "acme/tiny-model"));
  EXPECT_FALSE(glob_match("acme/*", "acme"));
  EXPECT_FALSE(glob_match("acme/*", "other/tiny-model"));
  EXPECT_TRUE(glob_match("*/llama-*", "meta/llama-3"));
  EXPECT_FALSE(glob_match("*/llama-*", "meta/code-llama-3"));
  EXPECT_TRUE(glob_match("*", "acme/tiny-model"));
  EXPECT_TRUE(glob_match("*", "gpt2"));
  EXPECT_FALSE(glob_match("*/*", "gpt2")) << "a one-segment name has no '/'";
  EXPECT_TRUE(glob_match("gpt?", "gpt2"));
  EXPECT_FALSE(glob_match("acme?x", "acme/x")) << "? matches no '/'";
  EXPECT_TRUE(glob_match("**", "acme/tiny-model"));
  EXPECT_TRUE(glob_match("a**l", "acme/tiny-model"));
  EXPECT_FALSE(glob_match("a*l", "acme/tiny-model"));
  EXPECT_TRUE(glob_match("acme/tiny-model", "acme/tiny-model"));
  EXPECT_FALSE(glob_match("acme/tiny", "acme/tiny-model")) << "a pattern matches the whole name";
}

TEST(GlobMatch, LettersMatchWhateverTheirCase) {
  EXPECT_TRUE(glob_match("Acme/*", "acme/Tiny"));
  EXPECT_TRUE(glob_match("acme/tiny", "ACME/TINY"));
}

TEST(GlobMatch, ManyStarsOnALongNameStayCheap) {
  const std::string name = std::string(96, 'a') + "/" + std::string(96, 'a');
  // A backtracking matcher takes exponential time here; rows of reachable positions take pattern x name steps.
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*b/*", name));
  EXPECT_TRUE(glob_match("*a*a*a*a*a*a*a*a*a*/**a", name));
}

TEST(ParseRules, OneALineOrCommaSeparatedWithComments) {
  const auto rules = parse_rules(
      "# an allowlist\n"
      "allow models:acme/*   scan=warn, pass datasets:*\n"
      "\n"
      "  DENY   *  # the rest\n",
      "repo_rules_file /etc/rules");
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].access, RepoAccess::allow);
  EXPECT_EQ(rules[0].type, RepoType::model);
  EXPECT_EQ(rules[0].pattern, "acme/*");
  EXPECT_EQ(rules[0].scan, ScanAction::warn);
  EXPECT_EQ(rules[0].text, "allow models:acme/* scan=warn") << "blanks collapsed";
  EXPECT_EQ(rules[0].source, "repo_rules_file /etc/rules line 2");
  EXPECT_EQ(rules[1].access, RepoAccess::pass);
  EXPECT_EQ(rules[1].type, RepoType::dataset);
  EXPECT_FALSE(rules[1].scan);
  EXPECT_EQ(rules[2].access, RepoAccess::deny);
  EXPECT_FALSE(rules[2].type) << "no TYPE: every type";
  EXPECT_EQ(rules[2].pattern, "*");
  EXPECT_EQ(rules[2].source, "repo_rules_file /etc/rules line 4");
  EXPECT_TRUE(parse_rules("", "repo_rules").empty());
  EXPECT_TRUE(parse_rules(" , ,\n# nothing\n", "repo_rules").empty());
  for (const char* type : {"model:x", "spaces:x", "*:x"})
    EXPECT_EQ(parse_rules(std::string("deny ") + type, "r").size(), 1u);
}

TEST(ParseRules, AnErrorNamesTheRuleItsLineAndColumnAndWhy) {
  EXPECT_EQ(error_of("allow *\ndeny modles:acme/*"),
            "repo_rules rule 2 (line 2, column 6): unknown repo type \"modles\" (models, datasets, spaces or *): "
            "\"deny modles:acme/*\"");
  EXPECT_EQ(error_of("allow *, block acme/x"),
            "repo_rules rule 2 (line 1, column 10): unknown action \"block\" (allow, deny or pass): \"block acme/x\"");
  EXPECT_NE(error_of("deny").find("rule 1 (line 1, column 5): expected [TYPE:]PATTERN after deny"), std::string::npos);
  EXPECT_NE(error_of("deny models:").find("column 13): the pattern is empty"), std::string::npos);
  EXPECT_NE(error_of("deny acme/x/y").find("column 12): a repo name is owner/name"), std::string::npos);
  EXPECT_NE(error_of("deny acme/x+y").find("column 12): '+' cannot be in a pattern"), std::string::npos);
  EXPECT_NE(error_of("deny acme/*** ").find("*** means nothing more than **"), std::string::npos);
  EXPECT_NE(error_of("allow * scan=maybe").find("column 14): unknown scan action \"maybe\""), std::string::npos);
  EXPECT_NE(error_of("allow * scan=off scan=warn").find("scan= is given twice"), std::string::npos);
  EXPECT_NE(error_of("allow * later").find("column 9): unexpected \"later\""), std::string::npos);
  EXPECT_NE(error_of("deny " + std::string(600, 'a')).find("longer than 512 characters"), std::string::npos);
  EXPECT_NE(error_of("deny a\x01").find("'?' cannot be in a pattern"), std::string::npos)
      << "control characters never shown";
}

TEST(RuleSet, TheFirstMatchingRuleDecidesAndNoMatchAllows) {
  const RuleSet set(
      parse_rules("allow models:acme/tiny-model, deny models:acme/*, pass datasets:* scan=deny,"
                  "deny spaces:**",
                  "repo_rules"));
  EXPECT_EQ(set.decide(model("acme/tiny-model")).access, RepoAccess::allow);
  EXPECT_EQ(set.decide(model("acme/tiny-model")).rule, "allow models:acme/tiny-model");
  const RepoDecision denied = set.decide(model("acme/other"));
  EXPECT_EQ(denied.access, RepoAccess::deny);
  EXPECT_EQ(denied.rule, "deny models:acme/*");
  const RepoDecision passed = set.decide(dataset("acme/other"));
  EXPECT_EQ(passed.access, RepoAccess::pass);
  EXPECT_EQ(passed.scan, ScanAction::deny);
  EXPECT_EQ(set.decide(RepoId{RepoType::space, "x/y"}).access, RepoAccess::deny);
  const RepoDecision none = set.decide(model("other/x"));
  EXPECT_EQ(none.access, RepoAccess::allow);
  EXPECT_TRUE(none.rule.empty()) << "the default, no rule";
  EXPECT_FALSE(none.scan);
}

class RepoRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("repo_rules");
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path write(const std::string& text) {
    std::ofstream(dir_ / "rules", std::ios::binary | std::ios::trunc) << text;
    return dir_ / "rules";
  }
  std::filesystem::path dir_;
};

TEST_F(RepoRulesTest, TheConfigurationsRulesComeFirstThenTheFilesAndAReloadReadsTheFileAgain) {
  RepoRules rules("allow models:acme/kept", write("deny models:acme/*\n"));
  EXPECT_EQ(rules.decide(model("acme/kept")).access, RepoAccess::allow);
  EXPECT_EQ(rules.decide(model("acme/x")).access, RepoAccess::deny);
  write("pass models:acme/*\n");
  EXPECT_EQ(rules.decide(model("acme/x")).access, RepoAccess::deny) << "nothing changes before the reload";
  const auto reloaded = rules.reload();
  EXPECT_TRUE(reloaded.ok) << reloaded.error;
  EXPECT_EQ(rules.decide(model("acme/x")).access, RepoAccess::pass);
  EXPECT_EQ(rules.current()->rules().size(), 2u);
  const auto shown = nlohmann::json::parse(rules.to_json());
  EXPECT_EQ(shown["rules"][1]["rule"], "pass models:acme/*");
  EXPECT_EQ(shown["rules"][1]["source"], "repo_rules_file " + (dir_ / "rules").string() + " line 1");
  EXPECT_EQ(shown["reloads"]["ok"], 1);
}

TEST_F(RepoRulesTest, AReloadWithABadRuleKeepsTheRulesInForceAndSaysWhy) {
  RepoRules rules("", write("deny models:acme/*\n"));
  write("deny models:acme/*\nallow modls:x\n");
  const auto reloaded = rules.reload();
  EXPECT_FALSE(reloaded.ok);
  EXPECT_NE(reloaded.error.find("line 2, column 7): unknown repo type \"modls\""), std::string::npos) << reloaded.error;
  EXPECT_EQ(rules.decide(model("acme/x")).access, RepoAccess::deny);
  EXPECT_EQ(reloaded.rules->rules().size(), 1u);
  std::filesystem::remove(dir_ / "rules");
  EXPECT_NE(rules.reload().error.find("cannot read repo_rules_file"), std::string::npos);
  const auto shown = nlohmann::json::parse(rules.to_json());
  EXPECT_EQ(shown["reloads"]["failed"], 2);
  EXPECT_NE(shown["last_reload_error"].get<std::string>().find("cannot read"), std::string::npos);
  std::string metrics;
  rules.render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_repo_rules 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("inferllama_repo_rules_reloads_total{result=\"failed\"} 2\n"), std::string::npos);
}

TEST_F(RepoRulesTest, ABadRuleOrAMissingFileAtStartIsAnError) {
  EXPECT_THROW(RepoRules("deny", ""), RuleError);
  EXPECT_THROW(RepoRules("", dir_ / "missing"), RuleError);
  EXPECT_TRUE(RepoRules("", "").current()->empty());
}

// The HubService asks the rules before anything goes upstream.
class RepoRulesHubTest : public testing::HubFixture {
 protected:
  void use(const std::string& text) {
    rules_ = std::make_unique<RepoRules>(text, "");
    hub_->set_policy(rules_.get());
  }
  std::unique_ptr<RepoRules> rules_;
};

TEST_F(RepoRulesHubTest, ADeniedRepoIsTheHubsRepoNotFoundNamingTheRuleOnEveryRouteAndNeverAskedUpstream) {
  use("deny models:acme/*");
  const RepoId repo = model("acme/open");
  const hub::Reply file = refused("acme/open", "main", "config.json");
  EXPECT_EQ(file.status, 404u);
  EXPECT_EQ(testing::header(file, "X-Error-Code").value_or(""), "RepoNotFound");
  EXPECT_NE(file.body.find("deny models:acme/*"), std::string::npos) << file.body;
  for (const hub::Reply& reply :
       {hub_->info(repo, std::nullopt, "", {}), hub_->tree(repo, "main", "", "recursive=true", {}, "http://node"),
        hub_->paths_info(repo, "main", "", "paths=config.json", {}), hub_->refs(repo, "", {}),
        hub_->forward("GET", "/api/models/acme/open/discussions", {}, "", {}, repo, false, "http://node")}) {
    EXPECT_EQ(reply.status, 404u);
    EXPECT_EQ(testing::header(reply, "X-Error-Code").value_or(""), "RepoNotFound");
  }
  EXPECT_TRUE(std::holds_alternative<hub::Reply>(hub_->commit_of(repo, "main")));
  EXPECT_TRUE(std::holds_alternative<hub::Reply>(hub_->snapshot_files(repo, kCommit1)));
  EXPECT_TRUE(std::holds_alternative<hub::Reply>(hub_->pin(repo, "main", true)));
  EXPECT_EQ(hub_api_.calls(), 0u) << "nothing of a denied repo is asked upstream";
  std::string metrics;
  hub_->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_repo_rule_refusals_total{rule=\"deny models:acme/*\"} 9\n"), std::string::npos)
      << metrics;
}

TEST_F(RepoRulesHubTest, AStoredFileOfARepoThatBecomesDeniedIsNotServedAnyMore) {
  use("");
  answered("acme/open", "main", "config.json");
  answered("acme/open", "main", "config.json");  // a hit: remembered for the fast path
  ASSERT_TRUE(hub_->resolve_fast(model("acme/open"), "main", "config.json"));
  use("deny acme/open");
  EXPECT_FALSE(hub_->resolve_fast(model("acme/open"), "main", "config.json"));
  EXPECT_EQ(refused("acme/open", "main", "config.json").status, 404u);
  use("allow acme/open, deny *");
  EXPECT_TRUE(hub_->resolve_fast(model("acme/open"), "main", "config.json")) << "allowed again: served from the store";
}

// Reads a passed-through stream to its end (or its failure).
std::string read_all(hub::PassStream& stream) {
  struct Wake : cache::ProgressListener {
    std::mutex mutex;
    std::condition_variable cv;
    void on_progress() override { cv.notify_all(); }
  };
  auto wake = std::make_shared<Wake>();
  stream.subscribe(wake);
  std::string out;
  for (;;) {
    const auto bytes = stream.readable();
    if (!bytes.empty()) {
      out.append(bytes.data(), bytes.size());
      stream.consume(bytes.size());
      continue;
    }
    if (stream.state() != hub::PassStream::State::running) {
      if (stream.readable().empty()) return out;
      continue;
    }
    std::unique_lock lock(wake->mutex);
    wake->cv.wait_for(lock, std::chrono::milliseconds(20));
  }
}

TEST_F(RepoRulesHubTest, APassRepoStreamsItsFilesFromTheUpstreamAndStoresNothing) {
  use("pass models:acme/open");
  auto result = resolve("acme/open", "main", "model.bin");
  ASSERT_TRUE(std::holds_alternative<hub::FileAnswer>(result));
  const auto& answer = std::get<hub::FileAnswer>(result);
  ASSERT_TRUE(answer.pass);
  EXPECT_FALSE(answer.download);
  EXPECT_FALSE(answer.blob);
  auto whole = hub_->passes().start(*answer.pass, 0, answer.file.size);
  ASSERT_TRUE(whole);
  EXPECT_EQ(read_all(*whole), kWeights.bytes);
  EXPECT_EQ(whole->state(), hub::PassStream::State::complete) << whole->error();
  auto part = hub_->passes().start(*answer.pass, 10, 1000);
  ASSERT_TRUE(part);
  EXPECT_EQ(read_all(*part), kWeights.bytes.substr(10, 990));
  EXPECT_FALSE(index_->get_blob(answer.file.etag)) << "nothing is stored";
  EXPECT_FALSE(index_->get_file(model("acme/open"), kCommit1, "model.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "staging" / answer.file.etag));
  // A second read asks the upstream again: nothing was kept to answer it from.
  const std::size_t ranges = hub_api_.count("RANGE ");
  auto again = std::get<hub::FileAnswer>(resolve("acme/open", "main", "model.bin"));
  ASSERT_TRUE(again.pass);
  EXPECT_EQ(read_all(*hub_->passes().start(*again.pass, 0, again.file.size)), kWeights.bytes);
  EXPECT_GT(hub_api_.count("RANGE "), ranges);
  EXPECT_FALSE(hub_->resolve_fast(model("acme/open"), "main", "model.bin"));
  // Nothing of a pass repo is kept on purpose either.
  auto pinned = hub_->pin(model("acme/open"), "main", true);
  ASSERT_TRUE(std::holds_alternative<hub::Reply>(pinned));
  EXPECT_EQ(std::get<hub::Reply>(pinned).status, 403u);
}

TEST_F(RepoRulesHubTest, APassedThroughReadWhoseBytesDoNotMatchTheEtagFailsAndHoldsBackItsLastByte) {
  use("pass *");
  auto answer = std::get<hub::FileAnswer>(resolve("acme/open", "main", "config.json"));
  ASSERT_TRUE(answer.pass);
  cache::BlobSource lying = *answer.pass;
  lying.etag = std::string(40, '0');
  auto stream = hub_->passes().start(lying, 0, answer.file.size);
  ASSERT_TRUE(stream);
  const std::string got = read_all(*stream);
  EXPECT_EQ(stream->state(), hub::PassStream::State::failed);
  EXPECT_EQ(got, kConfig.bytes.substr(0, kConfig.bytes.size() - 1)) << "never a complete-looking body";
}

}  // namespace
}  // namespace inferllama::policy
