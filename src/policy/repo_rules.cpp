#include "policy/repo_rules.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "inferllama/metrics.hpp"

namespace inferllama::policy {
namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

bool is_pattern_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == '/' || c == '*' || c == '?';
}

// Text as an error message shows it: a control character never reaches a terminal or a log as it is.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  return out;
}

// glob_match over `reach`/`next`, two rows of name.size() + 1 flags.
bool match_rows(std::string_view pattern, std::string_view name, std::uint8_t* reach, std::uint8_t* next) {
  const std::size_t n = name.size();
  std::fill(reach, reach + n + 1, 0);
  reach[0] = 1;  // the empty pattern read so far matches the empty prefix
  for (std::size_t i = 0; i < pattern.size();) {
    const char p = pattern[i];
    if (p == '*' && i + 1 < pattern.size() && pattern[i + 1] == '*') {
      std::uint8_t any = 0;  // some shorter prefix was reached: ** takes the rest, '/' included
      for (std::size_t j = 0; j <= n; ++j) next[j] = any = any | reach[j];
      i += 2;
    } else if (p == '*') {
      std::uint8_t run = 0;  // reached, and no '/' since
      for (std::size_t j = 0; j <= n; ++j) {
        run = reach[j] | (j > 0 && run && name[j - 1] != '/');
        next[j] = run;
      }
      i += 1;
    } else {
      next[0] = 0;
      for (std::size_t j = 1; j <= n; ++j) {
        const char c = name[j - 1];
        next[j] = reach[j - 1] && (p == '?' ? c != '/' : lower(p) == lower(c));
      }
      i += 1;
    }
    std::swap(reach, next);
  }
  return reach[n] != 0;
}

// "models", "datasets", "spaces" as the repo's own segment names them; "*" for a rule of every type.
std::string_view type_name(const std::optional<RepoType>& type) {
  return type ? RepoId{*type, {}}.api_segment() : std::string_view("*");
}

struct Token {
  std::string_view text;
  std::size_t column;  // 1-based, in its line
};

// One rule of a line: `entry` starts at `column` (1-based) of line `line`.
class RuleParser {
 public:
  RuleParser(std::string_view source, std::size_t number, std::size_t line, std::size_t column, std::string_view entry)
      : source_(source), number_(number), line_(line), column_(column), entry_(entry) {}

  RepoRule parse() {
    std::vector<Token> tokens;
    for (std::size_t i = 0; i < entry_.size();) {
      if (is_blank(entry_[i])) {
        ++i;
        continue;
      }
      const std::size_t start = i;
      while (i < entry_.size() && !is_blank(entry_[i])) ++i;
      tokens.push_back({entry_.substr(start, i - start), column_ + start});
    }
    for (const auto& t : tokens) text_ += (text_.empty() ? "" : " ") + std::string(t.text);
    if (text_.size() > RuleSet::kMaxRuleLength)
      fail(column_, "longer than " + std::to_string(RuleSet::kMaxRuleLength) + " characters");

    RepoRule rule;
    rule.text = text_;
    rule.source = std::string(source_) + " line " + std::to_string(line_);
    const std::string action = lowered(tokens[0].text);
    if (action == "allow") {
      rule.access = RepoAccess::allow;
    } else if (action == "deny") {
      rule.access = RepoAccess::deny;
    } else if (action == "pass") {
      rule.access = RepoAccess::pass;
    } else {
      fail(tokens[0].column, "unknown action \"" + shown(tokens[0].text) + "\" (allow, deny or pass)");
    }
    if (tokens.size() < 2) fail(column_ + entry_.size(), "expected [TYPE:]PATTERN after " + action);
    read_target(tokens[1], rule);
    for (std::size_t k = 2; k < tokens.size(); ++k) read_option(tokens[k], rule);
    return rule;
  }

 private:
  [[noreturn]] void fail(std::size_t column, const std::string& why) const {
    throw RuleError(std::string(source_) + " rule " + std::to_string(number_) + " (line " + std::to_string(line_) +
                    ", column " + std::to_string(column) + "): " + why + ": \"" +
                    shown(text_.empty() ? entry_ : text_) + "\"");
  }

