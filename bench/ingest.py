#!/usr/bin/env python3
"""Ingest: cold-miss throughput with an unlimited CDN vs the machine's hashing limit.

Every byte the node ingests is hashed three times: SHA-256 merkle of its 16 KiB blocks (the chunk's
content address / BitTorrent v2 piece root), SHA-1 of its 4 MiB piece, and the in-order whole-file
SHA-256. So on this machine the node can never ingest faster than

    limit = cores / (2 / R_sha256 + 1 / R_sha1)   bytes/s

where R_* are single-core rates from `openssl speed -bytes 16384 -evp ...` (the same EVP code the
node uses, SHA-NI where the CPU has it). With 2 cores, limit = 2 / (2/R256 + 1/R1).
Anchor: that limit. Node: a cold miss through a fresh node, client = curl -o /dev/null.
Goal: node / limit >= 0.7.

The fake Hub (Python, sendfile), curl and the node share the same cores, so the limit is not
reachable in this setup; the CPU table shows how much of the machine each took. Where the node's
time goes: CPU seconds per node thread (threads are unnamed, so they are listed by thread id,
busiest first) and, if `perf` works here, the node's hottest symbols during the download.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import common as c


def openssl_rate(alg: str, seconds: int) -> float:
    out = c.run(["openssl", "speed", "-mr", "-bytes", "16384", "-seconds", str(seconds), "-evp", alg],
                timeout=seconds * 5 + 30)
    m = re.search(r"^\+F:\d+:[^:]+:([\d.]+)", out, re.M)
    if not m:
        raise RuntimeError(f"cannot parse openssl speed output:\n{out}")
    return float(m.group(1))  # bytes/s, one core


def perf_start(pid: int, out: str):
    if not shutil.which("perf"):
        return None
    try:
        return subprocess.Popen(["perf", "record", "-F", "499", "-q", "-o", out, "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError:
        return None


def perf_report(proc, out: str) -> list[str]:
    """Stops `perf record` and summarises: share per DSO (kernel / libcrypto / node / libc), then
    the hottest symbols (libcrypto is stripped here: its symbols show as addresses)."""
    if proc is None:
        return []
    proc.send_signal(signal.SIGINT)  # perf record writes its file and exits on SIGINT
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return []
    lines = []
    for sort, limit, top in (("dso", "0.5", 10), ("sym", "1.5", 15)):
        r = subprocess.run(["perf", "report", "--stdio", "-i", out, "--no-children", "--sort", sort,
                            "--percent-limit", limit], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, timeout=120)
        lines.append(f"-- by {sort}:")
        lines += [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")][:top]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--openssl-seconds", type=int, default=3)
    ap.add_argument("--no-perf", action="store_true", help="skip the perf profile of the last rep")
    ap.add_argument("--node-flag", action="append", default=[], help="extra node flag (repeatable)")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    cores = os.cpu_count() or 1
    c.check_binary()

    r256 = openssl_rate("sha256", args.openssl_seconds)
    r1 = openssl_rate("sha1", args.openssl_seconds)
    limit = cores / (2 / r256 + 1 / r1)
    print(f"# openssl, one core, 16 KiB blocks: SHA-256 {r256 / 1e6:.0f} MB/s, SHA-1 {r1 / 1e6:.0f} MB/s")
    print(f"# hashing limit on {cores} cores for 2x SHA-256 + 1x SHA-1 per byte: {limit / 1e6:.0f} MB/s")

    runs = []
    perf_lines: list[str] = []
    with c.BigHub(size) as hub:
        for rep in range(args.reps):
            with c.node(hub.url, *args.node_flag) as node:
                url = node.url + hub.resolve_path("main")
                pid = node.proc.pid
                before_threads = c.thread_cpu(pid)
                node_cpu0, hub_cpu0 = c.process_cpu(pid), c.process_cpu(hub.pid)
                kids0 = os.times()
                perf_file = tempfile.mktemp(prefix="bench-perf-", suffix=".data")
                perf = perf_start(pid, perf_file) if (rep == args.reps - 1 and not args.no_perf) else None
                time.sleep(0.3 if perf else 0)  # let perf attach before the bytes flow
                try:
                    r = c.curl_get(url, max_time=600)
                    # CPU snapshots first: perf report (below) is a child too and is not the client.
                    kids1 = os.times()
                    node_cpu = c.process_cpu(pid) - node_cpu0
                    hub_cpu = c.process_cpu(hub.pid) - hub_cpu0
                    after_threads = c.thread_cpu(pid)
                finally:
                    lines = perf_report(perf, perf_file) if perf else []
                    if os.path.exists(perf_file):
                        os.unlink(perf_file)
                if r["code"] != 200 or r["bytes"] != size:
                    raise RuntimeError(f"through the node: {r}")
                code, digest = c.sha256_of_url(node.url + hub.resolve_path())
                if code != 200 or digest != hub.sha256:
                    raise RuntimeError(f"node stored {digest} (status {code}), want {hub.sha256}")
            per_thread = sorted(((tid, name, cpu - before_threads.get(tid, ("", 0.0))[1])
                                 for tid, (name, cpu) in after_threads.items()), key=lambda t: -t[2])
            # children = curl (+ perf on the profiled rep; its CPU is small but reported as client)
            client_cpu = (kids1.children_user + kids1.children_system) - (kids0.children_user + kids0.children_system)
            runs.append({"speed": r["speed"], "wall": r["total"], "node_cpu": node_cpu, "hub_cpu": hub_cpu,
                         "client_cpu": client_cpu, "threads": per_thread})
            if lines:
                perf_lines = lines
            print(f"# rep {rep + 1}: {r['speed'] / 1e6:.0f} MB/s in {r['total']:.2f} s; CPU s: node {node_cpu:.2f}, "
                  f"fake hub {hub_cpu:.2f}, curl {client_cpu:.2f}", flush=True)

    speed = c.median([r["speed"] for r in runs])
    last = runs[-1]
    print()
    c.table(["", "value"], [
        ["node cold-miss throughput", c.mbps(speed)],
        ["hashing limit (2 cores)", c.mbps(limit)],
        ["node / limit", f"{speed / limit:.2f}"],
        ["node CPU per GB ingested", f"{last['node_cpu'] / (size / 1e9):.2f} s"],
        ["pure hashing CPU per GB (openssl)", f"{(2 / r256 + 1 / r1) * 1e9:.2f} s"],
    ])
    print()
    wall = last["wall"]
    print(f"CPU during the last run ({wall:.2f} s wall, {cores} cores = {cores * wall:.2f} CPU s available):")
    c.table(["process", "CPU s", "share of machine"], [
        [name, f"{v:.2f}", f"{v / (cores * wall) * 100:.0f}%"]
        for name, v in (("node", last["node_cpu"]), ("fake hub (python, competes for the same cores)", last["hub_cpu"]),
                        ("curl client", last["client_cpu"]))])
    print()
    print("node threads, busiest first (threads are unnamed: 'comm' is the process name for all):")
    busy = [t for t in last["threads"] if t[2] >= 0.01]
    c.table(["tid", "comm", "CPU s", "% of node"],
            [[tid, name, f"{cpu:.2f}", f"{cpu / max(last['node_cpu'], 1e-9) * 100:.0f}%"] for tid, name, cpu in busy[:20]])
    print(f"({len(busy)} threads used >= 10 ms; {len(last['threads'])} threads in all)")
    if perf_lines:
        print()
        print("perf record -F 499 -p <node>: where the node's CPU went during the last run (self time):")
        for l in perf_lines:
            print("  " + l.strip())
    print()
    c.ratio("ingest_vs_hash_limit", speed / limit, "node/limit, higher is better, goal >= 0.7")
    return 0


if __name__ == "__main__":
    sys.exit(main())
