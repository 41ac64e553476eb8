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
  // Counts a snapshot of `swarm` (named `name`, "repo@commit", when it is the first); true for the first
  // (the swarm is to be seeded and tracked now).
  bool add(const Sha1& swarm, const std::string& name = {}) {
    auto& entry = swarms_[swarm.hex()];
    if (entry.count == 0) entry.name = name;
    return entry.count++ == 0;
  }
  // Takes back the add() of a swarm that could not be seeded.
  void forget(const Sha1& swarm) { swarms_.erase(swarm.hex()); }
  // Counts a snapshot of `swarm` gone; true for the last (the swarm is to be stopped now).
  bool remove(const Sha1& swarm) {
    const auto it = swarms_.find(swarm.hex());
    if (it == swarms_.end() || --it->second.count > 0) return false;
    swarms_.erase(it);
    return true;
  }
  // The name of the snapshot that first made `swarm`, or "" for a swarm of none.
  std::string name(const Sha1& swarm) const {
    const auto it = swarms_.find(swarm.hex());
    return it == swarms_.end() ? std::string() : it->second.name;
  }

 private:
  struct Entry {
    unsigned count = 0;
    std::string name;
  };
  std::unordered_map<std::string, Entry> swarms_;
};

}  // namespace inferllama::torrent
