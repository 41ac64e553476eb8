#include "tracker/swarm_table.hpp"

#include <algorithm>
#include <cstring>
#include <random>

namespace inferllama::tracker {
namespace {

// Where a reply's peer list starts: a per-thread xorshift, so every peer gets its turn in big swarms.
std::size_t random_below(std::size_t n) {
  thread_local std::uint64_t state = [] {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32 | device()) | 1;
  }();
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return static_cast<std::size_t>(state % n);
}

template <class Peer, std::size_t N>
bool address_less(const Peer& p, const std::array<std::uint8_t, N>& a) {
  return std::memcmp(p.address.data(), a.data(), N) < 0;
}

}  // namespace

Compact4 compact4(const Endpoint& e) {
  return {e.ip[0],
          e.ip[1],
          e.ip[2],
          e.ip[3],
          static_cast<std::uint8_t>(e.port >> 8),
          static_cast<std::uint8_t>(e.port & 0xff)};
}

Compact6 compact6(const Endpoint& e) {
  Compact6 c;
  std::memcpy(c.data(), e.ip.data(), 16);
  c[16] = static_cast<std::uint8_t>(e.port >> 8);
  c[17] = static_cast<std::uint8_t>(e.port & 0xff);
  return c;
}

SwarmCounts SwarmTable::Swarm::counts() const {
  return {static_cast<std::uint32_t>(v4.seeders.size() + v6.seeders.size()),
          static_cast<std::uint32_t>(v4.leechers.size() + v6.leechers.size()), downloaded};
}

bool SwarmTable::Swarm::empty() const {
  return v4.seeders.empty() && v4.leechers.empty() && v6.seeders.empty() && v6.leechers.empty();
}

SwarmTable::SwarmTable(bool open, const Limits& limits, std::chrono::seconds bucket_length, const Clock& clock,
                       const SipKey& key)
    : open_(open),
      limits_(limits),
      bucket_length_(std::max(bucket_length, std::chrono::seconds(1))), clock_(clock), key_(key) {
  shards_.reserve(kShards);
  for (std::size_t i = 0; i < kShards; ++i) shards_.push_back(std::make_unique<Shard>(&key_));
}

SwarmTable::Shard& SwarmTable::shard_of(const InfoHash& h) {
  // The map hashes with the key too; the shard takes other bits of the same MAC.
  return *shards_[(siphash24(key_, h.bytes) >> 58) % kShards];
}

std::uint64_t SwarmTable::current_bucket() const {
  const auto now = seconds_of(clock_);
  return now <= 0 ? 0 : static_cast<std::uint64_t>(now) / static_cast<std::uint64_t>(bucket_length_.count());
}

void SwarmTable::expire(Swarm& swarm, std::uint64_t bucket) {
  // A caller that read the clock before another moved this swarm on holds an older bucket: nothing to do.
  if (bucket <= swarm.swept_bucket) return;
  // Every peer announced while swept_bucket was current or earlier: past the lifetime, all are gone.
  if (bucket - swarm.swept_bucket >= kLifetimeBuckets) {
    swarm.v4 = {};
    swarm.v6 = {};
  } else {
    const auto now = static_cast<std::uint8_t>(bucket);
    auto old = [now](const auto& peer) { return static_cast<std::uint8_t>(now - peer.seen) >= kLifetimeBuckets; };
    std::erase_if(swarm.v4.seeders, old);
    std::erase_if(swarm.v4.leechers, old);
    std::erase_if(swarm.v6.seeders, old);
    std::erase_if(swarm.v6.leechers, old);
  }
  swarm.swept_bucket = bucket;
}

bool SwarmTable::claim_open_swarm() {
  std::size_t count = open_swarms_.load(std::memory_order_relaxed);
  do {
    if (count >= limits_.open_swarms) return false;
  } while (!open_swarms_.compare_exchange_weak(count, count + 1, std::memory_order_relaxed));
  return true;
}

