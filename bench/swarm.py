#!/usr/bin/env python3
"""Swarm: 4 aria2c leechers fetch a snapshot from the node's seed vs from a plain libtorrent seed.

The node seeds acme/big-model (one LFS file of --size bytes plus config.json) from its chunk store
once its torrent has been requested. The anchor is bench/lt_seed.py: libtorrent 2.0.8 with
high_performance_seed() and the node's peer-side settings, seeding the SAME .torrent from plain
files on disk (fetched from the node over HTTP and checked against the fake Hub's manifest).

Both runs use one .torrent (same info dict, same info-hash) with the web seed ('url-list') removed,
so every byte flows over the peer wire, and one HTTP tracker: the node's own tracker, which puts the
node's seed into its peer lists (node run), or the same tracker code in a second node started with
--tracker-open and no BitTorrent listener, to which the libtorrent seed announces (anchor run).
The leechers: `--leechers` aria2c processes started together, each with its own download directory
and listen port, identical options, no DHT/LPD/PEX (peers come from the tracker only, so discovery
is the same in both runs); they exchange pieces with each other too (a swarm). Timed from the first
start until the last aria2c has exited with everything downloaded (--seed-time=0). Every leecher's
files are checked afterwards: sizes, and the model file's SHA-256 against the manifest.

Runs alternate node and anchor (which goes first alternates too) `--reps` times. Reported: wall time
per run, aggregate MB/s (leechers x size / wall), CPU seconds of the seeding process and of the
leechers. Goal: RATIO swarm_fetch_time = median node time / median libtorrent time <= 1.0.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import common as c
import harness

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-libtorrent is built for it
LT_SEED = os.path.join(c.HERE, "lt_seed.py")


# --------------------------------------------------------------------------------------------
# bencode, order-preserving: the info dict is written back byte for byte (same info-hash)
# --------------------------------------------------------------------------------------------

def bdecode(data: bytes, i: int = 0):
    ch = data[i:i + 1]
    if ch == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if ch in (b"l", b"d"):
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        return (dict(zip(items[::2], items[1::2])) if ch == b"d" else items), i + 1
    colon = data.index(b":", i)
    end = colon + 1 + int(data[i:colon])
    return data[colon + 1:end], end


def bencode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in value.items()) + b"e"
    raise TypeError(type(value))


def peer_wire_torrent(metainfo: bytes, announce: str) -> tuple[bytes, dict]:
    """The node's .torrent with no web seed and `announce` as its only tracker."""
    meta, end = bdecode(metainfo)
    if end != len(metainfo) or bencode(meta) != metainfo:
        raise RuntimeError("the node's .torrent does not round-trip through bencode")
    meta.pop(b"url-list", None)
    meta.pop(b"announce-list", None)
    meta[b"announce"] = announce.encode()
    meta = dict(sorted(meta.items()))  # outer keys stay sorted (BEP 3); the info dict is untouched
    return bencode(meta), meta[b"info"]


def torrent_files(info: dict) -> list[tuple[str, int]]:
    """(path under the torrent's name, length) of every real file (BEP 47 pad files left out)."""
    if b"files" not in info:
        return [("", info[b"length"])]
    return [("/".join(p.decode() for p in f[b"path"]), f[b"length"])
            for f in info[b"files"] if b"p" not in f.get(b"attr", b"")]


# --------------------------------------------------------------------------------------------
# The anchor seed and the leechers
# --------------------------------------------------------------------------------------------

