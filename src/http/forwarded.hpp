// Who a request really comes from when it arrives through a reverse proxy the operator trusts.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/network.hpp"

namespace inferllama::http {

struct ForwardedHeaders {
  std::vector<std::string_view> forwarded;        // every `Forwarded` field (RFC 7239), in order
  std::vector<std::string_view> x_forwarded_for;  // every `X-Forwarded-For` field, in order
  std::string_view x_forwarded_proto;
};

struct ClientOrigin {
  Address16 address;  // the client: the peer itself unless a trusted proxy named another
  bool https = false; // the client spoke https to the first trusted proxy
};

// The client of a request from `peer`. Only when the peer is in `trusted` are the headers read: the
// forwarding chain (Forwarded's for= values, else X-Forwarded-For) is walked from the right, past every
// hop that is itself a trusted proxy, and the first other hop is the client. A hop that cannot be parsed
// (unknown, an obfuscated name, garbage) ends the walk at the last proxy that was trusted: nothing left
// of it is believed.
ClientOrigin client_origin(const Address16& peer, const std::vector<Network>& trusted, const ForwardedHeaders& headers);

}  // namespace inferllama::http