bool SwarmTable::reclaim_once() {
  const std::uint64_t mark = current_bucket() + 1;
  std::uint64_t last = reclaimed_bucket_.load(std::memory_order_relaxed);
  if (last >= mark || !reclaimed_bucket_.compare_exchange_strong(last, mark, std::memory_order_relaxed)) return false;
  sweep();
  return true;
}

SwarmTable::Swarm* SwarmTable::find(const InfoHash& hash, std::unique_lock<std::mutex>& lock, bool create,
                                    bool& at_cap) {
  at_cap = false;
  Shard* shard = &shard_of(hash);
  lock = std::unique_lock(shard->mutex);
  auto it = shard->swarms.find(hash);
  if (it == shard->swarms.end()) {
    if (!create || !open_) return nullptr;
    if (!claim_open_swarm()) {
      at_cap = true;
      return nullptr;
    }
    it = shard->swarms.try_emplace(hash).first;
    it->second.swept_bucket = current_bucket();
    return &it->second;
  }
  if (it->second.alias_of) {
    const InfoHash target = *it->second.alias_of;
    lock.unlock();
    shard = &shard_of(target);
    lock = std::unique_lock(shard->mutex);
    it = shard->swarms.find(target);
    if (it == shard->swarms.end() || it->second.alias_of) return nullptr;
  }
  return &it->second;
}

template <std::size_t N>
std::size_t SwarmTable::peers_of_address(const PeerSet<N>& set, const std::array<std::uint8_t, N>& address) {
  // An IPv4 address, or an IPv6 /64: a prefix of the compact address, so its peers are adjacent.
  constexpr std::size_t kPrefix = N == sizeof(Compact4) ? 4 : 8;
  auto below = [](const Peer<N>& p, const std::array<std::uint8_t, N>& a) {
    return std::memcmp(p.address.data(), a.data(), kPrefix) < 0;
  };
  auto above = [](const std::array<std::uint8_t, N>& a, const Peer<N>& p) {
    return std::memcmp(a.data(), p.address.data(), kPrefix) < 0;
  };
  auto in = [&](const std::vector<Peer<N>>& peers) {
    return static_cast<std::size_t>(std::upper_bound(peers.begin(), peers.end(), address, above) -
                                    std::lower_bound(peers.begin(), peers.end(), address, below));
  };
  return in(set.seeders) + in(set.leechers);
}

template <std::size_t N>
AnnounceOutcome::Unstored SwarmTable::update(PeerSet<N>& set, const std::array<std::uint8_t, N>& address,
                                             const PeerAnnounce& request, std::uint8_t seen,
                                             std::uint64_t& downloaded, const PeerLimits& limits) {
  auto locate = [&](std::vector<Peer<N>>& peers) {
    auto it = std::lower_bound(peers.begin(), peers.end(), address, address_less<Peer<N>, N>);
    return (it != peers.end() && it->address == address) ? it : peers.end();
  };
  auto as_seeder = locate(set.seeders);
  auto as_leecher = locate(set.leechers);
  const bool was_seeder = as_seeder != set.seeders.end();
  if (request.event == Event::stopped) {
    if (was_seeder) set.seeders.erase(as_seeder);
    if (as_leecher != set.leechers.end()) set.leechers.erase(as_leecher);
    return AnnounceOutcome::Unstored::no;
  }
  if (!was_seeder && as_leecher == set.leechers.end()) {
    // A new peer: it takes a place only if the swarm and its address have one (peers already in stay).
    if (limits.swarm_peers >= limits.per_swarm) return AnnounceOutcome::Unstored::swarm_full;
    if (peers_of_address(set, address) >= limits.per_address) return AnnounceOutcome::Unstored::address_full;
  }
  auto& into = request.seeder ? set.seeders : set.leechers;
  if (request.seeder && as_leecher != set.leechers.end()) set.leechers.erase(as_leecher);
  if (!request.seeder && was_seeder) set.seeders.erase(as_seeder);
  auto at = std::lower_bound(into.begin(), into.end(), address, address_less<Peer<N>, N>);
  if (at != into.end() && at->address == address) {
    at->seen = seen;
  } else {
    into.insert(at, Peer<N>{address, seen});
  }
  if (request.event == Event::completed && !was_seeder) ++downloaded;
  return AnnounceOutcome::Unstored::no;
}

