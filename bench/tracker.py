#!/usr/bin/env python3
"""Tracker throughput: the node's tracker against Debian's opentracker, each pinned to one core.

The load generator (bench/tracker_load.cpp, compiled here with g++ -O2) runs on the other core. Both
trackers get the same pre-filled swarms (--swarms hashes x --peers peers) and answer 50 peers per
announce. Measured, alternating node and opentracker, medians of --reps:
  udp    connect:announce:scrape = 50:50:1 over many source ports (sendmmsg/recvmmsg), announces/s
  http   GET /announce, a new connection each (Connection: close), announces/s
  keep   the same on kept-alive connections (node only: opentracker closes after every answer)

Debian's opentracker is built with a whitelist (WANT_ACCESSLIST_WHITE) and has no IPv6: it runs with
the benchmark's hashes whitelisted, and the node runs --tracker-open (the same swarms; restricted mode
differs only in refusing unknown hashes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_udp(port: int) -> None:
    import socket
    import struct
    deadline = time.time() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.time() < deadline:
            s.sendto(struct.pack(">QII", 0x41727101980, 0, 1), ("127.0.0.1", port))
            try:
                s.recv(64)
                return
            except OSError:
                pass
    raise RuntimeError(f"no tracker on udp {port}")


def load(exe: str, *args) -> dict:
    out = subprocess.run(["taskset", "-c", "1", exe, *map(str, args)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr}{out.stdout}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Server:
    def __init__(self, name: str, cmd: list[str], udp: int, tcp: int):
        self.name, self.cmd, self.udp, self.tcp = name, cmd, udp, tcp
        self.proc = None

    def __enter__(self):
        # No INFERLLAMA_* variables: the node refuses unknown ones (INFERLLAMA_BINARY).
        self.proc = subprocess.Popen(["taskset", "-c", "0", *self.cmd], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=common.harness.clean_env())
        wait_udp(self.udp)
        return self

    def __exit__(self, *exc):
        common.harness.stop_process(self.proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", help="ignored (run_all.sh passes it to every benchmark)")
    ap.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--swarms", type=int, default=200)
    ap.add_argument("--peers", type=int, default=60, help="peers per swarm before the measurement")
    ap.add_argument("--sockets", type=int, default=32, help="UDP client sockets (source ports)")
    ap.add_argument("--window", type=int, default=8, help="UDP requests in flight per socket")
    ap.add_argument("--connections", type=int, default=32, help="concurrent HTTP clients")
    args = ap.parse_args()
    common.check_binary()
    if not shutil.which("opentracker"):
        sys.exit("opentracker not found (apt-get install opentracker)")
    if not {0, 1} <= os.sched_getaffinity(0):
        sys.exit("needs cores 0 and 1 (the trackers are pinned to core 0, the load to core 1)")

    work = tempfile.mkdtemp(prefix="inferllama-bench-tracker-")
    try:
        exe = os.path.join(work, "tracker_load")
        subprocess.run(["g++", "-O2", "-std=c++20", "-o", exe, os.path.join(HERE, "tracker_load.cpp")], check=True)
        hashes = os.path.join(work, "hashes.txt")
        with open(hashes, "w") as f:
            f.writelines(os.urandom(20).hex() + "\n" for _ in range(args.swarms))
        # opentracker chroots into its directory (when root) and reads the whitelist from there.
        ot_dir = os.path.join(work, "ot")
        os.makedirs(ot_dir)
        shutil.copy(hashes, os.path.join(ot_dir, "whitelist"))
        os.chmod(work, 0o755)
        os.chmod(ot_dir, 0o755)
        whitelist = "/whitelist" if os.geteuid() == 0 else os.path.join(ot_dir, "whitelist")

        def node():
            udp, tcp = free_port(), free_port()
            data = tempfile.mkdtemp(dir=work)
            # Every benchmark peer is 127.0.0.1 on its own port: lift the per-address cap (opentracker has
            # none) so both trackers hold the same swarms.
            return Server("node", [common.harness.BINARY, "serve", "--listen", f"127.0.0.1:{tcp}",
                                   "--tracker-udp", f"127.0.0.1:{udp}", "--tracker-open", "--io-threads", "1",
                                   "--worker-threads", "1", "--bt-listen", "", "--offline", "--data-dir", data,
                                   "--log-level", "warn", "--tracker-numwant", "50",
                                   "--tracker-max-peers-per-address", "65535"], udp, tcp)

        def opentracker():
            port = free_port()
            return Server("opentracker", ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port),
                                          "-d", ot_dir, "-w", whitelist], port, port)

        results: dict[tuple[str, str], list[dict]] = {}
        for rep in range(args.reps):
            for make in (node, opentracker):
                with make() as s:
                    load(exe, "fill", "127.0.0.1", s.udp, hashes, args.peers)
                    runs = {"udp": load(exe, "udp", "127.0.0.1", s.udp, hashes, args.duration, args.sockets,
                                        args.window, 50),
                            "http": load(exe, "http", "127.0.0.1", s.tcp, hashes, args.duration, args.connections,
                                         "close", 50)}
                    if s.name == "node":
                        runs["keep"] = load(exe, "http", "127.0.0.1", s.tcp, hashes, args.duration,
                                            args.connections, "keepalive", 50)
                    for kind, r in runs.items():
                        results.setdefault((s.name, kind), []).append(r)
                        print(f"  rep {rep + 1} {s.name:11s} {kind:4s} {r['announces'] / r['seconds']:10.0f} "
                              f"announces/s  peers/reply {r['peers_per_announce']:.1f}  errors {r['errors']}",
                              flush=True)

        def rate(name: str, kind: str) -> float:
            return common.median([r["announces"] / r["seconds"] for r in results[(name, kind)]])

        def peers(name: str, kind: str) -> float:
            return common.median([r["peers_per_announce"] for r in results[(name, kind)]])

        rows = [[f"{name} {kind}", f"{rate(name, kind):.0f}", f"{peers(name, kind):.1f}"]
                for name, kind in [("node", "udp"), ("opentracker", "udp"), ("node", "http"),
                                   ("opentracker", "http"), ("node", "keep")]]
        print()
        common.table(["tracker / load", "announces/s", "peers/reply"], rows)
        common.ratio("tracker_udp_announces", rate("node", "udp") / rate("opentracker", "udp"),
                     "node/opentracker, one core each, higher better, goal >= 1.0")
        common.ratio("tracker_http_announces_close", rate("node", "http") / rate("opentracker", "http"),
                     "node/opentracker, Connection: close, higher better, goal >= 1.0")
        common.ratio("tracker_http_keepalive_vs_close", rate("node", "keep") / rate("node", "http"),
                     "node keep-alive / node close; opentracker closes every connection")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
