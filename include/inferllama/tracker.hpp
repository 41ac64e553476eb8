#pragma once
// The node's BitTorrent tracker: HTTP announce/scrape (BEP 3, 7, 23, 48) answered by the HTTP server,
// UDP (BEP 15) on its own socket and thread, one sharded in-memory swarm table behind both.
//
// Everything here is synchronous and in memory: callers run it on their own thread (the HTTP I/O
// threads, the UDP thread) without offloading. No Asio or Beast in this header.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/clock.hpp"
#include "inferllama/config.hpp"
#include "inferllama/digest.hpp"

namespace inferllama::tracker {

// A swarm's name: a v1 info-hash, or a v2 info-hash truncated to 20 bytes (as clients announce it).
using InfoHash = Sha1;

// The v2 info-hash as announced: its first 20 bytes.
InfoHash truncated(const Sha256& v2);

// An IPv4 or IPv6 address and port. IPv4 uses ip[0..3]; IPv4-mapped IPv6 addresses are IPv4.
struct Endpoint {
  std::array<std::uint8_t, 16> ip{};
  std::uint16_t port = 0;
  bool v6 = false;

  static Endpoint v4_from(std::span<const std::uint8_t, 4> ip, std::uint16_t port);
  // 16 bytes; an IPv4-mapped address (::ffff:a.b.c.d) becomes IPv4.
  static Endpoint v6_from(std::span<const std::uint8_t, 16> ip, std::uint16_t port);
  // "1.2.3.4", "::1" (no brackets); nullopt if it is not an address.
  static std::optional<Endpoint> parse(std::string_view ip, std::uint16_t port = 0);
  bool is_unspecified() const;  // 0.0.0.0 or ::
  bool is_loopback() const;     // 127.0.0.0/8 or ::1
  std::string ip_text() const;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// Built by from(): the defaults are the configuration's (config/config.cpp's key table), stated nowhere else.
struct Settings {
  std::chrono::seconds interval{};
  std::chrono::seconds min_interval{};
  unsigned numwant{};
  unsigned max_numwant{};
  bool open{};  // track any info-hash; otherwise only the node's own torrents
  // Bounds of the swarm table. A new peer beyond a swarm's cap, or beyond its address's share of the
  // swarm (an IPv4 address, or an IPv6 /64), is answered with peers but not stored; a new swarm beyond
  // max_swarms (open mode; the node's own torrents are always tracked) gets a failure reason.
  unsigned max_peers_per_swarm{};
  unsigned max_peers_per_address{};
  unsigned max_swarms{};
  // A scrape without info_hash lists every swarm: off, it gets a failure reason.
  bool full_scrape{};
  // Announces need a user's passkey, which only the HTTP announce path carries: UDP announces are refused.
  bool private_tracker{};
  // Where the node's own seed listens when that is a specific address (bt_listen's host); otherwise the
  // seed is named by the local address the client reached the tracker on.
  std::optional<Endpoint> own_seed_address;

  static Settings from(const Config& config);
};

// The counters of one swarm as a scrape reports them.
struct SwarmCounts {
  std::uint32_t seeders = 0;  // the node's own seed included
  std::uint32_t leechers = 0;
  std::uint64_t downloaded = 0;
  friend bool operator==(const SwarmCounts&, const SwarmCounts&) = default;
};

// A swarm as the operator sees it: its counts and some of its peers' addresses.
struct ListedPeer {
  Endpoint peer;
  bool seeder = false;
};
struct SwarmPeers {
  InfoHash hash;
  SwarmCounts counts;  // the node's own seed not included
  bool own = false;    // one of the node's own torrents
  std::vector<ListedPeer> peers;
};

class Tracker {
 public:
  // Peer expiry and connection-id epochs follow `clock` (monotonic in service, moved by hand in tests).
  Tracker(const Settings& settings, const Clock& clock = monotonic_clock());
  ~Tracker();
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  // The node's own torrents: tracked in restricted mode, with the node's seed in every peer list.
  // A hybrid torrent's truncated v2 hash names the same swarm as its v1 hash.
  void add_own_torrent(const InfoHash& v1, const std::optional<Sha256>& v2 = std::nullopt);
  void remove_own_torrent(const InfoHash& v1);
  // The port the node's seed listens on; 0 = the node does not seed (its seed is in no peer list).
  void set_seed_port(std::uint16_t port);
  // Whether an announce reads its `local` argument: the node seeds and bt_listen names no host, so the
  // seed is announced at the address the client reached. Otherwise callers need not look it up.
  bool needs_local_address() const;

  // GET /announce and GET /scrape: `query` is the raw query string (after '?'), `client` the peer's
  // address, `local` the address it reached the node on. The bencoded answer replaces `body`; a
  // request the tracker refuses is a `failure reason` (HTTP 200, as BitTorrent clients expect).
  void http_announce(std::string_view query, const Endpoint& client, const Endpoint& local, std::string& body);
  void http_scrape(std::string_view query, std::string& body);

  // One UDP datagram from `client` that reached the node on `local`; the reply is written into `reply`
  // (at least kUdpReplyCapacity bytes). Returns the reply's length; 0 = send nothing.
  static constexpr std::size_t kUdpReplyCapacity = 4096;
  std::size_t udp_datagram(std::span<const std::uint8_t> datagram, const Endpoint& client, const Endpoint& local,
                           std::span<std::uint8_t> reply);

  // Drops expired peers and empty swarms everywhere now. Not needed in service: each swarm expires its
  // peers when touched, and announces sweep the table one shard at a time, a full pass per time bucket.
  void sweep();

  // Scrape counts of one swarm (nullopt if it is not tracked), for tests and the admin view.
  std::optional<SwarmCounts> counts(const InfoHash& hash) const;
  std::size_t swarm_count() const;
  std::size_t peer_count() const;  // seeders and leechers of every swarm, the node's own seed not included
  // The `max_swarms` swarms with the most peers, each with at most `max_peers` peers (seeders first); for the
  // operator's page, which alone may see peers' addresses.
  std::vector<SwarmPeers> busiest_swarms(std::size_t max_swarms, std::size_t max_peers) const;

  // Appends the tracker's metric families (Prometheus text format).
  void render_metrics(std::string& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The UDP tracker: a non-blocking socket served by one thread with recvmmsg/sendmmsg batches.
class UdpServer {
 public:
  explicit UdpServer(Tracker& tracker);
  ~UdpServer();  // stops the thread
  UdpServer(const UdpServer&) = delete;
  UdpServer& operator=(const UdpServer&) = delete;

  // Binds HOST:PORT ("[::]:6969", port 0 = any free port) and starts serving; returns the bound port.
  // Throws std::runtime_error when the address cannot be bound.
  std::uint16_t start(const std::string& host_port);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace inferllama::tracker