template <std::size_t N>
std::size_t SwarmTable::select(const PeerSet<N>& set, bool for_seeder, const std::array<std::uint8_t, N>* self,
                               std::span<std::array<std::uint8_t, N>> out, std::size_t want) {
  // Seeders get leechers only; leechers get everyone. The peer itself is skipped.
  const auto& seeders = set.seeders;
  const auto& leechers = set.leechers;
  const std::size_t total = for_seeder ? leechers.size() : seeders.size() + leechers.size();
  want = std::min(want, out.size());
  if (total == 0 || want == 0) return 0;
  const std::size_t skip = for_seeder ? 0 : seeders.size();  // index offset of the leechers
  std::size_t i = random_below(total);
  std::size_t written = 0;
  for (std::size_t k = 0; k < total && written < want; ++k, i = i + 1 == total ? 0 : i + 1) {
    const auto& address = i < skip ? seeders[i].address : leechers[i - skip].address;
    if (self && address == *self) continue;
    out[written++] = address;
  }
  return written;
}

template <std::size_t N>
void SwarmTable::merge(PeerSet<N>& into, PeerSet<N>& from) {
  auto absent = [&](const Peer<N>& p) {
    auto in = [&](const std::vector<Peer<N>>& v) {
      return std::binary_search(v.begin(), v.end(), p, [](const Peer<N>& a, const Peer<N>& b) {
        return std::memcmp(a.address.data(), b.address.data(), N) < 0;
      });
    };
    return !in(into.seeders) && !in(into.leechers);
  };
  auto by_address = [](const Peer<N>& a, const Peer<N>& b) {
    return std::memcmp(a.address.data(), b.address.data(), N) < 0;
  };
  std::vector<Peer<N>> new_seeders, new_leechers;
  for (const auto& p : from.seeders)
    if (absent(p)) new_seeders.push_back(p);
  for (const auto& p : from.leechers)
    if (absent(p)) new_leechers.push_back(p);
  into.seeders.insert(into.seeders.end(), new_seeders.begin(), new_seeders.end());
  into.leechers.insert(into.leechers.end(), new_leechers.begin(), new_leechers.end());
  std::sort(into.seeders.begin(), into.seeders.end(), by_address);
  std::sort(into.leechers.begin(), into.leechers.end(), by_address);
}

AnnounceOutcome SwarmTable::announce(const PeerAnnounce& request, const PeerOutput& out) {
  AnnounceOutcome outcome;
  sweep_step();
  std::unique_lock<std::mutex> lock;
  const bool create = request.event != Event::stopped;
  bool at_cap = false;
  Swarm* swarm = find(request.hash, lock, create, at_cap);
  if (at_cap) {
    lock = {};
    if (reclaim_once()) swarm = find(request.hash, lock, create, at_cap);
  }
  if (!swarm) {
    // Open mode: a stopped peer of a swarm nobody tracks has nothing to leave.
    if (at_cap) outcome.result = AnnounceOutcome::Result::too_many_swarms;
    if (!open_) outcome.result = AnnounceOutcome::Result::unknown_torrent;
    return outcome;
  }
  const std::uint64_t bucket = current_bucket();
  expire(*swarm, bucket);
  const auto seen = static_cast<std::uint8_t>(bucket);
  const Endpoint& peer = request.peer;
  Compact4 self4{};
  Compact6 self6{};
  const SwarmCounts before = swarm->counts();
  const PeerLimits limits{before.seeders + before.leechers, limits_.peers_per_swarm, limits_.peers_per_address};
  if (peer.v6) {
    self6 = compact6(peer);
    outcome.unstored = update(swarm->v6, self6, request, seen, swarm->downloaded, limits);
  } else {
    self4 = compact4(peer);
    outcome.unstored = update(swarm->v4, self4, request, seen, swarm->downloaded, limits);
  }
  outcome.counts = swarm->counts();
  outcome.own = swarm->own;
  if (request.event == Event::stopped) return outcome;  // a peer that leaves needs no peers

  std::size_t want = request.numwant;
  auto fill4 = [&] {
    outcome.v4 = select(swarm->v4, request.seeder, peer.v6 ? nullptr : &self4, out.v4, want);
    want -= outcome.v4;
  };
  auto fill6 = [&] {
    outcome.v6 = select(swarm->v6, request.seeder, peer.v6 ? &self6 : nullptr, out.v6, want);
    want -= outcome.v6;
  };
  if (out.prefer_v6) {
    fill6(), fill4();
  } else {
    fill4(), fill6();
  }
  return outcome;
}

