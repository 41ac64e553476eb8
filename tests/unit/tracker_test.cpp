#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <variant>

#include "inferllama/cluster.hpp"
#include "inferllama/tracker.hpp"

namespace inferllama::tracker {
namespace {

class FakeClock final : public Clock {
 public:
  SystemTime now() const override { return SystemTime(now_); }
  void advance(std::chrono::seconds by) { now_ += by; }

 private:
  std::chrono::seconds now_{1'000'000};
};

// A bencoded value, enough to read tracker answers.
struct Value {
  std::variant<std::int64_t, std::string, std::vector<Value>, std::map<std::string, Value>> v;
  const Value& operator[](const std::string& key) const { return std::get<3>(v).at(key); }
  bool has(const std::string& key) const { return std::get<3>(v).count(key) > 0; }
  std::int64_t integer() const { return std::get<0>(v); }
  const std::string& bytes() const { return std::get<1>(v); }
  const std::vector<Value>& list() const { return std::get<2>(v); }
  const std::map<std::string, Value>& dict() const { return std::get<3>(v); }
};

Value parse(std::string_view& in) {
  if (in.empty()) throw std::runtime_error("truncated");
  const char c = in.front();
  if (c == 'i') {
    const auto e = in.find('e');
    Value out{std::stoll(std::string(in.substr(1, e - 1)))};
    in.remove_prefix(e + 1);
    return out;
  }
  if (c == 'l' || c == 'd') {
    in.remove_prefix(1);
    std::vector<Value> items;
    std::map<std::string, Value> entries;
    std::string last_key;
    while (!in.empty() && in.front() != 'e') {
      if (c == 'l') {
        items.push_back(parse(in));
      } else {
        std::string key = parse(in).bytes();
        if (!entries.empty() && key <= last_key) throw std::runtime_error("keys out of order: " + key);
        last_key = key;
        entries.emplace(key, parse(in));
      }
    }
    if (in.empty()) throw std::runtime_error("unterminated");
    in.remove_prefix(1);
    return c == 'l' ? Value{std::move(items)} : Value{std::move(entries)};
  }
  const auto colon = in.find(':');
  const std::size_t n = std::stoul(std::string(in.substr(0, colon)));
  Value out{std::string(in.substr(colon + 1, n))};
  in.remove_prefix(colon + 1 + n);
  return out;
}

Value decode(const std::string& text) {
  std::string_view in = text;
  Value v = parse(in);
  EXPECT_TRUE(in.empty()) << "trailing bytes in " << text;
  return v;
}

std::string escape(std::string_view raw) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : raw) out += {'%', hex[ch >> 4], hex[ch & 15]};
  return out;
}

InfoHash hash_of(std::uint8_t fill) {
  InfoHash h;
  h.bytes.fill(fill);
  return h;
}

Endpoint v4(std::uint8_t last, std::uint16_t port = 6881) {
  return *Endpoint::parse("10.0.0." + std::to_string(last), port);
}

const Endpoint kLocal = *Endpoint::parse("192.168.1.1", 8080);

struct Announce {
  InfoHash hash = hash_of(1);
  std::uint16_t port = 6881;
  std::string event;
  std::optional<std::uint64_t> left = 100;
  std::optional<unsigned> numwant;
  std::string peer_id = "-XX0001-" + std::string(12, 'a');
  std::string extra;
  std::string query() const {
    std::string q = "info_hash=" + escape(hash.raw()) + "&peer_id=" + escape(peer_id) +
                    "&port=" + std::to_string(port) + "&uploaded=0&downloaded=0";
    if (left) q += "&left=" + std::to_string(*left);
    if (!event.empty()) q += "&event=" + event;
    if (numwant) q += "&numwant=" + std::to_string(*numwant);
    return q + extra;
  }
};

class TrackerTest : public ::testing::Test {
 protected:
  void make(bool open, std::optional<Endpoint> own_address = std::nullopt,
            const std::function<void(Settings&)>& tune = {}) {
    Settings s = Settings::from(Config{});
    s.interval = std::chrono::seconds(100);
    s.min_interval = std::chrono::seconds(10);
    s.numwant = 5;
    s.max_numwant = 8;
    s.open = open;
    s.own_seed_address = own_address;
    if (tune) tune(s);
    tracker = std::make_unique<Tracker>(s, clock);
  }
  Value announce(const Endpoint& client, const Announce& a = {}) {
    std::string body;
    tracker->http_announce(a.query(), client, kLocal, body);
    return decode(body);
  }
  static std::vector<std::string> peers(const Value& reply) {
    std::vector<std::string> out;
    const std::string& compact = reply["peers"].bytes();
    for (std::size_t i = 0; i + 6 <= compact.size(); i += 6) {
      auto b = [&](std::size_t k) { return std::to_string(static_cast<unsigned char>(compact[i + k])); };
      out.push_back(
          b(0) + "." + b(1) + "." + b(2) + "." + b(3) + ":" +
          std::to_string(static_cast<unsigned char>(compact[i + 4]) << 8 | static_cast<unsigned char>(compact[i + 5])));
    }
    return out;
  }

  FakeClock clock;
  std::unique_ptr<Tracker> tracker;
};

