// The tracker's protocols: HTTP announce/scrape queries and BEP 15 datagrams in, bencoded answers and
// reply packets out, over the swarm table. Replies are written into buffers the caller reuses and
// peers are copied out of a shard into per-thread arrays, so an announce allocates nothing once warm.
#include <arpa/inet.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "inferllama/cluster.hpp"
#include "inferllama/metrics.hpp"
#include "inferllama/network.hpp"
#include "inferllama/tracker.hpp"
#include "tracker/swarm_table.hpp"
#include "util/url.hpp"

namespace inferllama::tracker {
namespace {

constexpr std::uint64_t kUdpProtocolId = 0x41727101980ULL;
constexpr std::int64_t kConnectionEpochSeconds = 120;  // an id lives 2 to 4 minutes (BEP 15 asks for 2)
constexpr std::size_t kUdpScrapeMax = 74;              // hashes per UDP scrape (BEP 15)

enum class Transport { http, udp };
enum class Outcome { ok, unknown_torrent, invalid };
enum class UdpError { bad_connection_id, malformed, dropped };
// What the table's bounds and the full-scrape switch turned away.
enum class Refusal { swarm_full, address_full, too_many_swarms, full_scrape };
constexpr const char* kTransportNames[] = {"http", "udp"};
constexpr const char* kOutcomeNames[] = {"ok", "unknown_torrent", "invalid"};
constexpr const char* kUdpErrorNames[] = {"bad_connection_id", "malformed", "dropped"};
constexpr const char* kRefusalNames[] = {"swarm_full", "address_full", "too_many_swarms", "full_scrape"};
constexpr std::string_view kTooManySwarms = "this tracker tracks too many swarms: try again later";

SipKey random_key() {
  SipKey key{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), sizeof key) != 1) {
    throw std::runtime_error("the tracker cannot get random bytes for its keys (RAND_bytes)");
  }
  return key;
}

// Its peer id says the peer is a node fetching from this one (cluster::kParentSwarmPeerId, version aside).
bool is_parent_swarm_peer(std::span<const std::uint8_t> peer_id) {
  constexpr std::string_view kClient = cluster::kParentSwarmPeerId.substr(0, 3);  // "-IE"
  return peer_id.size() >= kClient.size() && std::equal(kClient.begin(), kClient.end(), peer_id.begin(),
                                                        [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; });
}

std::uint32_t read32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}
std::uint64_t read64(const std::uint8_t* p) {
  return static_cast<std::uint64_t>(read32(p)) << 32 | read32(p + 4);
}
std::uint8_t* write32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24), p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8), p[3] = static_cast<std::uint8_t>(v);
  return p + 4;
}
std::uint8_t* write64(std::uint8_t* p, std::uint64_t v) {
  write32(p, static_cast<std::uint32_t>(v >> 32));
  return write32(p + 4, static_cast<std::uint32_t>(v));
}

// Percent-decodes a query value ('+' is a space, as in forms) into exactly N bytes, in place; false otherwise.
template <std::size_t N>
bool decode_exact(std::string_view in, std::array<std::uint8_t, N>& out) {
  return url::decode_to(in, out, true) == N;
}

std::optional<std::uint64_t> decimal(std::string_view text) {
  std::uint64_t value = 0;
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Calls fn(key, raw value) for every key=value pair of a query string.
template <class Fn>
void each_param(std::string_view query, Fn&& fn) {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      fn(pair, std::string_view{});
    } else {
      fn(pair.substr(0, eq), pair.substr(eq + 1));
    }
  }
}

// Bencoding straight into the reply buffer.
void put_number(std::string& out, std::uint64_t v) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v);
  out.append(digits, end);
}
void put_int(std::string& out, std::string_view key, std::uint64_t v) {
  put_number(out, key.size());
  out += ':';
  out += key;
  out += 'i';
  put_number(out, v);
  out += 'e';
}
void put_bytes(std::string& out, std::string_view bytes) {
  put_number(out, bytes.size());
  out += ':';
  out += bytes;
}
void put_failure(std::string& out, std::string_view reason) {
  out.assign("d14:failure reason");
  put_bytes(out, reason);
  out += 'e';
}

