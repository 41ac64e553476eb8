// What nodes of a cluster say to each other beyond the Hub's protocol: a node marks its answers so a
// child knows its upstream is a node; a child asks its parent for any piece it wants; a child's swarm
// session names itself so that the parent's tracker leaves the parent's own seed out.
#pragma once
#include <string_view>

namespace inferllama::cluster {

// On every HTTP answer of a node but its tracker's; its value is the node's version.
inline constexpr char kNodeHeader[] = "X-InferLlama-Node";
inline constexpr std::string_view kNodeHeaderLower = "x-inferllama-node";

// A child's request for a piece of a file its parent stores whole: the hex bitfield (BitTorrent order:
// piece 0 is the first byte's high bit; a piece is the parent's chunk size) of the pieces the child wants,
// those it lacks and none of its peers has; ";any" also takes a piece the parent sent lately. The parent
// answers 206 with the piece it picked (Content-Range says which), or 204 when every wanted piece went to
// another child lately (the child gets it from that peer). The request's Range is what a node that does
// not pick sends instead.
inline constexpr const char* kWantPiecesHeader = "X-InferLlama-Want-Pieces";

// The peer-id prefix of the session in which a node downloads its parents' torrents (the version after
// "-IE" aside). A node's tracker gives such peers every peer but its own seed: the parent sends pieces to
// its children over HTTP, each about once, and the children trade the rest.
inline constexpr std::string_view kParentSwarmPeerId = "-IE0001-";

}  // namespace inferllama::cluster