TEST_F(TrackerTest, AnnounceReturnsOtherPeersButNeverTheClientItself) {
  make(true);
  auto first = announce(v4(1));
  EXPECT_EQ(first["interval"].integer(), 100);
  EXPECT_EQ(first["min interval"].integer(), 10);
  EXPECT_EQ(first["incomplete"].integer(), 1);
  EXPECT_TRUE(peers(first).empty());
  announce(v4(2));
  auto third = announce(v4(3));
  auto list = peers(third);
  std::sort(list.begin(), list.end());
  EXPECT_EQ(list, (std::vector<std::string>{"10.0.0.1:6881", "10.0.0.2:6881"}));
  EXPECT_EQ(third["incomplete"].integer(), 3);
  // Same address, another port: another peer.
  Announce other_port;
  other_port.port = 7000;
  EXPECT_EQ(peers(announce(v4(3), other_port)).size(), 3u);
}

TEST_F(TrackerTest, TheOperatorSeesTheBusiestSwarmsWithSomeOfTheirPeers) {
  make(true);
  Announce small, big;
  small.hash = hash_of(1);
  big.hash = hash_of(2);
  announce(v4(1), small);
  for (std::uint8_t i = 1; i <= 5; ++i) announce(v4(i), big);
  Announce seed = big;
  seed.left = 0;
  seed.port = 51413;
  announce(*Endpoint::parse("2001:db8::7"), seed);
  const auto one = tracker->busiest_swarms(1, 3);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].hash, hash_of(2));
  EXPECT_EQ(one[0].counts.seeders, 1u);
  EXPECT_EQ(one[0].counts.leechers, 5u);
  ASSERT_EQ(one[0].peers.size(), 3u);  // at most as many as asked, seeders first
  EXPECT_TRUE(one[0].peers[0].seeder);
  EXPECT_EQ(one[0].peers[0].peer.ip_text(), "2001:db8::7");
  EXPECT_EQ(one[0].peers[0].peer.port, 51413);
  EXPECT_FALSE(one[0].peers[1].seeder);
  EXPECT_EQ(one[0].peers[1].peer.ip_text(), "10.0.0.1");
  EXPECT_EQ(one[0].peers[1].peer.port, 6881);
  const auto both = tracker->busiest_swarms(10, 10);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[1].hash, hash_of(1));
  EXPECT_EQ(both[1].peers.size(), 1u);
  EXPECT_TRUE(tracker->busiest_swarms(0, 10).empty());
}

TEST_F(TrackerTest, SeedersGetOnlyLeechers) {
  make(true);
  Announce seed;
  seed.left = 0;
  announce(v4(1), seed);
  announce(v4(2), seed);
  announce(v4(3));
  auto reply = announce(v4(4), seed);
  EXPECT_EQ(peers(reply), std::vector<std::string>{"10.0.0.3:6881"});
  EXPECT_EQ(reply["complete"].integer(), 3);
  EXPECT_EQ(reply["incomplete"].integer(), 1);
}

TEST_F(TrackerTest, StoppedRemovesThePeerAndCompletedCountsADownloadOnce) {
  make(true);
  announce(v4(1));
  announce(v4(2));
  Announce done;
  done.event = "completed";
  done.left = 0;
  announce(v4(1), done);
  announce(v4(1), done);  // repeated: still one download
  EXPECT_EQ(tracker->counts(hash_of(1)), (SwarmCounts{1, 1, 1}));
  Announce stop;
  stop.event = "stopped";
  auto reply = announce(v4(2), stop);
  EXPECT_TRUE(peers(reply).empty());
  EXPECT_EQ(tracker->counts(hash_of(1)), (SwarmCounts{1, 0, 1}));
}

TEST_F(TrackerTest, NumwantHasADefaultAndACap) {
  make(true);
  for (std::uint8_t i = 1; i <= 20; ++i) announce(v4(i));
  EXPECT_EQ(peers(announce(v4(100))).size(), 5u);
  Announce many;
  many.numwant = 1000;
  EXPECT_EQ(peers(announce(v4(101), many)).size(), 8u);
  Announce none;
  none.numwant = 0;
  EXPECT_EQ(peers(announce(v4(102), none)).size(), 0u);
}

TEST_F(TrackerTest, RestrictedModeRefusesUnknownTorrentsAndTracksOwnOnes) {
  make(false);
  auto refused = announce(v4(1));
  ASSERT_TRUE(refused.has("failure reason"));
  EXPECT_NE(refused["failure reason"].bytes().find("unknown torrent"), std::string::npos);
  EXPECT_FALSE(tracker->counts(hash_of(1)));
  tracker->add_own_torrent(hash_of(1));
  EXPECT_FALSE(announce(v4(1)).has("failure reason"));
  EXPECT_EQ(tracker->counts(hash_of(1)), (SwarmCounts{0, 1, 0}));
  tracker->remove_own_torrent(hash_of(1));
  EXPECT_TRUE(announce(v4(1)).has("failure reason"));
}

TEST_F(TrackerTest, OwnSeedIsInEveryPeerListAndCountsAsASeeder) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  EXPECT_TRUE(peers(announce(v4(1))).empty()) << "no seed port yet: the node does not seed";
  tracker->set_seed_port(6999);
  auto reply = announce(v4(2));
  auto list = peers(reply);
  EXPECT_EQ(list.size(), 2u);
  EXPECT_NE(std::find(list.begin(), list.end(), "192.168.1.1:6999"), list.end()) << "the local address names it";
  EXPECT_EQ(reply["complete"].integer(), 1);
  Announce seed;
  seed.left = 0;
  list = peers(announce(v4(3), seed));
  std::sort(list.begin(), list.end());
  EXPECT_EQ(list, (std::vector<std::string>{"10.0.0.1:6881", "10.0.0.2:6881", "192.168.1.1:6999"}))
      << "seeders get the leechers and the node's seed";
  EXPECT_EQ(tracker->counts(hash_of(1))->seeders, 2u);

  // A full reply keeps room for the seed.
  for (std::uint8_t i = 10; i < 30; ++i) announce(v4(i));
  list = peers(announce(v4(30)));
  EXPECT_EQ(list.size(), 5u);
  EXPECT_NE(std::find(list.begin(), list.end(), "192.168.1.1:6999"), list.end());
}