class LibtorrentSeed:
    """bench/lt_seed.py under /usr/bin/python3, ready once it has announced to the tracker."""

    def __init__(self, torrent: str, save_path: str):
        self.cmd = [SYSTEM_PYTHON, LT_SEED, "--torrent", torrent, "--save-path", save_path]
        self.proc: subprocess.Popen | None = None
        self.stats: list[int] = []  # every STATS line it printed, in order
        self.changed = threading.Condition()

    def __enter__(self) -> "LibtorrentSeed":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE)
        self.port = int(harness._read_line_with_prefix(self.proc, "LISTENING", "lt_seed.py").split("=")[1])
        harness._read_line_with_prefix(self.proc, "ANNOUNCED", "lt_seed.py")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("STATS uploaded="):
                with self.changed:
                    self.stats.append(int(line.split()[1].split("=")[1]))
                    self.changed.notify_all()
            elif line.startswith("ERROR"):
                print(f"# lt_seed: {line}")

    def uploaded(self) -> int:
        """Payload bytes the seed has sent so far (asked with SIGUSR1, answered on stdout)."""
        with self.changed:
            seen = len(self.stats)
            self.proc.send_signal(signal.SIGUSR1)
            if not self.changed.wait_for(lambda: len(self.stats) > seen, timeout=10):
                raise RuntimeError("lt_seed.py did not answer SIGUSR1")
            return self.stats[-1]

    def __exit__(self, *exc) -> None:
        c.harness.stop_process(self.proc, timeout=30)
        self.reader.join(timeout=5)

    @property
    def pid(self) -> int:
        return self.proc.pid