template <std::size_t N>
std::string_view as_text(const std::array<std::uint8_t, N>& a) {
  return {reinterpret_cast<const char*>(a.data()), N};
}

// Per-thread room for the peers of one reply (sized on first use by the largest numwant seen).
struct Scratch {
  std::vector<Compact4> v4;
  std::vector<Compact6> v6;
  std::vector<InfoHash> hashes;
  void fit(std::size_t n) {
    if (v4.size() < n) v4.resize(n);
    if (v6.size() < n) v6.resize(n);
  }
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

InfoHash truncated(const Sha256& v2) {
  InfoHash h;
  std::copy_n(v2.bytes.begin(), h.bytes.size(), h.bytes.begin());
  return h;
}

Endpoint Endpoint::v4_from(std::span<const std::uint8_t, 4> ip, std::uint16_t port) {
  Endpoint e;
  std::copy(ip.begin(), ip.end(), e.ip.begin());
  e.port = port;
  return e;
}

Endpoint Endpoint::v6_from(std::span<const std::uint8_t, 16> ip, std::uint16_t port) {
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.data(), kMapped, sizeof kMapped) == 0) return v4_from(ip.subspan<12, 4>(), port);
  Endpoint e;
  std::copy(ip.begin(), ip.end(), e.ip.begin());
  e.port = port;
  e.v6 = true;
  return e;
}

std::optional<Endpoint> Endpoint::parse(std::string_view ip, std::uint16_t port) {
  const std::string text(ip);
  std::array<std::uint8_t, 16> bytes{};
  if (inet_pton(AF_INET, text.c_str(), bytes.data()) == 1) return v4_from(std::span(bytes).first<4>(), port);
  if (inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1) return v6_from(bytes, port);
  return std::nullopt;
}

bool Endpoint::is_unspecified() const {
  const std::size_t n = v6 ? 16 : 4;
  return std::all_of(ip.begin(), ip.begin() + static_cast<std::ptrdiff_t>(n), [](std::uint8_t b) { return b == 0; });
}

bool Endpoint::is_loopback() const {
  if (!v6) return ip[0] == 127;
  return std::all_of(ip.begin(), ip.begin() + 15, [](std::uint8_t b) { return b == 0; }) && ip[15] == 1;
}

std::string Endpoint::ip_text() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, ip.data(), text, sizeof text);
  return text;
}

Settings Settings::from(const Config& config) {
  Settings s;
  s.interval = config.tracker_interval;
  s.min_interval = config.tracker_min_interval;
  s.numwant = config.tracker_numwant;
  s.max_numwant = config.tracker_max_numwant;
  s.open = config.tracker_open;
  s.max_peers_per_swarm = config.tracker_max_peers_per_swarm;
  s.max_peers_per_address = config.tracker_max_peers_per_address;
  s.max_swarms = config.tracker_max_swarms;
  s.full_scrape = config.tracker_full_scrape;
  s.private_tracker = config.tracker_private;
  if (const auto seed = HostPort::parse(config.bt_listen)) {
    if (auto address = Endpoint::parse(seed->host); address && !address->is_unspecified()) s.own_seed_address = address;
  }
  return s;
}

struct Tracker::Impl {
  Impl(const Settings& settings, const Clock& clock)
      : settings(settings),
        clock(clock),
        connection_key(random_key()),
        table(settings.open, limits(settings), bucket_length(settings), clock, random_key()) {}

  static Limits limits(const Settings& s) {
    return {std::max(s.max_peers_per_swarm, 1u), std::max(s.max_peers_per_address, 1u), s.max_swarms};
  }

  static std::chrono::seconds bucket_length(const Settings& s) {
    return std::max(s.interval / 4, std::chrono::seconds(1));
  }

  void count(std::atomic<std::uint64_t> (&family)[2][3], Transport t, Outcome o) {
    family[static_cast<int>(t)][static_cast<int>(o)].fetch_add(1, std::memory_order_relaxed);
  }
  void count(Refusal r) { refusals[static_cast<int>(r)].fetch_add(1, std::memory_order_relaxed); }
  void count_unstored(AnnounceOutcome::Unstored u) {
    if (u == AnnounceOutcome::Unstored::swarm_full) count(Refusal::swarm_full);
    if (u == AnnounceOutcome::Unstored::address_full) count(Refusal::address_full);
  }