  void read_target(const Token& token, RepoRule& rule) const {
    std::string_view pattern = token.text;
    std::size_t column = token.column;
    if (const auto colon = pattern.find(':'); colon != std::string_view::npos) {
      const std::string type = lowered(pattern.substr(0, colon));
      if (type != "*") {
        rule.type = parse_repo_type(type);
        if (!rule.type) fail(column, "unknown repo type \"" + shown(type) + "\" (models, datasets, spaces or *)");
      }
      pattern.remove_prefix(colon + 1);
      column += colon + 1;
    }
    if (pattern.empty()) fail(column, "the pattern is empty (* matches every repo)");
    std::size_t slashes = 0;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
      const char c = pattern[i];
      if (!is_pattern_char(c)) {
        fail(column + i, std::string("'") + shown(std::string_view(&c, 1)) +
                             "' cannot be in a pattern (letters, digits, - _ . / and the wildcards * ** ?)");
      }
      if (c == '/' && ++slashes > 1) fail(column + i, "a repo name is owner/name: one '/' at most");
      if (c == '*' && i + 2 < pattern.size() && pattern[i + 1] == '*' && pattern[i + 2] == '*')
        fail(column + i, "*** means nothing more than **");
    }
    rule.pattern = std::string(pattern);
  }

  void read_option(const Token& token, RepoRule& rule) const {
    const std::string option = lowered(token.text);
    if (!option.starts_with("scan=")) {
      fail(token.column,
           "unexpected \"" + shown(token.text) + "\" (a rule is ACTION [TYPE:]PATTERN [scan=off|warn|deny])");
    }
    if (rule.scan) fail(token.column, "scan= is given twice");
    const std::string value = option.substr(5);
    if (value == "off") {
      rule.scan = ScanAction::off;
    } else if (value == "warn") {
      rule.scan = ScanAction::warn;
    } else if (value == "deny") {
      rule.scan = ScanAction::deny;
    } else {
      fail(token.column + 5, "unknown scan action \"" + shown(value) + "\" (off, warn or deny)");
    }
  }

  std::string_view source_;
  std::size_t number_, line_, column_;
  std::string_view entry_;
  std::string text_;
};