// A child node fetching from this node's swarm gets its pieces from the node's HTTP piece dispatch and
// from its fellow children, not from the node's seed, which would send every child every piece.
TEST_F(TrackerTest, ChildNodesAreNotOfferedTheOwnSeed) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6999);
  Announce child;
  child.peer_id = std::string(cluster::kParentSwarmPeerId) + std::string(12, 'c');
  announce(v4(1), child);
  EXPECT_EQ(peers(announce(v4(2), child)), std::vector<std::string>{"10.0.0.1:6881"});
  EXPECT_EQ(peers(announce(v4(3))).size(), 3u) << "other clients still get the seed";
}

// A magnet client announces left=0 before it has the metadata (aria2 does): the table takes it for a
// seeder, but only the node's seed can give it the info dict, so the seed is in its list all the same.
TEST_F(TrackerTest, MagnetClientsThatAnnounceLeftZeroGetTheOwnSeedInEveryHttpForm) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6999);
  Announce magnet;
  magnet.left = 0;
  magnet.event = "started";
  EXPECT_EQ(peers(announce(v4(1), magnet)), std::vector<std::string>{"192.168.1.1:6999"}) << "compact (BEP 23)";

  Announce dict = magnet;
  dict.extra = "&compact=0";
  auto list = announce(v4(2), dict)["peers"].list();
  ASSERT_EQ(list.size(), 1u) << "the other left=0 peer is a seeder: seeders get no seeders but the node's";
  EXPECT_EQ(list[0]["ip"].bytes(), "192.168.1.1");
  EXPECT_EQ(list[0]["port"].integer(), 6999);

  const Endpoint local6 = *Endpoint::parse("2001:db8::ff", 8080);
  std::string body;
  tracker->http_announce(magnet.query(), *Endpoint::parse("2001:db8::1", 1), local6, body);
  const Value reply = decode(body);
  ASSERT_TRUE(reply.has("peers6")) << body;
  const std::string seed6 = reply["peers6"].bytes();
  ASSERT_EQ(seed6.size(), 18u);
  EXPECT_EQ(static_cast<unsigned char>(seed6[15]), 0xff) << "the seed at the IPv6 address the client reached";
  EXPECT_EQ(static_cast<unsigned char>(seed6[16]) << 8 | static_cast<unsigned char>(seed6[17]), 6999);
  EXPECT_TRUE(reply["peers"].bytes().empty()) << "the IPv4 peers are seeders too";
}

TEST_F(TrackerTest, TheOwnSeedAnnouncingGetsNeitherItselfNorOtherSeeders) {
  make(false, Endpoint::parse("10.9.9.9"));
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6881);
  Announce seed;
  seed.left = 0;
  announce(v4(1), seed);
  announce(v4(2));
  EXPECT_EQ(peers(announce(*Endpoint::parse("10.9.9.9"), seed)), std::vector<std::string>{"10.0.0.2:6881"});
}

TEST_F(TrackerTest, OwnSeedUsesTheBitTorrentListenAddressWhenSpecific) {
  make(false, Endpoint::parse("10.9.9.9"));
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6881);
  EXPECT_EQ(peers(announce(v4(1))), std::vector<std::string>{"10.9.9.9:6881"});
}

// Behind a reverse proxy on the node's host the client reached a loopback address: no peer elsewhere can
// dial that, so the seed is left out (and still counted) until bt_listen names it.
TEST_F(TrackerTest, ALoopbackSeedIsOfferedToLoopbackPeersOnly) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6999);
  Announce leecher;
  std::string body;
  tracker->http_announce(leecher.query(), v4(1), *Endpoint::parse("127.0.0.1", 8080), body);
  EXPECT_TRUE(peers(decode(body)).empty()) << body;
  EXPECT_EQ(decode(body)["complete"].integer(), 1);
  body.clear();
  tracker->http_announce(leecher.query(), *Endpoint::parse("127.0.0.1", 4000), *Endpoint::parse("127.0.0.1", 8080),
                         body);
  EXPECT_EQ(peers(decode(body)), (std::vector<std::string>{"10.0.0.1:6881", "127.0.0.1:6999"}));
}

TEST_F(TrackerTest, HybridTorrentsShareOneSwarmUnderBothHashes) {
  make(false);
  Sha256 v2;
  v2.bytes.fill(2);
  v2.bytes[31] = 7;  // beyond the truncation
  tracker->add_own_torrent(hash_of(1), v2);
  Announce on_v1, on_v2;
  on_v2.hash = truncated(v2);
  announce(v4(1), on_v1);
  auto reply = announce(v4(2), on_v2);
  EXPECT_EQ(peers(reply), std::vector<std::string>{"10.0.0.1:6881"});
  EXPECT_EQ(tracker->counts(truncated(v2)), tracker->counts(hash_of(1)));
  EXPECT_EQ(tracker->swarm_count(), 1u);
  tracker->remove_own_torrent(hash_of(1));
  EXPECT_TRUE(announce(v4(3), on_v2).has("failure reason"));
}

