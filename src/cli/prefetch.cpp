// `inferllama prefetch add|list|remove` and `inferllama refresh`: the node's prefetch list and what a branch
// resolves to, through its admin API; and the prefetch entries as `prefetch list` and `ls` print them.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/node_http.hpp"
#include "cli/text.hpp"

namespace inferllama::cli {
namespace {

// The entries of GET /api/inferllama/prefetch, and the key of the one running.
std::vector<prefetch::Entry> entries_of(const nlohmann::json& answer, std::string& running) {
  std::vector<prefetch::Entry> entries;
  for (const auto& item : answer.value("entries", nlohmann::json::array())) {
    auto entry = prefetch::entry_from_json(item);
    if (!entry) continue;
    if (item.value("running", false)) running = entry->spec.key();
    entries.push_back(std::move(*entry));
  }
  return entries;
}

std::string short_commit(const std::string& commit) {
  return commit.empty() ? "-" : commit.substr(0, 12);
}

std::string named(const nlohmann::json& result) {
  const auto type = parse_repo_type(result.value("type", "model")).value_or(RepoType::model);
  return std::string(RepoId{type, ""}.url_prefix()) + result.value("repo", "") + "@" + result.value("revision", "");
}

}  // namespace

void print_prefetch_entries(const std::vector<prefetch::Entry>& entries, const std::string& running) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& entry : entries) {
    const auto& s = entry.status;
    const std::string state = entry.spec.key() == running ? "fetching"
                              : s.checked_ms == 0         ? "not run yet"
                              : s.current()               ? "current"
                              : s.commit.empty()          ? "skipped"
                                                          : "incomplete";
    rows.push_back({format_prefetch_spec(entry.spec), entry.configured ? "config" : "added", short_commit(s.commit),
                    std::to_string(s.files_held) + "/" + std::to_string(s.files_wanted),
                    human_bytes(s.bytes_held) + " / " + human_bytes(s.bytes_wanted), ago(s.checked_ms), state});
  }
  print_table({{"ENTRY"}, {"FROM"}, {"COMMIT"}, {"FILES", true}, {"BYTES", true}, {"CHECKED"}, {"STATE"}}, rows);
  for (const auto& entry : entries) {
    if (!entry.status.error.empty()) {
      std::printf("  %s: %s\n", format_prefetch_spec(entry.spec).c_str(), entry.status.error.c_str());
    }
  }
}

int prefetch(const PrefetchOptions& options) {
  const auto node = node_or_explain(options.target);
  if (!node) return 1;
  if (options.action == "list") {
    const auto answer = ask_node(*node, "GET", "/api/inferllama/prefetch", "", "prefetch list");
    if (!answer) return 1;
    if (options.json) {
      std::printf("%s\n", answer->dump(2).c_str());
      return 0;
    }
    std::string running;
    const auto entries = entries_of(*answer, running);
    if (entries.empty()) {
      std::printf("the prefetch list is empty: add to it with `inferllama prefetch add REPO[@REV]`\n");
      return 0;
    }
    print_prefetch_entries(entries, running);
    return 0;
  }
  nlohmann::json body = snapshot_body(options.repo, options.repo_type);
  if (options.action == "add") body["include"] = options.include;
  const auto result =
      ask_node(*node, "POST", "/api/inferllama/prefetch/" + options.action, body.dump(), "prefetch " + options.action);
  if (!result) return 1;
  if (options.action == "remove") {
    const auto unpinned = result->value("unpinned", std::vector<std::string>{});
    std::printf("removed %s from the prefetch list", named(*result).c_str());
    for (std::size_t i = 0; i < unpinned.size(); ++i) {
      std::printf("%s%s", i == 0 ? "; unpinned " : ", ", short_commit(unpinned[i]).c_str());
    }
    std::printf("\n");
  } else if (result->value("changed", true)) {
    std::printf(
        "prefetching %s: the node fetches it now and whenever %s moves (`inferllama prefetch list` shows how far "
        "it got)\n",
        named(*result).c_str(), result->value("revision", "").c_str());
  } else {
    std::printf("%s was in the prefetch list already, with these patterns\n", named(*result).c_str());
  }
  return 0;
}

int refresh(const RefreshOptions& options) {
  const auto node = node_or_explain(options.target);
  if (!node) return 1;
  nlohmann::json body = snapshot_body(options.repo, options.repo_type);
  body["resolve"] = !options.no_resolve;
  const auto result = ask_node(*node, "POST", "/api/inferllama/refresh", body.dump(), "refresh");
  if (!result) return 1;
  const std::string before = (*result)["before"].is_string() ? (*result)["before"].get<std::string>() : "";
  const std::string rev = result->value("revision", "");
  const std::string repo = result->value("repo", "");
  if (options.no_resolve) {
    std::printf("forgot what %s of %s resolves to%s; the next request asks the Hub\n", rev.c_str(), repo.c_str(),
                before.empty() ? " (the node had not resolved it)" : (" (it named " + before + ")").c_str());
    return 0;
  }
  const std::string now = result->value("now", "");
  if (before.empty()) {
    std::printf("%s of %s names %s (the node had not resolved it before)\n", rev.c_str(), repo.c_str(), now.c_str());
  } else if (before == now) {
    std::printf("%s of %s names %s, as before\n", rev.c_str(), repo.c_str(), now.c_str());
  } else {
    std::printf("%s of %s moved: %s before, %s now\n", rev.c_str(), repo.c_str(), before.c_str(), now.c_str());
  }
  if (result->contains("stale")) std::printf("(%s)\n", result->value("stale", "").c_str());
  return 0;
}

}  // namespace inferllama::cli
