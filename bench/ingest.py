#!/usr/bin/env python3
"""Ingest: cold-miss throughput with an unlimited CDN, against nginx proxy_cache filling its cache from
the same CDN, and against the machine's hashing limit.

Every byte the node ingests is hashed three times: SHA-256 merkle of its 16 KiB blocks (the chunk's
content address / BitTorrent v2 piece root), SHA-1 of its 4 MiB piece, and the in-order whole-file
SHA-256. So on this machine the node can never ingest faster than

    limit = cores / (2 / R_sha256 + 1 / R_sha1)   bytes/s

where R_* are single-core rates from `openssl speed -bytes 16384 -evp ...` (the same EVP code the
node uses, SHA-NI where the CPU has it). With 2 cores, limit = 2 / (2/R256 + 1/R1).
Anchors: that limit (goal node / limit >= 0.7), and Debian's nginx as a caching proxy of the same
signed CDN URL (`proxy_cache`, `proxy_buffering on`, `sendfile on`, one worker per core; a fresh cache
directory every rep) filling its cache with the same file (goal node / nginx >= 0.9). Node: a cold
miss through a fresh node. Both are timed by the same client (curl -o /dev/null), node and nginx
alternately, which goes first alternating too. After each fill the script checks that it was stored:
nginx's cache directory must hold one file whose body is the file (SHA-256 checked), the node must
have committed the file and serve it with the right SHA-256. The node's figure is the client's; the
time from the client's last byte to the node's commit (fdatasync of every chunk, one RocksDB write;
nginx renames its temporary file without a sync) is printed beside it.

The fake Hub (Python, sendfile), curl and the node share the same cores, so the limit is not
reachable in this setup; the CPU table shows how much of the machine each took. Where the node's
time goes: CPU seconds per node thread (threads are unnamed, so they are listed by thread id,
busiest first) and, if `perf` works here, the node's hottest symbols during the download.
"""
from __future__ import annotations

import argparse
import hashlib
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


NGINX_PROXY_CACHE_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=ingest:10m max_size=64g inactive=1h use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {cdn};
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_cache ingest;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