TEST_F(TrackerTest, PeersExpireAfterTwoIntervalsWithoutSleeping) {
  make(true);
  announce(v4(1));
  clock.advance(std::chrono::seconds(150));
  announce(v4(2));
  clock.advance(std::chrono::seconds(50));  // peer 1 seen 200 s (2 intervals) ago: still there
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 2u);
  clock.advance(std::chrono::seconds(30));  // 230 s > 2.25 intervals
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 1u);
  clock.advance(std::chrono::seconds(1000));
  tracker->sweep();
  EXPECT_FALSE(tracker->counts(hash_of(1))) << "an empty swarm of open mode is forgotten";
  EXPECT_EQ(tracker->swarm_count(), 0u);
}

void with_full_scrape(Settings& s) {
  s.full_scrape = true;
}

TEST_F(TrackerTest, AnnouncesSweepSwarmsNobodyTouches) {
  make(true, std::nullopt, with_full_scrape);
  for (std::uint8_t i = 1; i <= 100; ++i) {
    Announce a;
    a.hash = hash_of(i);
    announce(v4(1), a);
  }
  EXPECT_EQ(tracker->swarm_count(), 100u);
  clock.advance(std::chrono::seconds(1000));
  Announce busy;
  busy.hash = hash_of(200);
  for (int i = 0; i < 70; ++i) announce(v4(2), busy);  // 64 shards: one per announce
  std::string body;
  tracker->http_scrape("", body);
  EXPECT_EQ(decode(body)["files"].dict().size(), 1u);
}

TEST_F(TrackerTest, BadParametersGetAFailureReason) {
  make(true);
  auto failure = [&](const std::string& query) {
    std::string body;
    tracker->http_announce(query, v4(1), kLocal, body);
    auto v = decode(body);
    return v.has("failure reason") ? v["failure reason"].bytes() : std::string("(none)");
  };
  const std::string hash = "info_hash=" + escape(hash_of(1).raw());
  const std::string id = "&peer_id=" + std::string(20, 'p');
  EXPECT_EQ(failure(hash + id + "&port=1"), "(none)");
  EXPECT_EQ(failure("info_hash=abc" + id + "&port=1"), "invalid info_hash");
  EXPECT_EQ(failure(hash + "%41" + id + "&port=1"), "invalid info_hash");
  EXPECT_EQ(failure("info_hash=%4" + id + "&port=1"), "invalid info_hash");
  EXPECT_EQ(failure(id + "&port=1"), "missing info_hash");
  EXPECT_EQ(failure(hash + "&port=1"), "missing peer_id");
  EXPECT_EQ(failure(hash + "&peer_id=short&port=1"), "invalid peer_id");
  EXPECT_EQ(failure(hash + id), "missing port");
  EXPECT_EQ(failure(hash + id + "&port=0"), "invalid port");
  EXPECT_EQ(failure(hash + id + "&port=65536"), "invalid port");
  EXPECT_EQ(failure(hash + id + "&port=x"), "invalid port");
  EXPECT_EQ(failure(hash + id + "&port=1&numwant=-1"), "invalid numwant");
  EXPECT_EQ(failure(hash + id + "&port=1&left=many"), "invalid left");
  EXPECT_EQ(failure(""), "missing info_hash");
  EXPECT_EQ(failure("&&&==&"), "missing info_hash");
}

TEST_F(TrackerTest, IPv6PeersGoInPeers6AndTheDictionaryModelWorks) {
  make(true);
  announce(v4(1));
  announce(*Endpoint::parse("2001:db8::1", 1));
  auto mapped = *Endpoint::parse("::ffff:10.0.0.7", 1);
  EXPECT_FALSE(mapped.v6) << "IPv4-mapped addresses are IPv4";
  auto reply = announce(*Endpoint::parse("2001:db8::2", 1));
  ASSERT_TRUE(reply.has("peers6"));
  EXPECT_EQ(reply["peers6"].bytes().size(), 18u);
  EXPECT_EQ(reply["peers"].bytes().size(), 6u);

  Announce dict;
  dict.extra = "&compact=0";
  auto list = announce(v4(3), dict)["peers"].list();
  ASSERT_EQ(list.size(), 3u);
  std::vector<std::string> ips;
  for (const auto& p : list) ips.push_back(p["ip"].bytes() + " " + std::to_string(p["port"].integer()));
  std::sort(ips.begin(), ips.end());
  EXPECT_EQ(ips, (std::vector<std::string>{"10.0.0.1 6881", "2001:db8::1 6881", "2001:db8::2 6881"}));
}

TEST_F(TrackerTest, ScrapeReportsEachAskedSwarmAndAllSwarmsWhenNoneIsAsked) {
  make(true, std::nullopt, with_full_scrape);
  Announce a, b;
  b.hash = hash_of(9);
  b.left = 0;
  announce(v4(1), a);
  announce(v4(2), b);
  std::string body;
  tracker->http_scrape("info_hash=" + escape(hash_of(9).raw()) + "&info_hash=" + escape(hash_of(1).raw()) +
                           "&info_hash=" + escape(hash_of(1).raw()) + "&info_hash=" + escape(hash_of(5).raw()),
                       body);
  auto files = decode(body)["files"];  // decode() checks the keys are sorted
  ASSERT_EQ(files.dict().size(), 3u) << "an unknown hash of open mode reads as zeros";
  EXPECT_EQ(files[std::string(hash_of(9).raw())]["complete"].integer(), 1);
  EXPECT_EQ(files[std::string(hash_of(1).raw())]["incomplete"].integer(), 1);
  EXPECT_EQ(files[std::string(hash_of(5).raw())]["downloaded"].integer(), 0);
  tracker->http_scrape("", body);
  EXPECT_EQ(decode(body)["files"].dict().size(), 2u);
  tracker->http_scrape("info_hash=short", body);
  EXPECT_TRUE(decode(body).has("failure reason"));
}

