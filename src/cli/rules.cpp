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
  std::optional<Config> beside;
  const auto node = node_target(options.target, beside);
  if (!node) {
    report_no_node(*beside);
    return 1;
  }
  const bool reload = options.action == "reload";
  auto called = reload ? call_node(*node, "POST", "/api/inferllama/rules/reload", "{}")
                       : call_node(*node, "GET", "/api/inferllama/rules", "");
  if (auto* why = std::get_if<std::string>(&called)) {
    std::fprintf(stderr, "inferllama: %s\n", why->c_str());
    return 1;
  }
  const auto& answer = std::get<NodeAnswer>(called);
  auto body = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200 || !body.is_object()) {
    std::fprintf(stderr, "inferllama: rules %s failed (HTTP %ld): %s\n", options.action.c_str(), answer.status,
                 error_of(answer.body).c_str());
    return 1;
  }
  if (options.json) {
    std::printf("%s\n", body.dump(2).c_str());
    return 0;
  }
  if (reload) std::printf("repo rules reloaded\n");
  print_rules(body);
  return 0;
}

}  // namespace inferllama::cli