  // The node's own seed as a peer of a swarm the client reached on `local`; nullopt when it does not seed.
  std::optional<Endpoint> own_seed(const Endpoint& local) const {
    const std::uint16_t port = seed_port.load(std::memory_order_relaxed);
    if (port == 0) return std::nullopt;
    Endpoint e = settings.own_seed_address.value_or(local);
    e.port = port;
    return e;
  }

  std::uint64_t connection_id(const Endpoint& client, std::int64_t epoch) const {
    std::array<std::uint8_t, 8 + 16 + 2 + 1> input{};
    write64(input.data(), static_cast<std::uint64_t>(epoch));
    std::copy(client.ip.begin(), client.ip.end(), input.begin() + 8);
    input[24] = static_cast<std::uint8_t>(client.port >> 8);
    input[25] = static_cast<std::uint8_t>(client.port);
    input[26] = client.v6;
    return siphash24(connection_key, input);
  }
  std::int64_t epoch() const { return seconds_of(clock) / kConnectionEpochSeconds; }

  // Runs one announce through the table and adds the own seed; peers land in scratch().
  AnnounceOutcome announce(const PeerAnnounce& request, const Endpoint& local, std::size_t cap4, std::size_t cap6,
                           bool prefer_v6) {
    Scratch& s = scratch();
    s.fit(std::max(cap4, cap6));
    PeerOutput out{std::span(s.v4).first(cap4), std::span(s.v6).first(cap6), prefer_v6};
    AnnounceOutcome outcome = table.announce(request, out);
    count_unstored(outcome.unstored);
    if (outcome.result == AnnounceOutcome::Result::too_many_swarms) count(Refusal::too_many_swarms);
    if (!outcome.own) return outcome;
    auto own = own_seed(local);
    if (!own) return outcome;
    ++outcome.counts.seeders;
    // A loopback address the client reached through a reverse proxy on this host names no seed it can
    // reach (Transmission ignores it; others would dial their own host): bt_listen names the seed then.
    if (own->is_loopback() && !request.peer.is_loopback()) return outcome;
    // Seeders get the seed too: a magnet client announces left=0 before it has the metadata (aria2 does),
    // and the seed is where it gets the metadata from. A client that asked for no peers gets none; the
    // seed never receives itself.
    if (request.event == Event::stopped || request.numwant == 0 || *own == request.peer || request.parent_swarm)
      return outcome;
    if ((own->v6 ? cap6 : cap4) == 0) return outcome;  // a UDP reply of the other family
    // The own seed takes the place of a table peer when the reply is full.
    std::size_t& same = own->v6 ? outcome.v6 : outcome.v4;
    std::size_t& other = own->v6 ? outcome.v4 : outcome.v6;
    if (same + other >= request.numwant) --(same > 0 ? same : other);
    if (own->v6) {
      s.v6[outcome.v6++] = compact6(*own);
    } else {
      s.v4[outcome.v4++] = compact4(*own);
    }
    return outcome;
  }

  SwarmCounts with_own(const SwarmState& state) const {
    SwarmCounts c = state.counts;
    if (state.own && seed_port.load(std::memory_order_relaxed) != 0) ++c.seeders;
    return c;
  }

  void http_announce(std::string_view query, const Endpoint& client, const Endpoint& local, std::string& body);
  void http_scrape(std::string_view query, std::string& body);
  std::size_t udp_datagram(std::span<const std::uint8_t> in, const Endpoint& client, const Endpoint& local,
                           std::span<std::uint8_t> reply);
  std::size_t udp_error(std::uint32_t transaction, std::string_view message, std::span<std::uint8_t> reply) const;

  Settings settings;
  const Clock& clock;
  SipKey connection_key;
  SwarmTable table;
  std::atomic<std::uint16_t> seed_port{0};

  std::atomic<std::uint64_t> announces[2][3]{};  // transport x outcome
  std::atomic<std::uint64_t> scrapes[2][3]{};
  std::atomic<std::uint64_t> udp_connects{0};
  std::atomic<std::uint64_t> udp_errors[3]{};
  std::atomic<std::uint64_t> refusals[4]{};
};

