// Rendezvous (highest random weight) hashing: each of several places ranks every key, and a key goes to
// the place that ranks it highest. Every process computes the same ranks, and losing a place moves only
// the keys it ranked first. The parent set places files on parent nodes this way, the Hub view a repo's
// requests on one of the node's Hub tokens.
#pragma once
#include <cstdint>
#include <string_view>

namespace inferllama {

// Where `key` ranks at the place named `name`: the first 8 bytes of SHA-256(name, '\n', key).
std::uint64_t rendezvous_weight(std::string_view name, std::string_view key);

}  // namespace inferllama