TEST_F(TrackerTest, RestrictedScrapeShowsOnlyOwnTorrentsWithTheOwnSeed) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(1);
  std::string body;
  tracker->http_scrape("info_hash=" + escape(hash_of(1).raw()) + "&info_hash=" + escape(hash_of(2).raw()), body);
  auto files = decode(body)["files"];
  ASSERT_EQ(files.dict().size(), 1u);
  EXPECT_EQ(files[std::string(hash_of(1).raw())]["complete"].integer(), 1);
}

// BEP 15 packets.
struct Packet {
  std::vector<std::uint8_t> bytes;
  Packet& u32(std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<std::uint8_t>(v >> s));
    return *this;
  }
  Packet& u64(std::uint64_t v) { return u32(static_cast<std::uint32_t>(v >> 32)).u32(static_cast<std::uint32_t>(v)); }
  Packet& raw(std::string_view s) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  Packet& u16(std::uint16_t v) {
    bytes.push_back(static_cast<std::uint8_t>(v >> 8));
    bytes.push_back(static_cast<std::uint8_t>(v));
    return *this;
  }
};

std::uint32_t be32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) << 24 | static_cast<std::uint32_t>(b[at + 1]) << 16 |
         static_cast<std::uint32_t>(b[at + 2]) << 8 | b[at + 3];
}

class UdpTrackerTest : public TrackerTest {
 protected:
  std::vector<std::uint8_t> send(const Packet& p, const Endpoint& client) {
    std::vector<std::uint8_t> reply(Tracker::kUdpReplyCapacity);
    reply.resize(tracker->udp_datagram(p.bytes, client, kLocal, reply));
    return reply;
  }
  std::uint64_t connect(const Endpoint& client) {
    auto r = send(Packet{}.u64(0x41727101980ULL).u32(0).u32(77), client);
    EXPECT_EQ(r.size(), 16u);
    EXPECT_EQ(be32(r, 0), 0u);
    EXPECT_EQ(be32(r, 4), 77u);
    return static_cast<std::uint64_t>(be32(r, 8)) << 32 | be32(r, 12);
  }
  static Packet announce_packet(std::uint64_t id, const InfoHash& h, std::uint16_t port, std::uint64_t left = 1,
                                std::uint32_t event = 2, std::int32_t numwant = -1,
                                const std::string& peer_id = std::string(20, 'p')) {
    return Packet{}
        .u64(id)
        .u32(1)
        .u32(5)
        .raw(h.raw())
        .raw(peer_id)
        .u64(0)
        .u64(left)
        .u64(0)
        .u32(event)
        .u32(0)
        .u32(0)
        .u32(static_cast<std::uint32_t>(numwant))
        .u16(port);
  }
  static std::string error_of(const std::vector<std::uint8_t>& r) {
    if (r.size() < 8 || be32(r, 0) != 3) return "(not an error)";
    return std::string(r.begin() + 8, r.end());
  }
};

TEST_F(UdpTrackerTest, ChildNodesAreNotOfferedTheOwnSeed) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6999);
  const Endpoint child = v4(1, 5000), client = v4(2, 5000);
  const std::string child_id = std::string(cluster::kParentSwarmPeerId) + std::string(12, 'c');
  auto r = send(announce_packet(connect(child), hash_of(1), 6881, 1, 2, -1, child_id), child);
  ASSERT_EQ(r.size(), 20u) << "no peers for the child, not even the seed: " << error_of(r);
  r = send(announce_packet(connect(client), hash_of(1), 6882), client);
  ASSERT_EQ(r.size(), 32u) << "the child and the node's seed: " << error_of(r);
}

TEST_F(UdpTrackerTest, ConnectAnnounceScrape) {
  make(true);
  const Endpoint a = v4(1, 5000), b = v4(2, 5000);
  const auto id_a = connect(a), id_b = connect(b);
  EXPECT_NE(id_a, id_b);
  auto r = send(announce_packet(id_a, hash_of(1), 6881), a);
  ASSERT_EQ(r.size(), 20u) << error_of(r);
  EXPECT_EQ(be32(r, 0), 1u);
  EXPECT_EQ(be32(r, 4), 5u);
  EXPECT_EQ(be32(r, 8), 100u);
  EXPECT_EQ(be32(r, 12), 1u);  // leechers
  EXPECT_EQ(be32(r, 16), 0u);  // seeders
  r = send(announce_packet(id_b, hash_of(1), 6882, 0, 1), b);
  ASSERT_EQ(r.size(), 26u) << error_of(r);
  EXPECT_EQ(std::vector<std::uint8_t>(r.begin() + 20, r.end()), (std::vector<std::uint8_t>{10, 0, 0, 1, 0x1a, 0xe1}));
  EXPECT_EQ(be32(r, 16), 1u);

  r = send(Packet{}.u64(id_a).u32(2).u32(9).raw(hash_of(1).raw()).raw(hash_of(3).raw()), a);
  ASSERT_EQ(r.size(), 8u + 24u);
  EXPECT_EQ(be32(r, 8), 1u);   // seeders
  EXPECT_EQ(be32(r, 12), 1u);  // completed
  EXPECT_EQ(be32(r, 16), 1u);  // leechers
  EXPECT_EQ(be32(r, 20), 0u);
}