std::optional<SwarmState> SwarmTable::state(const InfoHash& hash) {
  std::unique_lock<std::mutex> lock;
  bool at_cap = false;
  Swarm* swarm = find(hash, lock, false, at_cap);
  if (!swarm) return std::nullopt;
  expire(*swarm, current_bucket());
  return SwarmState{swarm->counts(), swarm->own};
}

void SwarmTable::add_own(const InfoHash& v1, const std::optional<InfoHash>& alias) {
  const std::uint64_t bucket = current_bucket();
  {
    Shard& shard = shard_of(v1);
    std::lock_guard lock(shard.mutex);
    auto [it, created] = shard.swarms.try_emplace(v1);
    if (created) it->second.swept_bucket = bucket;
    if (!created && !it->second.own && !it->second.alias_of) open_swarms_.fetch_sub(1, std::memory_order_relaxed);
    it->second.own = true;
    it->second.alias_of.reset();
    if (alias && *alias != v1) it->second.alias = alias;
  }
  if (!alias || *alias == v1) return;
  // Peers that announced the v2 hash on its own (open mode) join the v1 swarm.
  std::optional<Swarm> moved;
  {
    Shard& shard = shard_of(*alias);
    std::lock_guard lock(shard.mutex);
    auto [it, created] = shard.swarms.try_emplace(*alias);
    if (!created && !it->second.alias_of) {
      if (!it->second.own) open_swarms_.fetch_sub(1, std::memory_order_relaxed);
      moved = std::move(it->second);
    }
    it->second = Swarm{};
    it->second.alias_of = v1;
  }
  if (!moved) return;
  Shard& shard = shard_of(v1);
  std::lock_guard lock(shard.mutex);
  auto it = shard.swarms.find(v1);
  if (it == shard.swarms.end()) return;
  expire(*moved, bucket);
  expire(it->second, bucket);
  merge(it->second.v4, moved->v4);
  merge(it->second.v6, moved->v6);
  it->second.downloaded += moved->downloaded;
}