def node_uploaded(metrics_url: str) -> int:
    """Bytes the node's seed has read from chunks for peers (a live counter; the payload-sent
    counter is refreshed only once a second)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("inferllama_bt_chunk_read_bytes_total"):
                return int(float(line.split()[-1]))
    raise RuntimeError("no inferllama_bt_chunk_read_bytes_total in /metrics")


def aria2c_cmd(torrent: str, directory: str, port: int, max_peers: int, timeout: int) -> list[str]:
    return ["aria2c", f"--dir={directory}", f"--listen-port={port}",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            # Peers come from the tracker alone: the same discovery in both runs.
            "--enable-peer-exchange=false",
            f"--bt-max-peers={max_peers}", "--seed-time=0", "--file-allocation=none",
            "--summary-interval=0", "--console-log-level=error", "--download-result=hide",
            f"--bt-stop-timeout={timeout}", "--bt-tracker-connect-timeout=10", torrent]


def run_swarm(torrent: str, root: str, leechers: int, max_peers: int, timeout: int, seed_pid: int,
              seed_uploaded) -> dict:
    """`leechers` aria2c at once; wall time from the first start to the last exit."""
    dirs = [tempfile.mkdtemp(prefix="leecher-", dir=root) for _ in range(leechers)]
    logs = [open(os.path.join(d, "aria2c.out"), "w+") for d in dirs]
    finished: list = [None] * leechers
    seed_threads0 = c.thread_cpu(seed_pid)
    seed_cpu0 = c.process_cpu(seed_pid)
    seed_bytes0 = seed_uploaded()
    seed_switches0 = context_switches(seed_pid)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    procs = [subprocess.Popen(aria2c_cmd(torrent, os.path.join(d, "dl"), c.free_port(), max_peers, timeout),
                              stdout=log, stderr=subprocess.STDOUT) for d, log in zip(dirs, logs)]

    def wait_one(i: int) -> None:
        try:
            procs[i].wait(timeout + 60)
            finished[i] = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            pass

    waiters = [threading.Thread(target=wait_one, args=(i,), daemon=True) for i in range(leechers)]
    try:
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        wall = time.monotonic() - t0
        seed_cpu = c.process_cpu(seed_pid) - seed_cpu0
        seed_threads = c.thread_cpu(seed_pid)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        seed_bytes = seed_uploaded() - seed_bytes0
        seed_switches = context_switches(seed_pid) - seed_switches0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0 or finished[i] is None]
    if failed:
        i = failed[0][0]
        with open(os.path.join(dirs[i], "aria2c.out"), errors="replace") as fh:
            tail = fh.read()[-1500:]
        raise RuntimeError(f"aria2c failed (leecher, exit code): {failed}; leecher {i} said:\n{tail}")
    # Busiest threads of the seeding process over the run (where its CPU went).
    per_thread: dict[str, float] = {}
    for tid, (name, cpu) in seed_threads.items():
        per_thread[name] = per_thread.get(name, 0.0) + cpu - seed_threads0.get(tid, (name, 0.0))[1]
    return {"wall": wall, "times": sorted(finished), "dirs": dirs, "seed_cpu": seed_cpu, "seed_bytes": seed_bytes,
            "seed_switches": seed_switches,
            "seed_threads": sorted(per_thread.items(), key=lambda kv: -kv[1])[:4],
            "leecher_cpu": (kids.ru_utime + kids.ru_stime) - (kids0.ru_utime + kids0.ru_stime)}


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches over a process's live threads: a seed that hops
    between threads for every block shows it here."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                total += sum(int(l.split()[1]) for l in fh if "ctxt_switches:" in l)
        except OSError:
            pass
    return total


def sha256_file(path: str) -> str:
    # openssl rather than hashlib: ~1.8 GB/s with SHA-NI, and a whole GiB per leecher to check.
    return c.run(["openssl", "dgst", "-sha256", "-r", path], timeout=300).split()[0]


def verify_leechers(dirs: list[str], name: str, files: list[tuple[str, int]], model_sha256: str) -> None:
    for d in dirs:
        for rel, length in files:
            path = os.path.join(d, "dl", name, rel)
            if os.path.getsize(path) != length:
                raise RuntimeError(f"{path}: {os.path.getsize(path)} bytes, want {length}")
        got = sha256_file(os.path.join(d, "dl", name, c.BIG_PATH))
        if got != model_sha256:
            raise RuntimeError(f"{d}: {c.BIG_PATH} has sha256 {got}, want {model_sha256}")


# --------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="size of the model file (default 1GiB; e.g. 128MiB for a quick run)")
    ap.add_argument("--reps", type=int, default=2, help="runs of each seed, alternating (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds of each seed first (default 1)")
    ap.add_argument("--leechers", type=int, default=4, help="aria2c processes at once (default 4)")
    ap.add_argument("--max-peers", type=int, default=16, help="aria2c --bt-max-peers (default 16: no cap for the swarm)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds one swarm run may take at most")
    ap.add_argument("--download-root", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where the leechers write (default /dev/shm: the leechers' disk stays out of the figure)")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    print(f"# swarm: {c.fmt_size(size)} model, {args.leechers} aria2c leechers, {args.reps} reps, "
          f"node and libtorrent seeds alternately; leechers write under {args.download_root}")

    work = tempfile.mkdtemp(prefix="inferllama-bench-swarm-")
    leech_root = tempfile.mkdtemp(prefix="inferllama-bench-swarm-", dir=args.download_root)
    res: dict[str, list[dict]] = {"node": [], "libtorrent": []}
    try:
        with c.BigHub(size) as hub, c.node(hub.url) as node, \
                c.node(hub.url, "--tracker-open", "--bt-listen", "") as tracker:
            files = hub.hub.files(c.BIG_REPO)
            torrent_url = f"{node.url}/api/models/{c.BIG_REPO}/torrent/{hub.commit}"
            t0 = time.monotonic()
            with urllib.request.urlopen(torrent_url, timeout=900) as r:  # completes the snapshot, untimed
                metainfo = r.read()
            print(f"# the node completed and seeds the snapshot: first torrent GET took {time.monotonic() - t0:.1f} s")

            node_torrent, info = peer_wire_torrent(metainfo, f"{node.url}/announce")
            anchor_torrent, _ = peer_wire_torrent(metainfo, f"{tracker.url}/announce")
            print(f"# info-hash {hashlib.sha1(bencode(info)).hexdigest()}, {len(info[b'pieces']) // 20} pieces "
                  f"of {c.fmt_size(info[b'piece length'])}")
            paths = {"node": os.path.join(work, "node.torrent"), "libtorrent": os.path.join(work, "anchor.torrent")}
            for key, body in (("node", node_torrent), ("libtorrent", anchor_torrent)):
                with open(paths[key], "wb") as fh:
                    fh.write(body)

            # The anchor's files: the snapshot as the node serves it over HTTP, placed where the
            # torrent expects them, and checked against the Hub's manifest.
            name = info[b"name"].decode()
            real_files = torrent_files(info)
            torrent_length = sum(f[b"length"] for f in info[b"files"]) if b"files" in info else info[b"length"]
            save_path = os.path.join(work, "anchor")
            for rel, length in real_files:
                dest = os.path.join(save_path, name, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                got = c.curl_get(f"{node.url}/{c.BIG_REPO}/resolve/{hub.commit}/{rel}", out=dest)
                if got["code"] != 200 or os.path.getsize(dest) != length or sha256_file(dest) != files[rel]["sha256"]:
                    raise RuntimeError(f"anchor file {rel}: {got}")

            with LibtorrentSeed(paths["libtorrent"], save_path) as lt_seed:
                seeds = {"node": (node.proc.pid, lambda: node_uploaded(f"http://{node.host}:{node.metrics_port}/metrics")),
                         "libtorrent": (lt_seed.pid, lt_seed.uploaded)}
                # Warm-up rounds (not counted): the first swarm on a fresh machine state ran slowest
                # for both seeds, and whichever went first paid for it.
                for rep in range(-args.warmup, args.reps):
                    order = ["node", "libtorrent"] if rep % 2 == 0 else ["libtorrent", "node"]
                    line = []
                    for key in order:
                        r = run_swarm(paths[key], leech_root, args.leechers, args.max_peers, args.timeout, *seeds[key])
                        verify_leechers(r["dirs"], name, real_files, hub.sha256)
                        for d in r["dirs"]:
                            shutil.rmtree(d, ignore_errors=True)
                        if rep >= 0:
                            res[key].append(r)
                        line.append(f"{key}: {r['wall']:.2f} s (leechers done at "
                                    f"{', '.join(f'{t:.1f}' for t in r['times'])}), seed CPU {r['seed_cpu']:.1f} s "
                                    f"[{', '.join(f'{n} {s:.1f}' for n, s in r['seed_threads'])}], "
                                    f"leechers CPU {r['leecher_cpu']:.1f} s, "
                                    f"{r['seed_bytes'] / (args.leechers * torrent_length):.0%} of the bytes from the seed, "
                                    f"seed context switches {r['seed_switches']}")
                    print(f"# {'warm-up' if rep < 0 else f'rep {rep + 1}'}: " + "  |  ".join(line), flush=True)
    finally:
        shutil.rmtree(leech_root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    # Bytes the leechers received between them: aria2 1.36 fetches BEP 47 pad files too.
    total = args.leechers * torrent_length
    med = {k: {"wall": c.median([r["wall"] for r in v]), "seed_cpu": c.median([r["seed_cpu"] for r in v]),
               "leecher_cpu": c.median([r["leecher_cpu"] for r in v]),
               "from_seed": c.median([r["seed_bytes"] / total for r in v])} for k, v in res.items()}
    spread = {k: f"{min(r['wall'] for r in v):.2f}-{max(r['wall'] for r in v):.2f}" for k, v in res.items()}
    print()
    c.table(["seed", "median time", "min-max", "aggregate", "seed CPU s", "leechers CPU s", "bytes from seed"], [
        [k, f"{m['wall']:.2f} s", f"{spread[k]} s", c.mbps(total / m["wall"]), f"{m['seed_cpu']:.1f}",
         f"{m['leecher_cpu']:.1f}", f"{m['from_seed']:.0%}"] for k, m in med.items()])
    print(f"# per rep node/libtorrent: " + ", ".join(
        f"{n['wall'] / l['wall']:.2f}" for n, l in zip(res["node"], res["libtorrent"])))
    print()
    c.ratio("swarm_fetch_time", med["node"]["wall"] / med["libtorrent"]["wall"],
            "node/libtorrent seed, LOWER is better, goal <= 1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