TEST_F(UdpTrackerTest, ConnectionIdsAreBoundToTheAddressAndExpire) {
  make(true);
  const Endpoint a = v4(1, 5000);
  const auto id = connect(a);
  // A bad connection id gets no answer at all: its source address is unproven.
  EXPECT_TRUE(send(announce_packet(id, hash_of(1), 1), v4(1, 5001)).empty());
  EXPECT_TRUE(send(announce_packet(id ^ 1, hash_of(1), 1), a).empty());
  clock.advance(std::chrono::seconds(120));
  EXPECT_EQ(error_of(send(announce_packet(id, hash_of(1), 1), a)), "(not an error)") << "the previous epoch counts";
  clock.advance(std::chrono::seconds(240));
  EXPECT_TRUE(send(announce_packet(id, hash_of(1), 1), a).empty());
  std::string metrics;
  tracker->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_tracker_errors_total{transport=\"udp\",kind=\"bad_connection_id\"} 3"),
            std::string::npos)
      << metrics;
}

TEST_F(UdpTrackerTest, MalformedPacketsGetErrorsOrNothing) {
  make(false);
  const Endpoint a = v4(1, 5000);
  for (std::size_t n = 0; n < 16; ++n) {
    Packet p;
    p.bytes.assign(n, 0);
    EXPECT_TRUE(send(p, a).empty()) << n << " bytes";
  }
  EXPECT_TRUE(send(Packet{}.u64(1234).u32(0).u32(1), a).empty()) << "not a connect: the address is unproven";
  const auto id = connect(a);
  auto short_announce = announce_packet(id, hash_of(1), 1);
  short_announce.bytes.resize(97);
  EXPECT_EQ(error_of(send(short_announce, a)), "announce too short");
  EXPECT_EQ(error_of(send(announce_packet(id, hash_of(1), 0), a)), "invalid port");
  EXPECT_EQ(error_of(send(announce_packet(id, hash_of(1), 1, 1, 9), a)), "invalid event");
  EXPECT_EQ(error_of(send(announce_packet(id, hash_of(1), 1), a)), "unknown torrent");
  EXPECT_EQ(error_of(send(Packet{}.u64(id).u32(2).u32(1), a)), "scrape without info-hashes");
  EXPECT_EQ(error_of(send(Packet{}.u64(id).u32(9).u32(1), a)), "unknown action");
}

TEST_F(UdpTrackerTest, IPv6AnnouncesGetEighteenBytePeersAndTheOwnSeed) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6881);
  const Endpoint a = *Endpoint::parse("2001:db8::1", 5000), b = *Endpoint::parse("2001:db8::2", 5000);
  send(announce_packet(connect(a), hash_of(1), 7000), a);
  std::vector<std::uint8_t> reply(Tracker::kUdpReplyCapacity);
  const Endpoint local6 = *Endpoint::parse("2001:db8::ff", 6969);
  reply.resize(tracker->udp_datagram(announce_packet(connect(b), hash_of(1), 7000).bytes, b, local6, reply));
  ASSERT_EQ(reply.size(), 20u + 2 * 18u) << error_of(reply);
  EXPECT_EQ(be32(reply, 16), 1u) << "the own seed";
  EXPECT_EQ(reply[20 + 18 + 15], 0xff) << "the own seed at the local address";
}

TEST_F(UdpTrackerTest, MagnetClientsThatAnnounceLeftZeroGetTheOwnSeedOverIPv4AndIPv6) {
  make(false);
  tracker->add_own_torrent(hash_of(1));
  tracker->set_seed_port(6881);
  const Endpoint a = v4(1, 5000);
  auto r = send(announce_packet(connect(a), hash_of(1), 7000, 0), a);
  ASSERT_EQ(r.size(), 26u) << error_of(r);
  EXPECT_EQ(std::vector<std::uint8_t>(r.begin() + 20, r.end()),
            (std::vector<std::uint8_t>{192, 168, 1, 1, 0x1a, 0xe1}));

  const Endpoint b = *Endpoint::parse("2001:db8::1", 5000);
  const Endpoint local6 = *Endpoint::parse("2001:db8::ff", 6969);
  std::vector<std::uint8_t> reply(Tracker::kUdpReplyCapacity);
  reply.resize(tracker->udp_datagram(announce_packet(connect(b), hash_of(1), 7000, 0).bytes, b, local6, reply));
  ASSERT_EQ(reply.size(), 20u + 18u) << error_of(reply);
  EXPECT_EQ(reply[20 + 15], 0xff) << "the own seed at the local address";
  EXPECT_EQ(reply[20 + 16] << 8 | reply[20 + 17], 6881);
}