void Tracker::Impl::http_announce(std::string_view query, const Endpoint& client, const Endpoint& local,
                                  std::string& body) {
  PeerAnnounce request;
  request.peer = client;
  request.numwant = settings.numwant;
  bool have_hash = false, have_peer_id = false, have_port = false, compact = true;
  const char* invalid = nullptr;
  std::array<std::uint8_t, 20> peer_id{};
  each_param(query, [&](std::string_view key, std::string_view value) {
    if (invalid) return;
    if (key == "info_hash") {
      if (!decode_exact(value, request.hash.bytes)) invalid = "invalid info_hash";
      have_hash = true;
    } else if (key == "peer_id") {
      if (!decode_exact(value, peer_id)) invalid = "invalid peer_id";
      have_peer_id = true;
    } else if (key == "port") {
      auto port = decimal(value);
      if (!port || *port == 0 || *port > 65535)
        invalid = "invalid port";
      else
        request.peer.port = static_cast<std::uint16_t>(*port);
      have_port = true;
    } else if (key == "left") {
      auto left = decimal(value);
      if (!left)
        invalid = "invalid left";
      else
        request.seeder = request.seeder || *left == 0;
    } else if (key == "numwant" || key == "num_want") {
      auto n = decimal(value);
      if (!n)
        invalid = "invalid numwant";
      else
        request.numwant = static_cast<unsigned>(std::min<std::uint64_t>(*n, settings.max_numwant));
    } else if (key == "compact") {
      compact = value != "0";
    } else if (key == "event") {
      if (value == "started")
        request.event = Event::started;
      else if (value == "stopped")
        request.event = Event::stopped;
      else if (value == "completed")
        request.event = Event::completed;
    }
  });
  if (!invalid && !have_hash) invalid = "missing info_hash";
  if (!invalid && !have_peer_id) invalid = "missing peer_id";
  request.parent_swarm = is_parent_swarm_peer(peer_id);
  if (!invalid && !have_port) invalid = "missing port";
  if (invalid) {
    count(announces, Transport::http, Outcome::invalid);
    put_failure(body, invalid);
    return;
  }
  if (request.event == Event::completed) request.seeder = true;

  const std::size_t cap = settings.max_numwant + 1;
  const AnnounceOutcome outcome = announce(request, local, cap, cap, client.v6);
  if (outcome.result == AnnounceOutcome::Result::unknown_torrent) {
    count(announces, Transport::http, Outcome::unknown_torrent);
    put_failure(body, "unknown torrent: this tracker serves only the node's own torrents");
    return;
  }
  if (outcome.result == AnnounceOutcome::Result::too_many_swarms) {
    count(announces, Transport::http, Outcome::invalid);
    put_failure(body, kTooManySwarms);
    return;
  }
  count(announces, Transport::http, Outcome::ok);
  const SwarmCounts& c = outcome.counts;
  const Scratch& s = scratch();
  body.assign("d");
  put_int(body, "complete", c.seeders);
  put_int(body, "downloaded", c.downloaded);
  put_int(body, "incomplete", c.leechers);
  put_int(body, "interval", static_cast<std::uint64_t>(settings.interval.count()));
  put_int(body, "min interval", static_cast<std::uint64_t>(settings.min_interval.count()));
  if (compact) {
    body += "5:peers";
    put_bytes(body, {reinterpret_cast<const char*>(s.v4.data()), outcome.v4 * sizeof(Compact4)});
    if (outcome.v6 > 0) {
      body += "6:peers6";
      put_bytes(body, {reinterpret_cast<const char*>(s.v6.data()), outcome.v6 * sizeof(Compact6)});
    }
  } else {
    // BEP 3's dictionary model: ip as text, port as a number (peer ids are not kept).
    body += "5:peersl";
    auto put_peer = [&](const std::uint8_t* ip, bool v6, const std::uint8_t* port) {
      char text[INET6_ADDRSTRLEN] = {};
      inet_ntop(v6 ? AF_INET6 : AF_INET, ip, text, sizeof text);
      body += "d2:ip";
      put_bytes(body, text);
      put_int(body, "port", static_cast<std::uint64_t>(port[0] << 8 | port[1]));
      body += 'e';
    };
    for (std::size_t i = 0; i < outcome.v4; ++i) put_peer(s.v4[i].data(), false, s.v4[i].data() + 4);
    for (std::size_t i = 0; i < outcome.v6; ++i) put_peer(s.v6[i].data(), true, s.v6[i].data() + 16);
    body += 'e';
  }
  body += 'e';
}

