#!/usr/bin/env python3
"""Cold miss against a rate-limited CDN: does a client lose anything by going through the node?

The fake Hub's CDN is capped at --cdn-rate bytes/s *per response* (default 100 MB/s, about what one
connection to the real HuggingFace CDN gets).

Anchor: a direct, single-connection download of the file from the CDN (the signed URL, learnt
beforehand from the Hub's 302; that lookup is not timed) - what `curl -L` / a plain client gets.
Node:   a cold miss (fresh node, fresh data dir, every run) of the same file through the node with
        curl, `/{repo}/resolve/main/{path}` as a first-time client asks it. The node's TTFB
        includes its upstream work (visibility check, HEAD to the Hub, first CDN bytes).

Runs alternate direct and node, `--reps` times; medians are reported.
Goals: throughput node/direct >= 1.0 (the node fetches with several Range connections, so it
should beat one connection), TTFB node - direct <= 10 ms.
"""
from __future__ import annotations

import argparse
import sys

import common as c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cdn-rate", type=int, default=100_000_000, help="bytes/s per CDN response")
    ap.add_argument("--node-flag", action="append", default=[],
                    help="extra node flag (repeatable), e.g. --node-flag=--upstream-connections=8")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    print(f"# cold miss: {c.fmt_size(size)}, CDN capped at {args.cdn_rate / 1e6:.0f} MB/s per connection, "
          f"{args.reps} reps")

    direct, through = [], []
    with c.BigHub(size, cdn_rate=args.cdn_rate) as hub:
        max_time = max(120, 3 * size / args.cdn_rate)
        for rep in range(args.reps):
            url = hub.cdn_url()  # fresh signed URL, not timed
            d = c.curl_get(url, max_time=max_time)
            if d["code"] != 200 or d["bytes"] != size:
                raise RuntimeError(f"direct download: {d}")
            direct.append(d)
            with c.node(hub.url, *args.node_flag) as node:
                before = hub.cdn_bytes()
                n = c.curl_get(node.url + hub.resolve_path("main"), max_time=max_time)
                if n["code"] != 200 or n["bytes"] != size:
                    raise RuntimeError(f"through the node: {n}")
                fetched = hub.cdn_bytes() - before
                # Correctness, after the timing: the stored file must be the Hub's bytes.
                code, digest = c.sha256_of_url(node.url + hub.resolve_path())
                if code != 200 or digest != hub.sha256:
                    raise RuntimeError(f"node stored {digest} (status {code}), want {hub.sha256}")
            n["upstream_ratio"] = fetched / size
            through.append(n)
            print(f"# rep {rep + 1}: direct {d['speed'] / 1e6:.0f} MB/s ttfb {d['ttfb'] * 1e3:.1f} ms | "
                  f"node {n['speed'] / 1e6:.0f} MB/s ttfb {n['ttfb'] * 1e3:.1f} ms "
                  f"(upstream bytes {n['upstream_ratio']:.3f}x file)", flush=True)

    md = {k: c.median([r[k] for r in direct]) for k in ("speed", "ttfb", "total")}
    mn = {k: c.median([r[k] for r in through]) for k in ("speed", "ttfb", "total")}
    print()
    c.table(["", "direct (1 conn)", "through node (cold)", "node vs direct"], [
        ["throughput", c.mbps(md["speed"]), c.mbps(mn["speed"]), f"{mn['speed'] / md['speed']:.2f}x"],
        ["time to first byte", f"{md['ttfb'] * 1e3:.1f} ms", f"{mn['ttfb'] * 1e3:.1f} ms",
         f"{(mn['ttfb'] - md['ttfb']) * 1e3:+.1f} ms"],
        ["total time", f"{md['total']:.2f} s", f"{mn['total']:.2f} s", f"{mn['total'] / md['total']:.2f}x"],
    ])
    print()
    c.ratio("cold_miss_throughput", mn["speed"] / md["speed"], "node/direct, higher is better, goal >= 1.0")
    print(f"TTFB_DIFF_MS cold_miss = {(mn['ttfb'] - md['ttfb']) * 1e3:.1f}   "
          "(node - direct, milliseconds, lower is better, goal <= 10)")
    c.ratio("cold_miss_ttfb", mn["ttfb"] / md["ttfb"], "node/direct, LOWER is better")
    return 0


if __name__ == "__main__":
    sys.exit(main())
