// Reading who a request says it is: bearer tokens, secrets compared in constant time, and the network
// an anonymous client is counted under.
#pragma once
#include <string>
#include <string_view>

#include <boost/asio/ip/address.hpp>

namespace inferllama::http {

// The credentials of "Authorization: Bearer X" (the scheme is case-insensitive), or "".
std::string_view bearer_of(std::string_view authorization);

// Compares secrets in time independent of where they differ.
bool same_secret(std::string_view a, std::string_view b);

// Who an anonymous client is: its IPv4 address (also when it arrives IPv4-mapped), or its IPv6 /64,
// since one IPv6 host can pick any address of its /64.
std::string client_network(const boost::asio::ip::address& address);

// A request target for logs, without the passkey of /p/, /announce/ or /scrape/{passkey}.
std::string redact_target(std::string_view target);

}  // namespace inferllama::http
