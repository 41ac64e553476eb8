#pragma once
// The swarm table: info-hash -> peers, in 64 shards with a mutex each (an announce holds one shard
// lock for a binary search, an insert or update, and a copy of the peers it returns).
//
// A peer is its compact address (6 bytes IPv4, 18 bytes IPv6: address then port, network order) and
// the time bucket it last announced in; each swarm keeps seeders and leechers of each family in
// sorted vectors (the vector a peer is in is its seeder flag). Buckets are a quarter interval long;
// a peer lives kLifetimeBuckets - 1 to kLifetimeBuckets buckets after its last announce (2 to 2.25 x
// interval: one missed announce is forgiven, two are not). A swarm drops its
// expired peers the first time it is touched in a new bucket; swarms nobody touches are swept by the
// announces passing by, one shard per announce until the table has been swept once in the bucket. So
// no announce scans more than its own swarm and one shard.
//
// The table is bounded: a swarm holds at most Limits::peers_per_swarm peers and at most
// Limits::peers_per_address of one address (an IPv4 address, or an IPv6 /64: its peers sit next to each
// other in the sorted vectors); a new peer beyond either cap is not stored but still gets its peer list.
// Open mode holds at most Limits::open_swarms swarms besides the node's own, which are always tracked.
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "inferllama/tracker.hpp"
#include "tracker/siphash.hpp"

namespace inferllama::tracker {

using Compact4 = std::array<std::uint8_t, 6>;
using Compact6 = std::array<std::uint8_t, 18>;

enum class Event { none, started, stopped, completed };

// The tracker counts time in whole seconds of its clock.
inline std::int64_t seconds_of(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
}

struct PeerAnnounce {
  InfoHash hash;
  Endpoint peer;
  Event event = Event::none;
  bool seeder = false;
  unsigned numwant = 0;
  bool parent_swarm = false;  // a node fetching from this node (kParentSwarmPeerId): not given the own seed
};

// Where an announce's peers go: compact records of each family, at most their spans' sizes.
struct PeerOutput {
  std::span<Compact4> v4;
  std::span<Compact6> v6;
  bool prefer_v6 = false;  // fill from the IPv6 peers first (the client came over IPv6)
};

struct Limits {
  std::size_t peers_per_swarm = 5000;
  std::size_t peers_per_address = 16;  // in one swarm
  std::size_t open_swarms = 1000;      // open mode, the node's own torrents not counted
};

struct AnnounceOutcome {
  enum class Result { ok, unknown_torrent, too_many_swarms } result = Result::ok;
  // A new peer the swarm had no room for: answered with peers, not stored.
  enum class Unstored { no, swarm_full, address_full } unstored = Unstored::no;
  SwarmCounts counts;          // the own seed not included
  bool own = false;            // one of the node's own torrents
  std::size_t v4 = 0, v6 = 0;  // peers written
};

struct SwarmState {
  SwarmCounts counts;  // the own seed not included
  bool own = false;
};

struct TableTotals {
  std::size_t swarms = 0;
  std::uint64_t seeders = 0, leechers = 0;
};

// Unstored::swarm_full and address_full: the swarm's size and the announcing address's share of it.
struct PeerLimits {
  std::size_t swarm_peers;
  std::size_t per_swarm;
  std::size_t per_address;
};

class SwarmTable {
 public:
  static constexpr std::size_t kShards = 64;
  static constexpr std::uint64_t kLifetimeBuckets = 9;

  SwarmTable(bool open, const Limits& limits, std::chrono::seconds bucket_length, const Clock& clock,
             const SipKey& key);

  AnnounceOutcome announce(const PeerAnnounce& request, const PeerOutput& out);
  // nullopt: not tracked (an unknown hash in restricted mode, or a swarm that does not exist yet).
  std::optional<SwarmState> state(const InfoHash& hash);
  // own counts once per own torrent; for a full scrape and /metrics.
  template <class Fn>  // fn(const InfoHash&, const SwarmCounts&, bool own)
  void each_swarm(Fn&& fn);

  void add_own(const InfoHash& v1, const std::optional<InfoHash>& alias);
  void remove_own(const InfoHash& v1);

