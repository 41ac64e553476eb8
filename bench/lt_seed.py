#!/usr/bin/python3
"""A plain libtorrent seed: the anchor of bench/swarm.py.

Seeds one .torrent from files on disk under --save-path (<save-path>/<name>/<path>), with
high_performance_seed() settings, TCP out and TCP or uTP in, no DHT/LSD/UPnP/NAT-PMP, on 127.0.0.1 (port 0 = any).
Peer-side settings are the node's (src/torrent/session_settings.hpp); nothing else is tuned.
The pieces are marked verified (as the node marks its stored chunks), so no piece is hashed
before it is sent.

Prints `LISTENING port=N` when the listener is up and `ANNOUNCED` after the first successful
tracker reply, then seeds until SIGTERM/SIGINT; `STATS uploaded=N` (payload bytes sent so far)
on every SIGUSR1 and before it exits.
Needs Debian's python3-libtorrent: run it with /usr/bin/python3, not another interpreter.
"""
import argparse
import signal
import sys
import time

import libtorrent as lt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save-path", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    args = ap.parse_args()

    stopping, stats_wanted = [], []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: stats_wanted.append(True))

    pack = lt.high_performance_seed()
    pack.update({
        "listen_interfaces": args.listen,
        # The same peer-side settings as the node's seed (apply_peer_settings).
        "enable_outgoing_utp": False,
        "enable_incoming_utp": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,  # every leecher is 127.0.0.1
        "alert_mask": lt.alert_category.error | lt.alert_category.status | lt.alert_category.tracker,
    })
    session = lt.session(pack)

    info = lt.torrent_info(args.torrent)
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = args.save_path
    params.flags = lt.torrent_flags.seed_mode  # not auto-managed, like the node's seeds
    params.verified_pieces = [True] * info.num_pieces()
    handle = session.add_torrent(params)

    listening = announced = False
    deadline = time.monotonic() + 60
    while not stopping:
        session.wait_for_alert(50)
        if stats_wanted:
            stats_wanted.clear()
            print(f"STATS uploaded={handle.status().total_payload_upload}", flush=True)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.listen_succeeded_alert) and not listening and \
                    alert.socket_type == lt.socket_type_t.tcp:
                listening = True
                print(f"LISTENING port={alert.port}", flush=True)
            elif isinstance(alert, lt.listen_failed_alert):
                print(f"ERROR {alert.message()}", flush=True)
                return 1
            elif isinstance(alert, lt.tracker_reply_alert) and not announced:
                announced = True
                print("ANNOUNCED", flush=True)
            elif isinstance(alert, (lt.tracker_error_alert, lt.file_error_alert, lt.torrent_error_alert)):
                print(f"ERROR {alert.message()}", file=sys.stderr, flush=True)
        if not announced and time.monotonic() > deadline:
            print("ERROR no tracker reply within 60 s", flush=True)
            return 1
    status = handle.status()
    print(f"STATS uploaded={status.total_payload_upload} state={status.state}", flush=True)
    session.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