void SwarmTable::remove_own(const InfoHash& v1) {
  std::optional<InfoHash> alias;
  {
    Shard& shard = shard_of(v1);
    std::lock_guard lock(shard.mutex);
    auto it = shard.swarms.find(v1);
    if (it == shard.swarms.end() || it->second.alias_of) return;
    alias = it->second.alias;
    it->second.own = false;
    it->second.alias.reset();
    if (!open_) {
      shard.swarms.erase(it);  // restricted: no longer tracked at all
    } else {
      // Open mode keeps its peers as an open swarm (beyond the cap for a while: it goes when empty).
      open_swarms_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (!alias) return;
  Shard& shard = shard_of(*alias);
  std::lock_guard lock(shard.mutex);
  auto it = shard.swarms.find(*alias);
  if (it != shard.swarms.end() && it->second.alias_of == v1) shard.swarms.erase(it);
}

void SwarmTable::sweep_shard(Shard& shard, std::uint64_t bucket) {
  std::lock_guard lock(shard.mutex);
  for (auto it = shard.swarms.begin(); it != shard.swarms.end();) {
    Swarm& swarm = it->second;
    if (!swarm.alias_of) expire(swarm, bucket);
    // Open mode forgets swarms nobody is in; own swarms and aliases stay.
    if (!swarm.alias_of && !swarm.own && swarm.empty()) {
      it = shard.swarms.erase(it);
      open_swarms_.fetch_sub(1, std::memory_order_relaxed);
    } else {
      ++it;
    }
  }
}

void SwarmTable::sweep() {
  const std::uint64_t bucket = current_bucket();
  for (auto& shard : shards_) sweep_shard(*shard, bucket);
}

void SwarmTable::sweep_step() {
  const std::uint64_t bucket = current_bucket();
  std::uint64_t position = sweep_position_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t pass = position >> 8, next = position & 0xff;
    if (pass > bucket) return;                      // another announcer read the clock later and started the next pass
    if (pass == bucket && next >= kShards) return;  // this bucket's pass is done: the common case
    const std::uint64_t shard = pass == bucket ? next : 0;
    if (sweep_position_.compare_exchange_weak(position, bucket << 8 | (shard + 1), std::memory_order_relaxed)) {
      sweep_shard(*shards_[shard], bucket);
      return;
    }
  }
}

template <std::size_t N>
void SwarmTable::list_peers(const std::vector<Peer<N>>& peers, bool seeders, std::size_t max_peers,
                            std::vector<ListedPeer>& out) {
  for (const auto& p : peers) {
    if (out.size() >= max_peers) return;
    const std::uint16_t port = static_cast<std::uint16_t>(p.address[N - 2] << 8 | p.address[N - 1]);
    if constexpr (N == 6) {
      out.push_back({Endpoint::v4_from(std::span<const std::uint8_t, 4>(p.address.data(), 4), port), seeders});
    } else {
      out.push_back({Endpoint::v6_from(std::span<const std::uint8_t, 16>(p.address.data(), 16), port), seeders});
    }
  }
}

std::vector<SwarmPeers> SwarmTable::busiest(std::size_t max_swarms, std::size_t max_peers) {
  // The swarms by size first, without their peers; then the peers of the few shown, each under its shard's lock.
  std::vector<std::pair<std::uint64_t, InfoHash>> sizes;
  each_swarm([&](const InfoHash& hash, const SwarmCounts& c, bool) {
    sizes.emplace_back(std::uint64_t{c.seeders} + c.leechers, hash);
  });
  const auto shown = std::min(max_swarms, sizes.size());
  std::partial_sort(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(shown), sizes.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<SwarmPeers> out;
  const std::uint64_t bucket = current_bucket();
  for (std::size_t i = 0; i < shown; ++i) {
    Shard& shard = shard_of(sizes[i].second);
    std::lock_guard lock(shard.mutex);
    const auto it = shard.swarms.find(sizes[i].second);
    if (it == shard.swarms.end()) continue;  // gone meanwhile
    Swarm& swarm = it->second;
    expire(swarm, bucket);
    SwarmPeers listed{it->first, swarm.counts(), swarm.own, {}};
    list_peers(swarm.v4.seeders, true, max_peers, listed.peers);
    list_peers(swarm.v6.seeders, true, max_peers, listed.peers);
    list_peers(swarm.v4.leechers, false, max_peers, listed.peers);
    list_peers(swarm.v6.leechers, false, max_peers, listed.peers);
    out.push_back(std::move(listed));
  }
  return out;
}

TableTotals SwarmTable::totals() {
  TableTotals totals;
  each_swarm([&](const InfoHash&, const SwarmCounts& c, bool) {
    ++totals.swarms;
    totals.seeders += c.seeders;
    totals.leechers += c.leechers;
  });
  return totals;
}

}  // namespace inferllama::tracker