class NginxProxyCache(c.NginxProcess):
    """Debian's nginx as a caching reverse proxy of the fake CDN, on a fresh cache directory (the
    anchor for a cold fill)."""

    prefix = "bench-nginx-cache-"

    def __init__(self, cdn_origin: str):
        super().__init__()
        self.cdn = cdn_origin
        self.cache = os.path.join(self.tmp, "cache")  # the workers (nobody) write it

    def config(self, port: int) -> str:
        return NGINX_PROXY_CACHE_CONF.format(tmp=self.tmp, port=port, cdn=self.cdn, workers=os.cpu_count() or 1)

    def __enter__(self) -> "NginxProxyCache":
        super().__enter__()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def pids(self) -> list[int]:
        """The master and its workers (waits for them: the port opens before every worker runs)."""
        deadline = time.monotonic() + 10
        while len(pids := c.tree_pids(self.proc.pid)) < 1 + (os.cpu_count() or 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pids

    def cached_files(self) -> list[str]:
        return [os.path.join(d, f) for d, _, files in os.walk(self.cache) for f in files]


def cached_body_sha256(path: str, size: int) -> str:
    """SHA-256 of the last `size` bytes of an nginx cache file (its body follows a small header)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        fh.seek(os.path.getsize(path) - size)
        while chunk := fh.read(8 * c.MIB):
            h.update(chunk)
    return h.hexdigest()


def processes_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            total += c.process_cpu(p)
        except OSError:
            pass
    return total


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


COMPLETED = 'inferllama_downloads_total{result="completed"}'


def node_fill(hub: c.BigHub, size: int, flags: list[str], profile: bool) -> dict:
    """A cold miss through a fresh node: the client's figures, the wait for the commit after it, CPU."""
    with c.node(hub.url, *flags) as node:
        url = node.url + hub.resolve_path("main")
        pid = node.proc.pid
        before_threads = c.thread_cpu(pid)
        node_cpu0, hub_cpu0, kids0 = c.process_cpu(pid), c.process_cpu(hub.pid), children_cpu()
        perf_file = tempfile.mktemp(prefix="bench-perf-", suffix=".data")
        perf = perf_start(pid, perf_file) if profile else None
        time.sleep(0.3 if perf else 0)  # let perf attach before the bytes flow
        lines: list[str] = []
        try:
            r = c.curl_get(url, max_time=600)
            done = time.monotonic()
            # Stored means committed (chunks synced, index written): wait for it, timed from the last byte.
            while node.metric(COMPLETED) < 1:
                if time.monotonic() - done > 120:
                    raise RuntimeError("the node did not commit the file within 120 s of sending it")
                time.sleep(0.01)
            commit_lag = time.monotonic() - done
            # CPU snapshots first: perf report (below) is a child too and is not the client.
            client_cpu = children_cpu() - kids0
            node_cpu = c.process_cpu(pid) - node_cpu0
            hub_cpu = c.process_cpu(hub.pid) - hub_cpu0
            after_threads = c.thread_cpu(pid)
        finally:
            if perf:
                lines = perf_report(perf, perf_file)
            if os.path.exists(perf_file):
                os.unlink(perf_file)
        if r["code"] != 200 or r["bytes"] != size:
            raise RuntimeError(f"through the node: {r}")
        code, digest = c.sha256_of_url(node.url + hub.resolve_path())
        if code != 200 or digest != hub.sha256:
            raise RuntimeError(f"node stored {digest} (status {code}), want {hub.sha256}")
    per_thread = sorted(((tid, name, cpu - before_threads.get(tid, ("", 0.0))[1])
                         for tid, (name, cpu) in after_threads.items()), key=lambda t: -t[2])
    return {"speed": r["speed"], "wall": r["total"], "commit_lag": commit_lag, "server_cpu": node_cpu,
            "hub_cpu": hub_cpu, "client_cpu": client_cpu, "threads": per_thread, "perf": lines}


def nginx_fill(hub: c.BigHub, size: int) -> dict:
    """A cold fill of a fresh nginx proxy_cache from the same CDN; checks the cache holds the file."""
    cdn_url = hub.cdn_url()  # signed, fresh for every rep
    origin, _, path = cdn_url.partition("//")[2].partition("/")
    with NginxProxyCache("http://" + origin) as nginx:
        pids = nginx.pids()
        nginx_cpu0, hub_cpu0, kids0 = processes_cpu(pids), c.process_cpu(hub.pid), children_cpu()
        r = c.curl_get(f"{nginx.url}/{path}", max_time=600)
        done = time.monotonic()
        # nginx renames its temporary file into the cache when the upstream response ends.
        while not [f for f in nginx.cached_files() if os.path.getsize(f) > size]:
            if time.monotonic() - done > 120:
                raise RuntimeError(f"nginx cached nothing of {size} bytes: {nginx.cached_files()}")
            time.sleep(0.01)
        commit_lag = time.monotonic() - done
        client_cpu = children_cpu() - kids0
        nginx_cpu = processes_cpu(pids) - nginx_cpu0
        hub_cpu = c.process_cpu(hub.pid) - hub_cpu0
        if r["code"] != 200 or r["bytes"] != size:
            raise RuntimeError(f"through nginx: {r}")
        files = nginx.cached_files()
        if len(files) != 1 or not size < os.path.getsize(files[0]) < size + 64 * 1024:
            raise RuntimeError(f"nginx's cache holds {[(f, os.path.getsize(f)) for f in files]}, want one file "
                               f"of {size} bytes and its header")
        if cached_body_sha256(files[0], size) != hub.sha256:
            raise RuntimeError(f"nginx's cache file {files[0]} does not end with the file's bytes")
    return {"speed": r["speed"], "wall": r["total"], "commit_lag": commit_lag, "server_cpu": nginx_cpu,
            "hub_cpu": hub_cpu, "client_cpu": client_cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=3, help="cold fills of each (node, nginx), alternating")
    ap.add_argument("--openssl-seconds", type=int, default=3)
    ap.add_argument("--no-perf", action="store_true", help="skip the perf profile of the node's last rep")
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

    runs: dict[str, list[dict]] = {"node": [], "nginx": []}
    with c.BigHub(size) as hub:
        for rep in range(args.reps):
            order = ("node", "nginx") if rep % 2 == 0 else ("nginx", "node")
            for who in order:
                if who == "node":
                    r = node_fill(hub, size, args.node_flag, rep == args.reps - 1 and not args.no_perf)
                else:
                    r = nginx_fill(hub, size)
                runs[who].append(r)
                print(f"# rep {rep + 1} {who:5}: {r['speed'] / 1e6:.0f} MB/s in {r['wall']:.2f} s, stored "
                      f"{r['commit_lag'] * 1000:.0f} ms after the last byte; CPU s: {who} {r['server_cpu']:.2f}, "
                      f"fake hub {r['hub_cpu']:.2f}, curl {r['client_cpu']:.2f}", flush=True)

    speed = c.median([r["speed"] for r in runs["node"]])
    nginx_speed = c.median([r["speed"] for r in runs["nginx"]])
    last, last_nginx = runs["node"][-1], runs["nginx"][-1]
    print()
    c.table(["", "value"], [
        ["node cold-miss throughput (median)", c.mbps(speed)],
        ["nginx proxy_cache cold fill (median)", c.mbps(nginx_speed)],
        ["node / nginx", f"{speed / nginx_speed:.2f}"],
        ["node commit after the last byte (median)", f"{c.median([r['commit_lag'] for r in runs['node']]) * 1000:.0f} ms"],
        ["hashing limit (2 cores)", c.mbps(limit)],
        ["node / limit", f"{speed / limit:.2f}"],
        ["node CPU per GB ingested", f"{last['server_cpu'] / (size / 1e9):.2f} s"],
        ["nginx CPU per GB cached", f"{last_nginx['server_cpu'] / (size / 1e9):.2f} s"],
        ["pure hashing CPU per GB (openssl)", f"{(2 / r256 + 1 / r1) * 1e9:.2f} s"],
    ])
    print()
    print(f"CPU during the last run of each ({cores} cores):")
    rows = []
    for who, r in (("node", last), ("nginx", last_nginx)):
        avail = cores * r["wall"]
        for name, v in ((who, r["server_cpu"]), ("fake hub (python, competes for the same cores)", r["hub_cpu"]),
                        ("curl client", r["client_cpu"])):
            rows.append([f"{who} run: {name}", f"{v:.2f}", f"{v / avail * 100:.0f}%"])
    c.table(["process", "CPU s", "share of machine"], rows)
    print()
    print("node threads, busiest first (threads are unnamed: 'comm' is the process name for all):")
    busy = [t for t in last["threads"] if t[2] >= 0.01]
    c.table(["tid", "comm", "CPU s", "% of node"],
            [[tid, name, f"{cpu:.2f}", f"{cpu / max(last['server_cpu'], 1e-9) * 100:.0f}%"] for tid, name, cpu in busy[:20]])
    print(f"({len(busy)} threads used >= 10 ms; {len(last['threads'])} threads in all)")
    if last["perf"]:
        print()
        print("perf record -F 499 -p <node>: where the node's CPU went during its last run (self time):")
        for l in last["perf"]:
            print("  " + l.strip())
    print()
    c.ratio("ingest_vs_hash_limit", speed / limit, "node/limit, higher is better, goal >= 0.7")
    c.ratio("ingest_vs_nginx_proxy_cache", speed / nginx_speed, "node/nginx, higher is better, goal >= 0.9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
