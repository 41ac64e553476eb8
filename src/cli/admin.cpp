#include <curl/curl.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"

namespace inferllama::cli {

int admin(const AdminOptions& options) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  std::string node = options.node;
  while (node.ends_with("/")) node.pop_back();
  nlohmann::json body = nlohmann::json::object();
  if (options.action != "gc") {
    std::string repo = options.repo, revision = "main";
    if (auto at = repo.rfind('@'); at != std::string::npos) {
      revision = repo.substr(at + 1);
      repo = repo.substr(0, at);
    }
    body = {{"repo", repo}, {"revision", revision}, {"type", options.repo_type}};
    if (options.action == "mirror") body["from"] = options.from;
  }
  const std::string payload = body.dump();
  std::string answer;
  CURL* curl = curl_easy_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  const std::string url = node + "/api/inferllama/" + options.action;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) {
    static_cast<std::string*>(u)->append(d, s * n);
    return s * n;
  });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    std::fprintf(stderr, "cannot reach the node at %s: %s\n", node.c_str(), curl_easy_strerror(rc));
    return 1;
  }
  auto result = nlohmann::json::parse(answer, nullptr, false);
  if (status != 200 || !result.is_object()) {
    std::string why = result.is_object() ? result.value("error", answer) : answer;
    std::fprintf(stderr, "%s failed (HTTP %ld): %s\n", options.action.c_str(), status, why.c_str());
    return 1;
  }
  if (options.action == "gc") {
    std::printf("removed %llu unreferenced chunks, freed %llu bytes\n",
                static_cast<unsigned long long>(result.value("chunks_removed", 0ULL)),
                static_cast<unsigned long long>(result.value("bytes_freed", 0ULL)));
  } else if (options.action == "mirror") {
    std::printf("mirrored %s@%s: %llu files, %llu fetched over BitTorrent (%llu bytes); seeding %s%s\n",
                result.value("repo", "").c_str(), result.value("commit", "").c_str(),
                static_cast<unsigned long long>(result.value("files", 0ULL)),
                static_cast<unsigned long long>(result.value("fetched_files", 0ULL)),
                static_cast<unsigned long long>(result.value("fetched_bytes", 0ULL)),
                result.value("info_hash", "").c_str(),
                result.value("same_swarm", false) ? " (the same swarm as the source)" : "");
  } else {
    std::printf("%s %s@%s\n", result.value("pinned", false) ? "pinned" : "unpinned",
                result.value("repo", "").c_str(), result.value("commit", "").c_str());
  }
  return 0;
}

}  // namespace inferllama::cli
