// `inferllama rules show|reload`: the repo rules a running node has in force (GET /api/inferllama/rules), and
// reading them again (POST /api/inferllama/rules/reload, as SIGHUP does).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "cli/text.hpp"

namespace inferllama::cli {
namespace {

void print_rules(const nlohmann::json& answer) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& rule : answer.value("rules", nlohmann::json::array())) {
    rows.push_back({std::to_string(rule.value("index", 0)), rule.value("rule", ""), rule.value("source", "")});
  }
  if (rows.empty()) {
    std::printf("no repo rules: every repo is allowed\n");
  } else {
    print_table({{"#", true}, {"RULE"}, {"FROM"}}, rows);
    std::printf("a repo no rule matches is allowed\n");
  }
  const auto file = answer.value("file", nlohmann::json());
  if (file.is_string()) std::printf("rules file: %s\n", file.get<std::string>().c_str());
  const auto reloads = answer.value("reloads", nlohmann::json::object());
  std::printf("reloads: %llu ok, %llu failed\n", static_cast<unsigned long long>(reloads.value("ok", 0ULL)),
              static_cast<unsigned long long>(reloads.value("failed", 0ULL)));
  const auto error = answer.value("last_reload_error", nlohmann::json());
  if (error.is_string()) std::printf("the last reload failed: %s\n", error.get<std::string>().c_str());
}

}  // namespace

int rules(const RulesOptions& options) {
  const auto node = node_or_explain(options.target);
  if (!node) return 1;
  const bool reload = options.action == "reload";
  const auto body = reload ? ask_node(*node, "POST", "/api/inferllama/rules/reload", "{}", "rules reload")
                           : ask_node(*node, "GET", "/api/inferllama/rules", "", "rules show");
  if (!body) return 1;
  if (options.json) {
    std::printf("%s\n", body->dump(2).c_str());
    return 0;
  }
  if (reload) std::printf("repo rules reloaded\n");
  print_rules(*body);
  return 0;
}

}  // namespace inferllama::cli
