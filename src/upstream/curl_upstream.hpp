#pragma once
#include <memory>

#include "inferllama/upstream.hpp"

namespace inferllama::upstream {

// libcurl, one easy handle per calling thread so connections are kept alive and reused.
std::unique_ptr<Upstream> make_curl_upstream(const UpstreamOptions& options);

// Offline mode: every call fails at once, as an unreachable Hub would, without touching the network.
std::unique_ptr<Upstream> make_offline_upstream();

}  // namespace inferllama::upstream
