"""Downloads a torrent with libtorrent's Python bindings (Debian's python3-libtorrent, libtorrent 2.0):
the client a qBittorrent user runs. Peers come from the torrent's trackers (and --peer, if given).

    /usr/bin/python3 lt_client.py TORRENT_OR_MAGNET SAVE_DIR [--peer HOST:PORT] [--timeout SECONDS] [--utp-only]
                                  [--listen HOST:PORT]

A magnet link (magnet:?...) is fetched as qBittorrent does: the metadata from the peers first.
--utp-only turns TCP off both ways (uTP alone, as a client whose TCP is blocked would connect).
--listen is where the session listens (libtorrent's listen_interfaces; default 127.0.0.1:0).

Prints one JSON line: {"ok": bool, "total_done": N, "num_peers_seen": N, "utp_peers_seen": N, "error": "..."};
exit 0 on success.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import libtorrent as lt

UTP_SOCKET = 1 << 17  # lt::peer_info::utp_socket, which the bindings do not name


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--utp-only", action="store_true")
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()

    settings = {
        "listen_interfaces": args.listen,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": args.utp_only, "enable_incoming_utp": args.utp_only,
        "enable_outgoing_tcp": not args.utp_only, "enable_incoming_tcp": not args.utp_only,
        "allow_multiple_connections_per_ip": True,
        # connect_notification: a fast download can begin and end between two looks at the peer list (two
        # seeds then part), so connections are also counted from their alerts.
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
        | lt.alert.category_t.connect_notification,
    }
    session = lt.session(settings)
    if args.torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(args.torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_dir
    handle = session.add_torrent(params)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host, int(port)))

    deadline = time.monotonic() + args.timeout
    peers_seen = utp_peers_seen = 0
    error = ""

    def report(ok: bool, **extra) -> None:
        status = handle.status()
        print(json.dumps({"ok": ok, "total_done": status.total_done, "num_peers_seen": peers_seen,
                          "utp_peers_seen": utp_peers_seen, **extra}))

    while time.monotonic() < deadline:
        # Blocks until an alert arrives (or a short while passes): progress is observed, not slept on.
        session.wait_for_alert(500)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_error_alert):
                error = alert.message()
            elif isinstance(alert, lt.peer_connect_alert):
                peers_seen = max(peers_seen, 1)
                if args.utp_only:  # TCP is off both ways: every connection is uTP
                    utp_peers_seen = max(utp_peers_seen, 1)
        status = handle.status()
        peers_seen = max(peers_seen, status.num_peers)
        utp_peers_seen = max(utp_peers_seen, sum(1 for peer in handle.get_peer_info()
                                                 if int(peer.flags) & UTP_SOCKET))
        if status.is_seeding or status.state == lt.torrent_status.seeding:
            report(True)
            return 0
        if error:
            break
    report(False, error=error or "timed out")
    return 1


if __name__ == "__main__":
    sys.exit(main())
