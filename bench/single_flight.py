#!/usr/bin/env python3
"""Single flight: 16 clients ask a fresh node for the same uncached file at the same moment.

The node must fetch the file from upstream once and stream it to all of them.
Measured: upstream bytes for that file (the fake Hub's `cdn_bytes[sha256]`) / file size.
Anchor: the file size itself (one fetch). Goal: RATIO single_flight_upstream_bytes = 1.00
(lower is better; 16.00 would be one fetch per client). Every client's body is hashed (curl piped
into `openssl dgst -sha256`) and must equal the Hub's sha256.

The CDN is capped at --cdn-rate per connection (default 100 MB/s, like the real CDN) so the download
is in flight while all clients arrive; --cdn-rate 0 makes the race tighter.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import common as c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--cdn-rate", type=int, default=100_000_000)
    ap.add_argument("--rev", default="main", help="revision the clients ask for (main or the commit)")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    cdn = f"CDN {args.cdn_rate / 1e6:.0f} MB/s per connection" if args.cdn_rate else "CDN unlimited"
    print(f"# single flight: {args.clients} concurrent cold clients, {c.fmt_size(size)}, {cdn}")

    with c.BigHub(size, cdn_rate=args.cdn_rate) as hub:
        with c.node(hub.url) as node:
            url = node.url + hub.resolve_path(None if args.rev == "commit" else args.rev)
            stats0, bytes0 = hub.stats()["requests"], hub.cdn_bytes()
            results: list = [None] * args.clients
            start = threading.Barrier(args.clients)
            max_time = max(300, 4 * size / max(args.cdn_rate, 1) if args.cdn_rate else 300)

            def client(i: int) -> None:
                start.wait(timeout=30)  # all at once: the point is the race
                t0 = time.monotonic()
                try:
                    code, digest = c.sha256_of_url(url, max_time=max_time)
                    results[i] = (code, digest, time.monotonic() - t0)
                except Exception as e:  # noqa: BLE001 - reported below
                    results[i] = (0, repr(e), time.monotonic() - t0)

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(max_time + 60)
            upstream = hub.cdn_bytes() - bytes0
            stats1 = hub.stats()["requests"]

    ok = sum(1 for r in results if r and r[0] == 200 and r[1] == hub.sha256)
    print()
    c.table(["client", "status", "sha256 ok", "seconds"],
            [[i, r[0] if r else "-", "yes" if r and r[1] == hub.sha256 else f"NO {r and r[1][:40]}",
              f"{r[2]:.2f}" if r else "-"] for i, r in enumerate(results)])
    print()
    print(f"upstream: {upstream} bytes for a {size}-byte file; CDN GETs {stats1['cdn_get'] - stats0['cdn_get']}, "
          f"Hub HEADs {stats1['resolve_head'] - stats0['resolve_head']}, API info calls "
          f"{stats1['api_info'] - stats0['api_info']}")
    print(f"clients with the right bytes: {ok} of {args.clients}")
    c.ratio("single_flight_upstream_bytes", upstream / size, "upstream bytes / file size, goal 1.00, lower is better")
    c.ratio("single_flight_correct_clients", ok / args.clients, "goal 1.00")
    return 0 if ok == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
