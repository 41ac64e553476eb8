// libFuzzer target: the tracker's HTTP side (tracker/tracker.cpp, swarm_table.cpp). The input is a query
// string, run as an announce and as a scrape against an open tracker and a restricted one with an own
// torrent; every answer must be one well-formed bencoded dictionary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "inferllama/tracker.hpp"

namespace {

using inferllama::tracker::Endpoint;

// Skips one bencoded value at `at`; false if it is not one.
bool skip_value(std::string_view s, std::size_t& at, int depth = 0) {
  if (at >= s.size() || depth > 8) return false;
  const char c = s[at];
  if (c == 'i') {
    const auto end = s.find('e', at);
    if (end == std::string_view::npos || end == at + 1) return false;
    at = end + 1;
    return true;
  }
  if (c == 'l' || c == 'd') {
    ++at;
    while (at < s.size() && s[at] != 'e')
      if (!skip_value(s, at, depth + 1)) return false;
    if (at >= s.size()) return false;
    ++at;
    return true;
  }
  std::size_t n = 0, i = at;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') n = n * 10 + static_cast<std::size_t>(s[i++] - '0');
  if (i == at || i >= s.size() || s[i] != ':' || s.size() - i - 1 < n) return false;
  at = i + 1 + n;
  return true;
}

void check_bencoded_dict(const std::string& body) {
  std::size_t at = 0;
  FUZZ_CHECK(!body.empty() && body.front() == 'd', "answer is not a dictionary: %.100s", body.c_str());
  FUZZ_CHECK(skip_value(body, at) && at == body.size(), "malformed bencode: %.200s", body.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace inferllama::tracker;
  static Tracker open_tracker([] {
    Settings s = Settings::from(inferllama::Config{});
    s.open = true;
    return s;
  }());
  static Tracker restricted{Settings::from(inferllama::Config{})};
  static const bool registered = [] {
    InfoHash h;
    h.bytes.fill('a');
    restricted.add_own_torrent(h);
    restricted.set_seed_port(6881);
    return true;
  }();
  (void)registered;
  const std::string_view query(reinterpret_cast<const char*>(data), size);
  const Endpoint client = *Endpoint::parse(size % 2 ? "10.1.2.3" : "2001:db8::5", 4000);
  const Endpoint local = *Endpoint::parse("127.0.0.1", 8080);
  std::string body;
  for (Tracker* t : {&open_tracker, &restricted}) {
    t->http_announce(query, client, local, body);
    check_bencoded_dict(body);
    t->http_scrape(query, body);
    check_bencoded_dict(body);
  }
  return 0;
}