std::string read_rules_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw RuleError("cannot read repo_rules_file " + path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw RuleError("cannot read repo_rules_file " + path.string() + ": " + (err ? std::strerror(err) : "cannot open"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw RuleError("cannot read repo_rules_file " + path.string() + ": read error");
  return std::move(text).str();
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr metrics::FamilySpec kRules{"inferllama_repo_rules", "gauge", "Repo rules in force"};
constexpr metrics::FamilySpec kReloads{"inferllama_repo_rules_reloads_total", "counter",
                                       "Reloads of the repo rules (SIGHUP, the admin API) by result"};
constexpr metrics::FamilySpec kLoaded{"inferllama_repo_rules_loaded_timestamp_seconds", "gauge",
                                      "When the repo rules in force were read"};

}  // namespace

bool glob_match(std::string_view pattern, std::string_view name) {
  if (pattern == "*") return true;
  // Repo names are at most 193 characters: rows on the stack, with a heap fallback for anything longer.
  constexpr std::size_t kOnStack = 256;
  if (name.size() < kOnStack) {
    std::array<std::uint8_t, kOnStack> reach, next;
    return match_rows(pattern, name, reach.data(), next.data());
  }
  std::vector<std::uint8_t> reach(name.size() + 1), next(name.size() + 1);
  return match_rows(pattern, name, reach.data(), next.data());
}

RepoDecision RuleSet::decide(const RepoId& repo) const {
  for (const auto& rule : rules_) {
    if (rule.type && *rule.type != repo.type) continue;
    if (!glob_match(rule.pattern, repo.name)) continue;
    return RepoDecision{rule.access, rule.scan, rule.text};
  }
  return RepoDecision{};
}

std::vector<RepoRule> parse_rules(std::string_view text, std::string_view source) {
  std::vector<RepoRule> rules;
  std::size_t line = 0;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    std::string_view content = text.substr(start, end - start);
    ++line;
    content = content.substr(0, content.find('#'));
    for (std::size_t at = 0; at <= content.size();) {
      const std::size_t comma = std::min(content.find(',', at), content.size());
      const std::string_view entry = content.substr(at, comma - at);
      if (entry.find_first_not_of(" \t\r") != std::string_view::npos) {
        if (rules.size() == RuleSet::kMaxRules) {
          throw RuleError(std::string(source) + " line " + std::to_string(line) + ": more than " +
                          std::to_string(RuleSet::kMaxRules) + " rules");
        }
        rules.push_back(RuleParser(source, rules.size() + 1, line, at + 1, entry).parse());
      }
      at = comma + 1;
    }
    start = end + 1;
  }
  return rules;
}

RepoRules::RepoRules(std::string config_rules, std::filesystem::path file)
    : config_rules_(std::move(config_rules)), file_(std::move(file)) {
  store(std::make_shared<const RuleSet>(load()));
}

void RepoRules::store(std::shared_ptr<const RuleSet> rules) {
  static std::atomic<std::uint64_t> next_generation{1};
  rules_.store(std::move(rules));
  generation_.store(next_generation.fetch_add(1), std::memory_order_release);
  loaded_at_ms_ = now_ms();
}

std::vector<RepoRule> RepoRules::load() const {
  auto rules = parse_rules(config_rules_, "repo_rules");
  if (file_.empty()) return rules;
  auto from_file = parse_rules(read_rules_file(file_), "repo_rules_file " + file_.string());
  if (rules.size() + from_file.size() > RuleSet::kMaxRules)
    throw RuleError("repo_rules and repo_rules_file hold more than " + std::to_string(RuleSet::kMaxRules) + " rules");
  rules.insert(rules.end(), std::make_move_iterator(from_file.begin()), std::make_move_iterator(from_file.end()));
  return rules;
}

RepoDecision RepoRules::decide(const RepoId& repo) const {
  struct Cached {
    std::uint64_t generation = 0;
    std::shared_ptr<const RuleSet> rules;
  };
  thread_local Cached cached;
  // Generations are unique across instances: an equal one is this instance's set in force.
  const std::uint64_t generation = generation_.load(std::memory_order_acquire);
  if (cached.generation != generation) cached = Cached{generation, rules_.load()};
  return cached.rules->decide(repo);
}

RepoRules::Reloaded RepoRules::reload() {
  std::lock_guard lock(reload_mutex_);
  Reloaded outcome;
  try {
    auto fresh = std::make_shared<const RuleSet>(load());
    store(fresh);
    ++reloads_ok_;
    outcome.ok = true;
    outcome.rules = std::move(fresh);
    std::lock_guard error_lock(error_mutex_);
    last_error_.clear();
  } catch (const RuleError& e) {
    ++reloads_failed_;
    outcome.error = e.what();
    outcome.rules = rules_.load();
    std::lock_guard error_lock(error_mutex_);
    last_error_ = e.what();
  }
  if (outcome.ok) {
    spdlog::info("repo rules reloaded: {} rules in force", outcome.rules->rules().size());
  } else {
    spdlog::error("repo rules not reloaded, the {} rules in force stay: {}", outcome.rules->rules().size(),
                  outcome.error);
  }
  return outcome;
}

std::string RepoRules::to_json() const {
  using nlohmann::json;
  const auto set = rules_.load();
  json rules = json::array();
  for (std::size_t i = 0; i < set->rules().size(); ++i) {
    const auto& rule = set->rules()[i];
    rules.push_back({{"index", i + 1},
                     {"rule", rule.text},
                     {"action", access_name(rule.access)},
                     {"type", type_name(rule.type)},
                     {"pattern", rule.pattern},
                     {"scan", rule.scan ? json(scan_name(*rule.scan)) : json(nullptr)},
                     {"source", rule.source}});
  }
  std::string error;
  {
    std::lock_guard lock(error_mutex_);
    error = last_error_;
  }
  return json{{"rules", std::move(rules)},
              {"default", "allow"},
              {"file", file_.empty() ? json(nullptr) : json(file_.string())},
              {"loaded_at_ms", loaded_at_ms_.load()},
              {"reloads", {{"ok", reloads_ok_.load()}, {"failed", reloads_failed_.load()}}},
              {"last_reload_error", error.empty() ? json(nullptr) : json(error)}}
      .dump();
}

void RepoRules::render_metrics(std::string& out) const {
  metrics::write_family(out, kRules, static_cast<double>(rules_.load()->rules().size()));
  metrics::write_header(out, kReloads);
  metrics::write_sample(out, kReloads, "result=\"ok\"", static_cast<double>(reloads_ok_.load()));
  metrics::write_sample(out, kReloads, "result=\"failed\"", static_cast<double>(reloads_failed_.load()));
  metrics::write_family(out, kLoaded, static_cast<double>(loaded_at_ms_.load()) / 1000.0);
}

std::string refusal_message(const RepoDecision& decision) {
  return "Repository not found: refused by this node's repo rule \"" + decision.rule + "\"";
}

std::string_view access_name(RepoAccess access) {
  switch (access) {
    case RepoAccess::deny:
      return "deny";
    case RepoAccess::pass:
      return "pass";
    case RepoAccess::allow:
      break;
  }
  return "allow";
}

std::string_view scan_name(ScanAction scan) {
  switch (scan) {
    case ScanAction::warn:
      return "warn";
    case ScanAction::deny:
      return "deny";
    case ScanAction::off:
      break;
  }
  return "off";
}

}  // namespace inferllama::policy