  void sweep();  // every shard, now
  TableTotals totals();
  // The `max_swarms` swarms with the most peers (aliases not counted twice), each with at most `max_peers` of
  // its peers, seeders first: the operator's view.
  std::vector<SwarmPeers> busiest(std::size_t max_swarms, std::size_t max_peers);
  std::size_t open_swarms() const { return open_swarms_.load(std::memory_order_relaxed); }

 private:
  template <std::size_t N>
  struct Peer {
    std::array<std::uint8_t, N> address;
    std::uint8_t seen;  // the time bucket of its last announce, modulo 256
  };
  template <std::size_t N>
  struct PeerSet {
    std::vector<Peer<N>> seeders, leechers;  // sorted by address
  };
  struct Swarm {
    PeerSet<6> v4;
    PeerSet<18> v6;
    std::uint64_t downloaded = 0;
    std::uint64_t swept_bucket = 0;
    bool own = false;
    std::optional<InfoHash> alias_of;  // set: this entry only points at the v1 swarm of a hybrid torrent
    std::optional<InfoHash> alias;     // the v1 swarm of a hybrid torrent: its truncated v2 hash
    SwarmCounts counts() const;
    bool empty() const;
  };
  struct HashOf {
    const SipKey* key;
    std::size_t operator()(const InfoHash& h) const { return siphash24(*key, h.bytes); }
  };
  struct alignas(64) Shard {
    std::mutex mutex;
    std::unordered_map<InfoHash, Swarm, HashOf> swarms;
    explicit Shard(const SipKey* key) : swarms(16, HashOf{key}) {}
  };

  Shard& shard_of(const InfoHash& h);
  void sweep_shard(Shard& shard, std::uint64_t bucket);
  void sweep_step();  // the next shard of this bucket's pass, if any is left
  std::uint64_t current_bucket() const;
  void expire(Swarm& swarm, std::uint64_t bucket);
  // The swarm `hash` names under `lock` (following an alias to its shard); null if none. With `create`
  // (open mode), a missing swarm is made if the open-mode cap has room; `at_cap` says it had none.
  Swarm* find(const InfoHash& hash, std::unique_lock<std::mutex>& lock, bool create, bool& at_cap);
  bool claim_open_swarm();
  // A full sweep, at most once per bucket: the swarm cap is reached, and swarms whose peers all expired
  // may still hold slots. False if this bucket's was done already.
  bool reclaim_once();
  template <std::size_t N>
  static AnnounceOutcome::Unstored update(PeerSet<N>& set, const std::array<std::uint8_t, N>& address,
                                          const PeerAnnounce& request, std::uint8_t seen, std::uint64_t& downloaded,
                                          const PeerLimits& limits);
  template <std::size_t N>
  static std::size_t peers_of_address(const PeerSet<N>& set, const std::array<std::uint8_t, N>& address);
  template <std::size_t N>
  static std::size_t select(const PeerSet<N>& set, bool for_seeder, const std::array<std::uint8_t, N>* self,
                            std::span<std::array<std::uint8_t, N>> out, std::size_t want);
  template <std::size_t N>
  static void merge(PeerSet<N>& into, PeerSet<N>& from);
  template <std::size_t N>
  static void list_peers(const std::vector<Peer<N>>& peers, bool seeders, std::size_t max_peers,
                         std::vector<ListedPeer>& out);

  bool open_;
  Limits limits_;
  std::chrono::seconds bucket_length_;
  const Clock& clock_;
  SipKey key_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<std::uint64_t> sweep_position_{0};  // bucket << 8 | the next shard to sweep in it
  std::atomic<std::size_t> open_swarms_{0};       // swarms neither own nor aliases
  std::atomic<std::uint64_t> reclaimed_bucket_{0};  // the bucket of the last full sweep at the cap, plus 1
};

Compact4 compact4(const Endpoint& e);
Compact6 compact6(const Endpoint& e);

template <class Fn>
void SwarmTable::each_swarm(Fn&& fn) {
  const std::uint64_t bucket = current_bucket();
  for (auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    for (auto& [hash, swarm] : shard->swarms) {
      if (swarm.alias_of) continue;
      expire(swarm, bucket);
      fn(hash, swarm.counts(), swarm.own);
    }
  }
}

}  // namespace inferllama::tracker