TEST_F(TrackerTest, MetricsNameTheOwnSwarms) {
  make(false);
  tracker->add_own_torrent(hash_of(0xab));
  tracker->set_seed_port(1);
  Announce a;
  a.hash = hash_of(0xab);
  announce(v4(1), a);
  announce(v4(1), Announce{});
  std::string out;
  tracker->render_metrics(out);
  const std::string hex(40, 'a');
  EXPECT_NE(out.find("inferllama_tracker_swarm_peers{info_hash=\"" + hash_of(0xab).hex() + "\",kind=\"seeders\"} 1"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("inferllama_tracker_swarm_peers{info_hash=\"" + hash_of(0xab).hex() + "\",kind=\"leechers\"} 1"),
            std::string::npos);
  EXPECT_NE(out.find("inferllama_tracker_announces_total{transport=\"http\",result=\"ok\"} 1"), std::string::npos);
  EXPECT_NE(out.find("inferllama_tracker_announces_total{transport=\"http\",result=\"unknown_torrent\"} 1"),
            std::string::npos);
  EXPECT_NE(out.find("inferllama_tracker_swarms 1"), std::string::npos);
  EXPECT_NE(out.find("inferllama_tracker_peers{kind=\"leechers\"} 1"), std::string::npos);
}

TEST_F(UdpTrackerTest, NoReplyToAnUnprovenAddressIsLargerThanItsRequest) {
  // Forged sources must not be able to aim the tracker at someone: before a connection id proves the
  // address, only a connect is answered, with 16 bytes for at least 16.
  make(true);
  std::mt19937_64 random(7);
  for (int i = 0; i < 20000; ++i) {
    Packet p;
    const std::uint64_t id = i % 3 == 0 ? 0x41727101980ULL : random();
    p.u64(id).u32(static_cast<std::uint32_t>(random() % 5)).u32(static_cast<std::uint32_t>(random()));
    p.bytes.resize(p.bytes.size() + random() % 120);
    const Endpoint forged = v4(static_cast<std::uint8_t>(i), static_cast<std::uint16_t>(1 + i));
    const auto reply = send(p, forged);
    EXPECT_LE(reply.size(), p.bytes.size()) << "action " << be32(p.bytes, 8);
    if (!reply.empty()) {
      EXPECT_EQ(be32(reply, 0), 0u) << "only a connect is answered";
    }
  }
}

TEST_F(TrackerTest, FullScrapeIsOffByDefault) {
  make(true);
  announce(v4(1));
  std::string body;
  tracker->http_scrape("", body);
  auto reply = decode(body);
  ASSERT_TRUE(reply.has("failure reason")) << body;
  EXPECT_NE(reply["failure reason"].bytes().find("full scrape is disabled"), std::string::npos);
  tracker->http_scrape("info_hash=" + escape(hash_of(1).raw()), body);
  EXPECT_EQ(decode(body)["files"].dict().size(), 1u) << "a scrape that names its swarms is answered";
  std::string metrics;
  tracker->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_tracker_refusals_total{reason=\"full_scrape\"} 1"), std::string::npos) << metrics;
}

TEST_F(TrackerTest, AFullSwarmAnswersNewPeersWithoutStoringThem) {
  make(true, std::nullopt, [](Settings& s) { s.max_peers_per_swarm = 4; });
  for (std::uint8_t i = 1; i <= 4; ++i) announce(v4(i));
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 4u);
  const auto late = announce(v4(5));
  EXPECT_FALSE(late.has("failure reason"));
  EXPECT_EQ(peers(late).size(), 4u) << "a peer the swarm has no room for still gets peers";
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 4u);
  Announce done;
  done.left = 0;
  done.event = "completed";
  announce(v4(1), done);  // a peer already in stays in and may change its state
  EXPECT_EQ(tracker->counts(hash_of(1)), (SwarmCounts{1, 3, 1}));
  Announce stop;
  stop.event = "stopped";
  announce(v4(2), stop);
  announce(v4(5));
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 3u) << "a place freed is taken by the next new peer";
  for (const auto& p : peers(announce(v4(6)))) EXPECT_NE(p, "10.0.0.6:6881");
  std::string metrics;
  tracker->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_tracker_refusals_total{reason=\"swarm_full\"} 2"), std::string::npos) << metrics;
}

TEST_F(TrackerTest, OneAddressHoldsAFewPlacesOfASwarmAndAnIPv6Slash64IsOneAddress) {
  make(true, std::nullopt, [](Settings& s) { s.max_peers_per_address = 3; });
  auto announce_port = [&](const Endpoint& client, std::uint16_t port, std::uint8_t swarm = 1) {
    Announce a;
    a.hash = hash_of(swarm);
    a.port = port;
    return announce(client, a);
  };
  for (std::uint16_t port = 1000; port < 1100; ++port) announce_port(v4(1), port);
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 3u);
  // The IPv4-mapped form of the same address is the same address.
  announce_port(*Endpoint::parse("::ffff:10.0.0.1"), 2000);
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 3u);
  announce_port(v4(2), 2000);
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 4u) << "another address has its own places";
  // Every interface id of one /64 is one address; the next /64 is another.
  for (int i = 1; i <= 50; ++i) {
    char text[64];
    std::snprintf(text, sizeof text, "2001:db8:0:1:%x:%x::1", i, i * 7);
    announce_port(*Endpoint::parse(text), 3000);
  }
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 7u);
  announce_port(*Endpoint::parse("2001:db8:0:2::1"), 3000);
  EXPECT_EQ(tracker->counts(hash_of(1))->leechers, 8u);
  announce_port(v4(1), 1000, 2);
  EXPECT_EQ(tracker->counts(hash_of(2))->leechers, 1u) << "the cap is per swarm";
  std::string metrics;
  tracker->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_tracker_refusals_total{reason=\"address_full\"} 145"), std::string::npos)
      << metrics;
}

