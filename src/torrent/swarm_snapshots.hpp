#pragma once
// How many snapshot torrents make each swarm. Two snapshots may make one info dict (a commit that reverts
// to an older tree, two repos of one name with the same files): their swarm is seeded and tracked while
// any of them is. Not synchronised: its owner serialises the seeding around it.
#include <string>
#include <unordered_map>

#include "inferllama/digest.hpp"

namespace inferllama::torrent {

class SwarmSnapshots {
 public:
  // Counts a snapshot of `swarm`; true for the first (the swarm is to be seeded and tracked now).
  bool add(const Sha1& swarm) { return counts_[swarm.hex()]++ == 0; }
  // Takes back the add() of a swarm that could not be seeded.
  void forget(const Sha1& swarm) { counts_.erase(swarm.hex()); }
  // Counts a snapshot of `swarm` gone; true for the last (the swarm is to be stopped now).
  bool remove(const Sha1& swarm) {
    const auto it = counts_.find(swarm.hex());
    if (it == counts_.end() || --it->second > 0) return false;
    counts_.erase(it);
    return true;
  }

 private:
  std::unordered_map<std::string, unsigned> counts_;
};

}  // namespace inferllama::torrent
