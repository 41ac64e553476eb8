// What /metrics says about the process itself: the node's version and the versions of the libraries it
// runs with (inferllama_build_info, the Prometheus "build info" idiom: a gauge of 1 whose labels carry the
// facts), and when the process started (process_start_time_seconds, the name Prometheus' own client
// libraries give it, so uptime is `time() - process_start_time_seconds` on every dashboard).
#pragma once
#include <string>

namespace inferllama::node {

// The label set of inferllama_build_info: version="0.1.0",compiler="gcc 12.2.0",boost="1.74.0",...
const std::string& build_info_labels();

// Appends both families (header and sample) to a /metrics text.
void render_build_info(std::string& out);

}  // namespace inferllama::node