void Tracker::Impl::http_scrape(std::string_view query, std::string& body) {
  std::vector<InfoHash>& hashes = scratch().hashes;
  hashes.clear();
  const char* invalid = nullptr;
  each_param(query, [&](std::string_view key, std::string_view value) {
    if (invalid || key != "info_hash") return;
    InfoHash h;
    if (!decode_exact(value, h.bytes)) invalid = "invalid info_hash";
    hashes.push_back(h);
  });
  if (!invalid && hashes.empty() && !settings.full_scrape) {
    invalid = "full scrape is disabled on this tracker: name each info_hash";
    count(Refusal::full_scrape);
  }
  if (invalid) {
    count(scrapes, Transport::http, Outcome::invalid);
    put_failure(body, invalid);
    return;
  }
  count(scrapes, Transport::http, Outcome::ok);
  auto put_file = [&](const InfoHash& h, const SwarmCounts& c) {
    put_bytes(body, h.raw());
    body += 'd';
    put_int(body, "complete", c.seeders);
    put_int(body, "downloaded", c.downloaded);
    put_int(body, "incomplete", c.leechers);
    body += 'e';
  };
  body.assign("d5:filesd");
  if (hashes.empty()) {
    // A full scrape: every swarm tracked (in restricted mode, the node's own torrents).
    std::vector<std::pair<InfoHash, SwarmCounts>> all;
    table.each_swarm([&](const InfoHash& h, const SwarmCounts& c, bool own) {
      all.emplace_back(h, with_own(SwarmState{c, own}));
    });
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [h, c] : all) put_file(h, c);
  } else {
    // Dictionary keys go in byte order, each once.
    std::sort(hashes.begin(), hashes.end());
    hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
    for (const InfoHash& h : hashes) {
      if (auto state = table.state(h)) {
        put_file(h, with_own(*state));
      } else if (settings.open) {
        put_file(h, {});
      }
    }
  }
  body += "ee";
}

std::size_t Tracker::Impl::udp_error(std::uint32_t transaction, std::string_view message,
                                     std::span<std::uint8_t> reply) const {
  std::uint8_t* p = write32(reply.data(), 3);
  p = write32(p, transaction);
  const std::size_t n = std::min(message.size(), reply.size() - 8);
  std::memcpy(p, message.data(), n);
  return 8 + n;
}

