#pragma once
#include <memory>

#include "inferllama/upstream.hpp"

namespace inferllama::upstream {

// libcurl, one easy handle per calling thread so connections are kept alive and reused.
std::unique_ptr<Upstream> make_curl_upstream(const UpstreamOptions& options);

}  // namespace inferllama::upstream
