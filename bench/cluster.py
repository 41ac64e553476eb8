#!/usr/bin/env python3
"""Cluster: one parent with a capped uplink, N edges, one client per edge, all pulling the same file cold.

Every process is on a network namespace of its own (tests/integration/cluster.py on netns.py): the fake
Hub, one parent node (its upstream: the Hub), N edge nodes (their upstream: the parent) and N client hosts.
The parent's uplink is capped (`--cap`, default 400 Mbit/s, tc htb); the other links are not. Each client
pulls acme/sized-0's model.safetensors (`--size`, default 1 GiB) from its own edge with curl, all started at
one barrier; curl's bytes go through sha256sum on the client host and are checked against the Hub's.

Two modes, each with N = 1, 2, 4, 8 (`--edges`), a fresh cluster per run:
- swarm: the edges' defaults for a large file: they stream from the parent over HTTP until the parent has
  the file's torrent, then fill from the swarm, the parent sending each piece about once
  (X-InferLlama-Want-Pieces) and the edges trading the rest among themselves;
- http: `--swarm-threshold 0`: every edge fetches the whole file from the parent over HTTP (the anchor:
  what a plain chain of caching proxies does).

Reported per run: time until every client has finished (from the barrier), median and worst time to first
byte, parent uplink bytes ÷ file size (its link's counter), Hub bytes ÷ size. Ratios: time(N) ÷ time(1) per
mode (goal for the swarm at N = 8: <= 1.5, while HTTP grows about N x), and the parent's uplink per file.

The Hub's link is not capped unless `--hub-cap` says so: with a Hub slower than the parent's uplink, each
edge streams the file from the parent at the Hub's pace while the parent fetches it (the torrent exists
only once the parent holds the whole file), so the uplink carries up to (uplink ÷ Hub rate) copies.

All nodes, curls and the Hub share this machine's cores: when the edges' hashing and peer traffic need more
CPU than the machine has, the swarm's time grows with N although the parent's uplink does not; the CPU
seconds each run used are printed so this can be told apart from the network. Needs root (namespaces).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time

import common as c
import cluster as cl
import netns

REPO = "acme/sized-0"
MODEL = "model.safetensors"


def pull(client: netns.Host, url: str, barrier: threading.Barrier, max_time: float) -> dict:
    """curl into sha256sum on the client host; (status, ttfb, total, size, sha256, started)."""
    script = ("set -o pipefail; curl --silent --show-error --max-time {t} --output - "
              "--write-out '%{{stderr}}%{{http_code}} %{{time_starttransfer}} %{{time_total}} %{{size_download}}' "
              "'{u}' | sha256sum").format(t=int(max_time), u=url)
    barrier.wait(timeout=60)
    started = time.monotonic()
    done = client.run(["bash", "-c", script], capture_output=True, text=True, timeout=max_time + 30)
    fields = done.stderr.strip().split()[-4:]
    result = {"started": started, "ended": time.monotonic(), "exit": done.returncode, "error": done.stderr.strip(),
              "sha256": done.stdout.split()[0] if done.stdout else ""}
    if len(fields) == 4 and fields[0].isdigit():
        result.update(status=int(fields[0]), ttfb=float(fields[1]), total=float(fields[2]), size=int(fields[3]))
    return result


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(mode: str, edges: int, size: int, cap: str, hub_cap: str | None, hub_dir: str, max_time: float) -> dict:
    # The edges' arguments of the cluster tests, with the swarm off for the HTTP runs.
    edge_args = list(cl.EDGE_ARGS)
    if mode == "http":
        edge_args[edge_args.index("--swarm-threshold") + 1] = "0"
    cpu_before = cpu_seconds()
    with cl.Cluster(parents=1, edges=edges, clients=edges, hub_data_dir=hub_dir,
                    hub_args=("--sized-models", "1", "--sized-model-size", str(size)),
                    edge_args=tuple(edge_args), extra_edge_args=("--log-level", "warn")) as cluster:
        parent = cluster.parents[0]
        parent.host.cap(cap)
        if hub_cap:
            cluster.hub_host.cap(hub_cap)
        expected = cluster.file(REPO, MODEL)
        sent = parent.host.tx_bytes()
        barrier = threading.Barrier(edges)
        results: list[dict] = [{} for _ in range(edges)]

        def one(i: int) -> None:
            try:
                results[i] = pull(cluster.clients[i], cluster.edges[i].resolve_url(REPO, MODEL), barrier, max_time)
            except Exception as e:  # reported below as a failed client
                results[i] = {"exit": -1, "error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=one, args=(i,)) for i in range(edges)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        uplink = parent.host.tx_bytes() - sent
        hub = cluster.hub_bytes(REPO, MODEL)
    failed = [r for r in results
              if r.get("exit") != 0 or r.get("status") != 200 or r.get("sha256") != expected["sha256"]
              or r.get("size") != expected["size"]]
    for r in failed:
        print(f"FAILED {mode} N={edges}: exit {r.get('exit')}, status {r.get('status')}, "
              f"{r.get('size')} bytes, sha256 {r.get('sha256', '')[:12]}: {r.get('error', '')[-300:]}", flush=True)
    ok = [r for r in results if r not in failed]
    wall = max(r["ended"] for r in ok) - min(r["started"] for r in ok) if ok else float("nan")
    ttfbs = sorted(r["ttfb"] for r in ok)
    return {"mode": mode, "edges": edges, "time": wall, "ttfb_median": statistics.median(ttfbs) if ttfbs else 0,
            "ttfb_max": ttfbs[-1] if ttfbs else 0, "uplink": uplink / size, "hub": hub / size,
            "cpu": cpu_seconds() - cpu_before, "failed": len(failed)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    ap.add_argument("--edges", default="1,2,4,8", help="edge counts, comma-separated (default 1,2,4,8)")
    ap.add_argument("--modes", default="swarm,http", help="swarm, http or both (default swarm,http)")
    ap.add_argument("--cap", default="400mbit", help="the parent's uplink (tc rate, default 400mbit)")
    ap.add_argument("--hub-cap", default=None,
                    help="the Hub's uplink (tc rate; default: not capped, so the parent fills faster than it sends)")
    ap.add_argument("--max-time", type=float, default=900, help="seconds one client may take (default 900)")
    args = ap.parse_args()
    netns.require()
    size = c.parse_size(args.size)
    counts = [int(n) for n in args.edges.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    hub_dir = os.path.join(c.HUB_DIR, "cluster")
    os.makedirs(hub_dir, exist_ok=True)
    c.check_binary()
    hub = f"the Hub {args.hub_cap} up" if args.hub_cap else "the Hub not capped"
    print(f"cluster: 1 parent ({args.cap} up, {hub}), N edges, one client each, {size / c.MIB:.0f} MiB cold",
          flush=True)
    rows = []
    for mode in modes:
        for n in counts:
            row = run_once(mode, n, size, args.cap, args.hub_cap, hub_dir, args.max_time)
            rows.append(row)
            print(f"  {mode:5s} N={n}: {row['time']:6.1f} s, TTFB median {row['ttfb_median']:.2f} s "
                  f"max {row['ttfb_max']:.2f} s, parent uplink / size {row['uplink']:.2f}, Hub / size "
                  f"{row['hub']:.3f}, CPU {row['cpu']:.0f} s, failed {row['failed']}", flush=True)
    print()
    print("| mode | N | time (s) | time(N) ÷ time(1) | TTFB median / max (s) | parent uplink ÷ size | Hub ÷ size |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        base = next((r["time"] for r in rows if r["mode"] == mode and r["edges"] == counts[0]), float("nan"))
        for r in (r for r in rows if r["mode"] == mode):
            r["ratio"] = r["time"] / base
            print(f"| {mode} | {r['edges']} | {r['time']:.1f} | {r['ratio']:.2f} | {r['ttfb_median']:.2f} / "
                  f"{r['ttfb_max']:.2f} | {r['uplink']:.2f} | {r['hub']:.3f} |")
    print()
    for r in rows:
        if r["edges"] != counts[0]:
            print(f"RATIO cluster_{r['mode']}_time_{r['edges']}_over_{counts[0]} = {r['ratio']:.2f}   "
                  f"(time until every client has its bytes, lower better; swarm goal at 8: <= 1.5)")
        print(f"RATIO cluster_{r['mode']}_uplink_{r['edges']} = {r['uplink']:.2f}   "
              f"(parent uplink bytes / file size, lower better)")
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