std::size_t Tracker::Impl::udp_datagram(std::span<const std::uint8_t> in, const Endpoint& client, const Endpoint& local,
                                        std::span<std::uint8_t> reply) {
  if (in.size() < 16 || reply.size() < kUdpReplyCapacity) {
    udp_errors[static_cast<int>(UdpError::dropped)].fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  const std::uint64_t connection = read64(in.data());
  const std::uint32_t action = read32(in.data() + 8);
  const std::uint32_t transaction = read32(in.data() + 12);
  auto malformed = [&](std::string_view message) {
    udp_errors[static_cast<int>(UdpError::malformed)].fetch_add(1, std::memory_order_relaxed);
    return udp_error(transaction, message, reply);
  };
  // The source address of a datagram is unproven until it presents a connection id: nothing but a
  // connect, whose 16-byte reply is no larger than the request, is answered before that. Any other
  // reply would let a forged source turn the tracker into an amplifier.
  const std::int64_t now_epoch = epoch();
  if (action == 0) {
    if (connection != kUdpProtocolId) {
      udp_errors[static_cast<int>(UdpError::malformed)].fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    udp_connects.fetch_add(1, std::memory_order_relaxed);
    std::uint8_t* p = write32(reply.data(), 0);
    p = write32(p, transaction);
    write64(p, connection_id(client, now_epoch));
    return 16;
  }
  if (connection != connection_id(client, now_epoch) && connection != connection_id(client, now_epoch - 1)) {
    udp_errors[static_cast<int>(UdpError::bad_connection_id)].fetch_add(1, std::memory_order_relaxed);
    if (action == 1) count(announces, Transport::udp, Outcome::invalid);
    if (action == 2) count(scrapes, Transport::udp, Outcome::invalid);
    return 0;
  }
  if (action == 1) {
    if (in.size() < 98) {
      count(announces, Transport::udp, Outcome::invalid);
      return malformed("announce too short");
    }
    PeerAnnounce request;
    std::copy_n(in.data() + 16, 20, request.hash.bytes.begin());
    request.parent_swarm = is_parent_swarm_peer(std::span<const std::uint8_t>(in.data() + 36, 20));
    const std::uint64_t left = read64(in.data() + 64);
    const std::uint32_t event = read32(in.data() + 80);
    const auto numwant = static_cast<std::int32_t>(read32(in.data() + 92));
    const auto port = static_cast<std::uint16_t>(in[96] << 8 | in[97]);
    if (event > 3) {
      count(announces, Transport::udp, Outcome::invalid);
      return malformed("invalid event");
    }
    if (port == 0) {
      count(announces, Transport::udp, Outcome::invalid);
      return malformed("invalid port");
    }
    if (settings.private_tracker) {
      count(announces, Transport::udp, Outcome::invalid);
      return udp_error(transaction, "this tracker is private: announce over HTTP with your passkey", reply);
    }
    static constexpr Event kEvents[] = {Event::none, Event::completed, Event::started, Event::stopped};
    request.event = kEvents[event];
    request.seeder = left == 0 || request.event == Event::completed;
    request.peer = client;
    request.peer.port = port;  // the address is always the packet's source (the ip field is ignored)
    request.numwant =
        numwant < 0 ? settings.numwant : std::min<unsigned>(static_cast<unsigned>(numwant), settings.max_numwant);
    // One family per reply (BEP 15: 6-byte peers over IPv4, 18-byte peers over IPv6), bounded by the buffer.
    const std::size_t room = (kUdpReplyCapacity - 20) / (client.v6 ? sizeof(Compact6) : sizeof(Compact4));
    request.numwant = static_cast<unsigned>(std::min<std::size_t>(request.numwant, room));
    const AnnounceOutcome outcome =
        announce(request, local, client.v6 ? 0 : request.numwant, client.v6 ? request.numwant : 0, client.v6);
    if (outcome.result == AnnounceOutcome::Result::unknown_torrent) {
      count(announces, Transport::udp, Outcome::unknown_torrent);
      return udp_error(transaction, "unknown torrent", reply);
    }
    if (outcome.result == AnnounceOutcome::Result::too_many_swarms) {
      count(announces, Transport::udp, Outcome::invalid);
      return udp_error(transaction, kTooManySwarms, reply);
    }
    count(announces, Transport::udp, Outcome::ok);
    std::uint8_t* p = write32(reply.data(), 1);
    p = write32(p, transaction);
    p = write32(p, static_cast<std::uint32_t>(settings.interval.count()));
    p = write32(p, outcome.counts.leechers);
    p = write32(p, outcome.counts.seeders);
    const Scratch& s = scratch();
    // No peers may mean no scratch storage yet: memcpy wants a valid source even for zero bytes.
    if (client.v6 && outcome.v6 > 0) {
      std::memcpy(p, s.v6.data(), outcome.v6 * sizeof(Compact6));
      p += outcome.v6 * sizeof(Compact6);
    } else if (!client.v6 && outcome.v4 > 0) {
      std::memcpy(p, s.v4.data(), outcome.v4 * sizeof(Compact4));
      p += outcome.v4 * sizeof(Compact4);
    }
    return static_cast<std::size_t>(p - reply.data());
  }
  if (action == 2) {
    const std::size_t n = std::min((in.size() - 16) / 20, kUdpScrapeMax);
    if (n == 0) {
      count(scrapes, Transport::udp, Outcome::invalid);
      return malformed("scrape without info-hashes");
    }
    count(scrapes, Transport::udp, Outcome::ok);
    std::uint8_t* p = write32(reply.data(), 2);
    p = write32(p, transaction);
    for (std::size_t i = 0; i < n; ++i) {
      InfoHash h;
      std::copy_n(in.data() + 16 + 20 * i, 20, h.bytes.begin());
      SwarmCounts c;
      if (auto state = table.state(h)) c = with_own(*state);
      p = write32(p, c.seeders);
      p = write32(p, static_cast<std::uint32_t>(c.downloaded));
      p = write32(p, c.leechers);
    }
    return static_cast<std::size_t>(p - reply.data());
  }
  return malformed("unknown action");
}

Tracker::Tracker(const Settings& settings, const Clock& clock) : impl_(std::make_unique<Impl>(settings, clock)) {}
Tracker::~Tracker() = default;

void Tracker::add_own_torrent(const InfoHash& v1, const std::optional<Sha256>& v2) {
  std::optional<InfoHash> alias;
  if (v2) alias = truncated(*v2);
  impl_->table.add_own(v1, alias);
}

void Tracker::remove_own_torrent(const InfoHash& v1) {
  impl_->table.remove_own(v1);
}

void Tracker::set_seed_port(std::uint16_t port) {
  impl_->seed_port.store(port, std::memory_order_relaxed);
}

bool Tracker::needs_local_address() const {
  return impl_->seed_port.load(std::memory_order_relaxed) != 0 && !impl_->settings.own_seed_address;
}

void Tracker::http_announce(std::string_view query, const Endpoint& client, const Endpoint& local, std::string& body) {
  impl_->http_announce(query, client, local, body);
}

void Tracker::http_scrape(std::string_view query, std::string& body) {
  impl_->http_scrape(query, body);
}

std::size_t Tracker::udp_datagram(std::span<const std::uint8_t> datagram, const Endpoint& client, const Endpoint& local,
                                  std::span<std::uint8_t> reply) {
  return impl_->udp_datagram(datagram, client, local, reply);
}

void Tracker::sweep() {
  impl_->table.sweep();
}

std::optional<SwarmCounts> Tracker::counts(const InfoHash& hash) const {
  auto state = impl_->table.state(hash);
  if (!state) return std::nullopt;
  return impl_->with_own(*state);
}

std::size_t Tracker::swarm_count() const {
  return impl_->table.totals().swarms;
}

std::size_t Tracker::peer_count() const {
  const TableTotals totals = impl_->table.totals();
  return static_cast<std::size_t>(totals.seeders + totals.leechers);
}

std::vector<SwarmPeers> Tracker::busiest_swarms(std::size_t max_swarms, std::size_t max_peers) const {
  return impl_->table.busiest(max_swarms, max_peers);
}

namespace {

using metrics::FamilySpec;
constexpr FamilySpec kAnnouncesTotal{"inferllama_tracker_announces_total", "counter",
                                     "Tracker announces by transport and result"};
constexpr FamilySpec kScrapesTotal{"inferllama_tracker_scrapes_total", "counter",
                                   "Tracker scrapes by transport and result"};
constexpr FamilySpec kUdpConnectsTotal{"inferllama_tracker_udp_connects_total", "counter",
                                       "UDP tracker connection ids handed out"};
constexpr FamilySpec kErrorsTotal{
    "inferllama_tracker_errors_total", "counter",
    "Tracker requests refused, by transport and kind (UDP packets dropped unanswered included)"};
constexpr FamilySpec kRefusalsTotal{
    "inferllama_tracker_refusals_total", "counter",
    "What the tracker's bounds turned away: new peers of a full swarm (swarm_full) or beyond their "
    "address's share (address_full), both still answered; new swarms beyond tracker_max_swarms; full "
    "scrapes while they are off"};
constexpr FamilySpec kOpenSwarms{"inferllama_tracker_open_swarms", "gauge",
                                 "Swarms of open mode (not the node's own torrents), bounded by tracker_max_swarms"};
constexpr FamilySpec kSwarms{"inferllama_tracker_swarms", "gauge", "Swarms the tracker tracks"};
constexpr FamilySpec kPeers{"inferllama_tracker_peers", "gauge",
                            "Peers in all swarms (the node's own seed not included)"};
constexpr FamilySpec kSwarmPeers{"inferllama_tracker_swarm_peers", "gauge",
                                 "Peers of each of the node's own torrents (seeders include the node's seed)"};
constexpr FamilySpec kSwarmDownloadedTotal{"inferllama_tracker_swarm_downloaded_total", "counter",
                                           "Completed downloads of each of the node's own torrents"};

}  // namespace

void Tracker::render_metrics(std::string& out) const {
  using metrics::write_header;
  using metrics::write_sample;
  const Impl& t = *impl_;
  auto labels = [](int transport, const char* key, const char* value) {
    return std::string("transport=\"") + kTransportNames[transport] + "\"," + key + "=\"" + value + "\"";
  };
  write_header(out, kAnnouncesTotal);
  for (int tr = 0; tr < 2; ++tr)
    for (int o = 0; o < 3; ++o)
      write_sample(out, kAnnouncesTotal, labels(tr, "result", kOutcomeNames[o]),
                   static_cast<double>(t.announces[tr][o].load()));
  write_header(out, kScrapesTotal);
  for (int tr = 0; tr < 2; ++tr)
    for (int o = 0; o < 3; ++o) {
      if (o == static_cast<int>(Outcome::unknown_torrent)) continue;  // a scrape of an unknown hash is answered
      write_sample(out, kScrapesTotal, labels(tr, "result", kOutcomeNames[o]),
                   static_cast<double>(t.scrapes[tr][o].load()));
    }
  write_header(out, kUdpConnectsTotal);
  write_sample(out, kUdpConnectsTotal, "", static_cast<double>(t.udp_connects.load()));
  write_header(out, kErrorsTotal);
  std::uint64_t http_errors = 0;
  for (int o = 1; o < 3; ++o) http_errors += t.announces[0][o].load() + t.scrapes[0][o].load();
  write_sample(out, kErrorsTotal, labels(0, "kind", "failure_reason"), static_cast<double>(http_errors));
  write_sample(out, kErrorsTotal, labels(1, "kind", "unknown_torrent"),
               static_cast<double>(t.announces[1][static_cast<int>(Outcome::unknown_torrent)].load()));
  for (int e = 0; e < 3; ++e)
    write_sample(out, kErrorsTotal, labels(1, "kind", kUdpErrorNames[e]), static_cast<double>(t.udp_errors[e].load()));

  TableTotals totals;
  struct Own {
    InfoHash hash;
    SwarmCounts counts;
  };
  std::vector<Own> own;
  impl_->table.each_swarm([&](const InfoHash& h, const SwarmCounts& c, bool is_own) {
    ++totals.swarms;
    totals.seeders += c.seeders;
    totals.leechers += c.leechers;
    if (is_own) own.push_back({h, t.with_own(SwarmState{c, true})});
  });
  write_header(out, kRefusalsTotal);
  for (int r = 0; r < 4; ++r)
    write_sample(out, kRefusalsTotal, std::string("reason=\"") + kRefusalNames[r] + "\"",
                 static_cast<double>(t.refusals[r].load()));
  write_header(out, kOpenSwarms);
  write_sample(out, kOpenSwarms, "", static_cast<double>(t.table.open_swarms()));
  write_header(out, kSwarms);
  write_sample(out, kSwarms, "", static_cast<double>(totals.swarms));
  write_header(out, kPeers);
  write_sample(out, kPeers, "kind=\"seeders\"", static_cast<double>(totals.seeders));
  write_sample(out, kPeers, "kind=\"leechers\"", static_cast<double>(totals.leechers));
  std::sort(own.begin(), own.end(), [](const Own& a, const Own& b) { return a.hash < b.hash; });
  write_header(out, kSwarmPeers);
  for (const Own& o : own) {
    const std::string hex = o.hash.hex();
    write_sample(out, kSwarmPeers, "info_hash=\"" + hex + "\",kind=\"seeders\"", static_cast<double>(o.counts.seeders));
    write_sample(out, kSwarmPeers, "info_hash=\"" + hex + "\",kind=\"leechers\"",
                 static_cast<double>(o.counts.leechers));
  }
  write_header(out, kSwarmDownloadedTotal);
  for (const Own& o : own)
    write_sample(out, kSwarmDownloadedTotal, "info_hash=\"" + o.hash.hex() + "\"",
                 static_cast<double>(o.counts.downloaded));
}

}  // namespace inferllama::tracker
