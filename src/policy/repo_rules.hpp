// The operator's repo rules: which Hub repos the node proxies and keeps (allow), refuses like missing ones
// (deny), or streams without keeping anything (pass). Parsed from the `repo_rules` key and the
// `repo_rules_file`, matched first rule first, swapped whole on a reload (SIGHUP, the admin API).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/repo.hpp"
#include "inferllama/repo_policy.hpp"

namespace inferllama::policy {

// A rule that cannot be read: the message names where (source, rule number, line, column), why, and the rule.
class RuleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One rule: `ACTION [TYPE:]PATTERN [scan=off|warn|deny]`.
struct RepoRule {
  RepoAccess access = RepoAccess::allow;
  std::optional<RepoType> type;  // nullopt: every type (`*`, or no TYPE given)
  std::string pattern;           // a glob on the repo's name, "owner/name" (see glob_match)
  std::optional<ScanAction> scan;
  std::string text;    // as the operator wrote it, blanks collapsed: what messages and metrics name
  std::string source;  // "repo_rules" or the file, with the line: where an operator finds it
};

// Whether the repo name `name` ("owner/name", or "name") matches `pattern`, letters compared without regard
// to case (the Hub finds a repo however its name is cased): `*` matches any run of characters but '/',
// `**` any run at all, `?` one character but '/'; the pattern "*" alone matches every name. Time bounded by
// the pattern's length times the name's, however many stars.
bool glob_match(std::string_view pattern, std::string_view name);

// Rules in the order they are matched; the first that matches decides, none matching allows.
class RuleSet {
 public:
  // The most rules a set holds, and the longest rule: operators write rules, clients never do.
  static constexpr std::size_t kMaxRules = 10000;
  static constexpr std::size_t kMaxRuleLength = 512;

  RuleSet() = default;
  explicit RuleSet(std::vector<RepoRule> rules) : rules_(std::move(rules)) {}

  RepoDecision decide(const RepoId& repo) const;
  const std::vector<RepoRule>& rules() const { return rules_; }
  bool empty() const { return rules_.empty(); }

 private:
  std::vector<RepoRule> rules_;
};

// Parses rules, one a line or comma-separated, `#` starting a comment to the end of its line. `source` names
// the text in errors and in each rule ("repo_rules", "repo_rules_file /etc/inferllama/rules"). Throws RuleError.
std::vector<RepoRule> parse_rules(std::string_view text, std::string_view source);

// The rules in force: those of the configuration's `repo_rules`, then those of `repo_rules_file`, read at
// start and again at each reload(). decide() is what the request path asks; a reload swaps the whole set at
// once, and one that fails keeps the set in force.
class RepoRules final : public RepoPolicy {
 public:
  // Throws RuleError when a rule is wrong or the file cannot be read.
  RepoRules(std::string config_rules, std::filesystem::path file);

  RepoDecision decide(const RepoId& repo) const override;
  std::shared_ptr<const RuleSet> current() const { return rules_.load(); }

  struct Reloaded {
    bool ok = false;
    std::string error;                     // why the set in force was kept
    std::shared_ptr<const RuleSet> rules;  // in force after the reload (the old ones when it failed)
  };
  // Reads the rules again (the file; the configuration's part does not change while the node runs). Blocking
  // (reads a file); one at a time.
  Reloaded reload();

  // The set in force, where it comes from and how the last reload went, as the admin API shows it.
  std::string to_json() const;
  // Prometheus families: rules in force, reloads by result, when the set in force was loaded.
  void render_metrics(std::string& out) const;

 private:
  std::vector<RepoRule> load() const;
  void store(std::shared_ptr<const RuleSet> rules);

  const std::string config_rules_;
  const std::filesystem::path file_;
  std::atomic<std::shared_ptr<const RuleSet>> rules_;
  // Which set is in force, unique across every RepoRules of the process: decide() keeps the set per thread
  // and looks at this shared, rarely written counter instead of the shared pointer's reference count, which
  // every I/O thread's every request would otherwise write.
  std::atomic<std::uint64_t> generation_{0};
  std::mutex reload_mutex_;  // one reload at a time
  std::atomic<std::uint64_t> reloads_ok_{0};
  std::atomic<std::uint64_t> reloads_failed_{0};
  std::atomic<std::int64_t> loaded_at_ms_{0};  // the set in force, Unix time
  mutable std::mutex error_mutex_;
  std::string last_error_;  // of the last reload, "" when it succeeded
};

// The message a repo refused by `decision` is answered with (404 RepoNotFound, as the Hub answers a missing one).
std::string refusal_message(const RepoDecision& decision);
// The name of an access or scan action, as rules write it.
std::string_view access_name(RepoAccess access);
std::string_view scan_name(ScanAction scan);

}  // namespace inferllama::policy
