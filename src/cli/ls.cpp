#include <cstdio>
#include <map>
#include <set>

#include "cli/commands.hpp"
#include "cli/text.hpp"
#include "inferllama/index.hpp"
#include "inferllama/scan.hpp"

namespace inferllama::cli {

int list_cache(const Config& config) {
  auto dir = config.data_dir / "index";
  if (!std::filesystem::exists(dir)) {
    std::fprintf(stderr,
                 "inferllama: no node data in %s: run this in the folder the node runs in, or give its "
                 "--data-dir or --config\n",
                 config.data_dir.c_str());
    return 1;
  }
  auto index = open_rocksdb_index(dir, /*read_only=*/true);
  // repo -> commit -> files
  std::map<std::string, std::map<std::string, std::vector<Index::ListedFile>>> tree;
  index->list_files([&](const Index::ListedFile& f) {
    if (f.cached) tree[f.repo_key][f.commit].push_back(f);
  });
  // commit -> the branch and tag names last seen pointing at it
  std::map<std::string, std::vector<std::string>> names;
  index->list_refs([&](const std::string& repo, const std::string& name, const RefEntry& ref) {
    names[repo + '@' + ref.commit].push_back(name.empty() ? "(default branch)" : name);
  });
  std::set<std::string> pinned;  // "model/acme/x@commit"
  for (const auto& [repo, commit] : index->pinned()) pinned.insert(repo.key() + '@' + commit);
  for (const auto& [repo, commits] : tree) {
    std::printf("%s\n", repo.c_str());
    for (const auto& [commit, files] : commits) {
      std::uint64_t total = 0;
      for (const auto& f : files) total += f.file.size;
      std::string refs;
      for (const auto& n : names[repo + '@' + commit]) refs += (refs.empty() ? "  [" : ", ") + n;
      if (!refs.empty()) refs += "]";
      if (pinned.contains(repo + '@' + commit)) refs += "  pinned";
      std::printf("  @%s  %zu files, %s%s\n", commit.c_str(), files.size(), human_bytes(total).c_str(), refs.c_str());
      for (const auto& f : files) {
        // The scan verdict of the file's bytes (shared by every path that has them); "unscanned" when stored
        // before scanning or with scan_policy off.
        const auto verdict = index->get_scan(f.file.etag);
        const std::string scan = verdict ? scan_header_value(*verdict) : "unscanned";
        std::printf("    %10s  %s  [scan: %s]\n", human_bytes(f.file.size).c_str(), f.path.c_str(), scan.c_str());
        if (!verdict) continue;
        for (const auto& finding : verdict->findings) std::printf("        ! %s\n", finding.c_str());
        if (verdict->findings_total > verdict->findings.size()) {
          std::printf("        ! and %zu more\n", verdict->findings_total - verdict->findings.size());
        }
        if (!verdict->error.empty()) std::printf("        ! %s\n", verdict->error.c_str());
      }
    }
  }
  if (tree.empty()) std::printf("the cache is empty\n");
  // What the node keeps warm, as its last runs left it (`prefetch list` asks a running node, with the run
  // in progress).
  prefetch::PrefetchTable table(index->records());
  const auto entries = prefetch::recorded_entries(config.prefetch, table);
  if (!entries.empty()) {
    std::printf("\nprefetch:\n");
    print_prefetch_entries(entries);
  }
  return 0;
}

}  // namespace inferllama::cli
