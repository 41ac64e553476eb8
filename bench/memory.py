#!/usr/bin/env python3
"""Memory: the node's RSS while 256 clients download a stored file at once.

A hit is served with sendfile from the chunk files, so memory should not grow with the number of
clients or the file size: per connection the node needs a coroutine, a socket and a little state.

Steps: fresh node, warm a --size file (default 256 MiB) with one cold miss, let it settle, sample
idle RSS; then --clients (default 256) concurrent downloads of the whole file, each paced at
--client-rate bytes/s (default 4 MB/s: slow clients, so all connections are open at the same time
and the node's socket buffers stay full) and stopped after --seconds (default 15) if not done.
/proc/<node>/status is sampled every 50 ms: VmRSS, VmHWM (peak since start), Threads.
Anchor: the node's own idle RSS (growth = peak - idle); for scale, nginx serving the same
load is measured too (all its processes' RSS summed). Lower is better for all figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import common as c


def rss_tree_kb(pid: int) -> int:
    """RSS of a process and its direct children (nginx master + workers)."""
    return c.status_kb(c.tree_pids(pid), "VmRSS")


def load(url: str, clients: int, rate: float, seconds: float, size: int) -> dict:
    """`clients` paced splice readers started together; returns bytes and failures."""
    results: list = [None] * clients

    def one(i: int) -> None:
        try:
            results[i] = c.splice_get(url, timeout=seconds + 60, rate=rate, max_seconds=seconds)
        except Exception as e:  # noqa: BLE001 - counted below
            results[i] = {"error": repr(e)}

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    failed = [r for r in results if r is None or "error" in r or r["code"] != 200]
    done = sum(1 for r in results if r and r.get("bytes") == size)
    return {"bytes": sum(r.get("bytes", 0) for r in results if r), "failed": failed, "complete": done}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--client-rate", type=float, default=4e6, help="bytes/s per client")
    ap.add_argument("--seconds", type=float, default=15, help="each client stops after this long")
    ap.add_argument("--no-nginx", action="store_true")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    print(f"# memory: {args.clients} clients x {args.client_rate / 1e6:.0f} MB/s for <= {args.seconds:.0f} s "
          f"on a {c.fmt_size(size)} stored file")

    rows = []
    with c.BigHub(size) as hub:
        with c.node(hub.url) as node:
            pid = node.proc.pid
            url = node.url + hub.resolve_path()
            boot = c.proc_status(pid)
            r = c.curl_get(url)
            if r["code"] != 200 or r["bytes"] != size:
                raise RuntimeError(f"warm-up: {r}")
            time.sleep(2)  # let the commit and its background work settle
            idle = c.proc_status(pid)
            sampler = c.Sampler(lambda: c.proc_status(pid), 0.05)
            sampler.start()
            try:
                res = load(url, args.clients, args.client_rate, args.seconds, size)
            finally:
                samples = sampler.stop()
            time.sleep(2)
            after = c.proc_status(pid)
            peak = max(s["VmRSS"] for _, s in samples)
            hwm = max(s["VmHWM"] for _, s in samples)
            threads = max(s["Threads"] for _, s in samples)
            rows.append(["node", boot["VmRSS"], idle["VmRSS"], peak, hwm, after["VmRSS"], threads,
                         res["bytes"], len(res["failed"])])
            if res["failed"]:
                print(f"# node: {len(res['failed'])} clients failed, e.g. {res['failed'][:3]}")
        if not args.no_nginx:
            with c.Nginx(hub.blob_path()) as nginx:
                time.sleep(0.5)
                idle_n = rss_tree_kb(nginx.proc.pid)
                sampler = c.Sampler(lambda: rss_tree_kb(nginx.proc.pid), 0.05)
                sampler.start()
                try:
                    res_n = load(nginx.url, args.clients, args.client_rate, args.seconds, size)
                finally:
                    samples_n = sampler.stop()
                time.sleep(2)
                rows.append(["nginx (master+workers)", "-", idle_n, max(s for _, s in samples_n), "-",
                             rss_tree_kb(nginx.proc.pid), "-", res_n["bytes"], len(res_n["failed"])])

    mib = lambda kb: f"{kb / 1024:.1f}" if isinstance(kb, int) else kb  # noqa: E731
    print()
    c.table(["server", "RSS at start MiB", "RSS idle MiB", "peak RSS MiB", "VmHWM MiB", "RSS after MiB",
             "max threads", "bytes served", "failed clients"],
            [[r[0], mib(r[1]), mib(r[2]), mib(r[3]), mib(r[4]), mib(r[5]), r[6], c.fmt_size(r[7]), r[8]]
             for r in rows])
    node_row = rows[0]
    growth = node_row[3] - node_row[2]
    print()
    print(f"RSS_MIB node_idle = {node_row[2] / 1024:.1f}")
    print(f"RSS_MIB node_peak = {node_row[3] / 1024:.1f}   (lower is better)")
    print(f"RSS_MIB node_growth_under_load = {growth / 1024:.1f}   ({growth / args.clients:.0f} KiB per client)")
    c.ratio("memory_peak_over_idle", node_row[3] / node_row[2], "node peak RSS / node idle RSS, LOWER is better")
    if len(rows) > 1:
        c.ratio("memory_peak_vs_nginx", node_row[3] / rows[1][3], "node peak RSS / nginx peak RSS, LOWER is better")
    return 0 if not node_row[8] else 1


if __name__ == "__main__":
    sys.exit(main())
