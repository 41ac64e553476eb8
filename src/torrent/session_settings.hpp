#pragma once
// Settings the node's libtorrent sessions (the seed, the mirror fetcher, a parent node's swarm) share.
#include <string>

#include <libtorrent/alert.hpp>
#include <libtorrent/settings_pack.hpp>

namespace inferllama::torrent {

struct PeerSettings {
  std::string listen;  // HOST:PORT
  bool dht = false;
  bool lsd = false;
  bool port_fallback = false;  // a taken port moves to one of the next 10 (else listening fails)
  bool incoming_utp = false;   // the seed's: see apply_peer_settings
};

inline void apply_peer_settings(lt::settings_pack& pack, const PeerSettings& peer) {
  pack.set_str(lt::settings_pack::listen_interfaces, peer.listen);
  // libtorrent would otherwise move a taken port, first to the next ones, then to any the system gives.
  pack.set_int(lt::settings_pack::max_retry_port_bind, peer.port_fallback ? 10 : 0);
  pack.set_bool(lt::settings_pack::listen_system_port_fallback, false);
  // The seed answers incoming uTP: Transmission and qBittorrent try uTP first with tracker peers, and a
  // seed that drops it unanswered is marked unreachable (Transmission, for 15 minutes) or costs seconds
  // before they fall back to TCP. The sessions that download for the node stay on TCP (uTP was 40 times
  // slower on loopback), and TCP is never throttled in favour of uTP peers.
  pack.set_bool(lt::settings_pack::enable_outgoing_utp, false);
  pack.set_bool(lt::settings_pack::enable_incoming_utp, peer.incoming_utp);
  pack.set_int(lt::settings_pack::mixed_mode_algorithm, lt::settings_pack::prefer_tcp);
  pack.set_bool(lt::settings_pack::enable_dht, peer.dht);
  pack.set_bool(lt::settings_pack::enable_lsd, peer.lsd);
  // The node's port is configured, not mapped on a router behind its operator's back.
  pack.set_bool(lt::settings_pack::enable_upnp, false);
  pack.set_bool(lt::settings_pack::enable_natpmp, false);
  // Many peers share one address: loopback in tests, one NAT in an office.
  pack.set_bool(lt::settings_pack::allow_multiple_connections_per_ip, true);
  pack.set_int(lt::settings_pack::alert_mask, lt::alert_category::error | lt::alert_category::status |
                                                  lt::alert_category::storage |
                                                  lt::alert_category::performance_warning);
}

}  // namespace inferllama::torrent
