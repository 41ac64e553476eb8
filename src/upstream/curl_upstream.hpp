#pragma once
#include <filesystem>
#include <memory>

#include "inferllama/upstream.hpp"

namespace inferllama::upstream {

// libcurl, one easy handle per calling thread so connections are kept alive and reused.
std::unique_ptr<Upstream> make_curl_upstream(const UpstreamOptions& options);

// Offline mode: every call fails at once, as an unreachable Hub would, without touching the network.
std::unique_ptr<Upstream> make_offline_upstream();

// Byte ranges of files under `root` (a path is the URL; paths outside it are refused): how files that
// arrived over BitTorrent enter the store through the same verified ingest as downloads.
std::unique_ptr<Upstream> make_local_file_upstream(const std::filesystem::path& root);

}  // namespace inferllama::upstream