TEST_F(TrackerTest, OpenModeStartsNoSwarmBeyondItsCapButOwnTorrentsAlwaysTrack) {
  make(true, std::nullopt, [](Settings& s) { s.max_swarms = 3; });
  for (std::uint8_t i = 1; i <= 3; ++i) {
    Announce a;
    a.hash = hash_of(i);
    EXPECT_FALSE(announce(v4(i), a).has("failure reason"));
  }
  Announce fourth;
  fourth.hash = hash_of(4);
  const auto refused = announce(v4(4), fourth);
  ASSERT_TRUE(refused.has("failure reason"));
  EXPECT_NE(refused["failure reason"].bytes().find("too many swarms"), std::string::npos);
  EXPECT_FALSE(tracker->counts(hash_of(4)));
  Announce again;
  again.hash = hash_of(2);
  EXPECT_FALSE(announce(v4(9), again).has("failure reason")) << "swarms already tracked take new peers";

  // The node's own torrents are tracked whatever open mode holds.
  tracker->add_own_torrent(hash_of(5));
  Announce own;
  own.hash = hash_of(5);
  EXPECT_FALSE(announce(v4(5), own).has("failure reason"));
  EXPECT_EQ(tracker->counts(hash_of(5))->leechers, 1u);
  // A swarm that becomes the node's own frees its open-mode place.
  tracker->add_own_torrent(hash_of(3));
  EXPECT_FALSE(announce(v4(4), fourth).has("failure reason"));

  // Swarms whose peers are gone give their places back, even before the sweep passes them.
  clock.advance(std::chrono::seconds(1000));
  for (std::uint8_t i = 6; i <= 8; ++i) {
    Announce fresh;
    fresh.hash = hash_of(i);
    EXPECT_FALSE(announce(v4(i), fresh).has("failure reason"));
  }
  std::string metrics;
  tracker->render_metrics(metrics);
  EXPECT_NE(metrics.find("inferllama_tracker_refusals_total{reason=\"too_many_swarms\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("inferllama_tracker_open_swarms 3"), std::string::npos) << metrics;
}

TEST_F(UdpTrackerTest, NewSwarmsBeyondTheCapGetAnErrorOverUdp) {
  make(true, std::nullopt, [](Settings& s) { s.max_swarms = 1; });
  const Endpoint a = v4(1, 5000);
  const auto id = connect(a);
  EXPECT_EQ(error_of(send(announce_packet(id, hash_of(1), 1), a)), "(not an error)");
  EXPECT_NE(error_of(send(announce_packet(id, hash_of(2), 1), a)).find("too many swarms"), std::string::npos);
}

TEST_F(TrackerTest, AFloodOfPeersAddressesAndSwarmsStaysUnderTheBound) {
  // Many distinct peers, addresses and info-hashes over both transports, with time passing: the table
  // never holds more than its caps allow.
  constexpr unsigned kSwarms = 50, kPerSwarm = 40, kPerAddress = 4;
  make(true, std::nullopt, [](Settings& s) {
    s.max_swarms = kSwarms;
    s.max_peers_per_swarm = kPerSwarm;
    s.max_peers_per_address = kPerAddress;
  });
  for (std::uint8_t i = 0; i < 3; ++i) tracker->add_own_torrent(hash_of(static_cast<std::uint8_t>(0xf0 + i)));
  std::mt19937_64 random(11);
  std::size_t most_swarms = 0, most_peers = 0;
  for (int round = 0; round < 40000; ++round) {
    Announce a;
    // A few hot swarms (own ones among them) and a long tail of fresh hashes.
    if (round % 4 == 0) {
      for (auto& b : a.hash.bytes) b = static_cast<std::uint8_t>(random());
    } else {
      a.hash = hash_of(static_cast<std::uint8_t>(0xf0 + random() % 6));
    }
    a.port = static_cast<std::uint16_t>(1 + random() % 65535);
    a.left = random() % 2;
    Endpoint client;
    if (random() % 2) {
      client = *Endpoint::parse("10." + std::to_string(random() % 4) + "." + std::to_string(random() % 256) + "." +
                                std::to_string(random() % 256));
    } else {
      char text[64];
      std::snprintf(text, sizeof text, "2001:db8:%x:%x::%x", static_cast<unsigned>(random() % 8),
                    static_cast<unsigned>(random() % 65536), static_cast<unsigned>(random() % 65536));
      client = *Endpoint::parse(text);
    }
    announce(client, a);
    if (round % 1000 == 0) {
      most_swarms = std::max(most_swarms, tracker->swarm_count());
      most_peers = std::max(most_peers, tracker->peer_count());
      clock.advance(std::chrono::seconds(40));
    }
  }
  most_swarms = std::max(most_swarms, tracker->swarm_count());
  most_peers = std::max(most_peers, tracker->peer_count());
  EXPECT_LE(most_swarms, kSwarms + 3);
  EXPECT_LE(most_peers, (kSwarms + 3) * kPerSwarm);
  EXPECT_GE(most_swarms, kSwarms) << "the flood did reach the cap";
  for (std::uint8_t i = 0; i < 3; ++i) {
    const auto own = tracker->counts(hash_of(static_cast<std::uint8_t>(0xf0 + i)));
    ASSERT_TRUE(own) << "own torrents stay tracked";
    EXPECT_LE(own->seeders + own->leechers, kPerSwarm);
  }
}

}  // namespace
}  // namespace inferllama::tracker
