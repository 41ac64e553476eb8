#!/usr/bin/env python3
"""The cost of limits on the hit path: the same node with rate limits on and off, in one run.

Two nodes on the same fake Hub serve the same stored file to a node user (Authorization: Bearer il_...):
  off: no limit policy (the key is still checked and every request still recorded for usage)
  on:  the user's policy limits requests, tokens and concurrent downloads (generous enough never to
       refuse), so every request takes a GCRA decision, a concurrent-download slot, and its bytes are
       charged to the token limit as they flow
  redis (with --redis): the same policy kept in a redis-server on loopback (one script per decision)
Load: 64 KiB Range requests at random offsets, wrk -t2 -c32, node by node alternately, --reps times;
the median requests/s of each. Goal: on/off >= 0.95 (under 5 % overhead).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import common as c
from hits import WRK_LUA

ADMIN_KEY = "bench-admin-key-0123456789"
POLICY = "requests=1000000000/1s tokens=1000000000/1s concurrent=100000"



def make_user(node) -> str:
    def call(path: str, body: dict) -> dict:
        req = urllib.request.Request(node.url + "/api/inferllama/" + path, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    call("users", {"name": "bench"})
    return call("keys", {"user": "bench"})["key"]


def wrk_rps(url: str, lua: str, duration: int) -> float:
    out = c.run(["wrk", "-t2", "-c32", f"-d{duration}s", "--timeout", "5s", "-s", lua, url], timeout=duration + 60)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or non2xx:
        raise RuntimeError(f"bad wrk run:\n{out}")
    return float(rps.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="64MiB", help="file size (default 64MiB)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="wrk seconds per run")
    ap.add_argument("--redis", action="store_true", help="also a node whose limits live in redis-server")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    redis = None
    redis_dir = tempfile.mkdtemp(prefix="bench-redis-")
    try:
        flags = {"off": [], "on": ["--limit-default", POLICY]}
        if args.redis:
            port = c.free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", redis_dir], stdout=subprocess.PIPE)
            for line in redis.stdout:
                if b"Ready to accept connections" in line:
                    break
            flags["redis"] = ["--limit-default", POLICY, "--ratelimit-backend", f"redis://127.0.0.1:{port}"]
        print(f"# limits: {c.fmt_size(size)} file, 64 KiB ranges, {args.reps} reps, nodes alternately")
        with c.BigHub(size) as hub:
            res = {name: [] for name in flags}
            nodes, luas = {}, {}
            try:
                for name, extra in flags.items():
                    nodes[name] = c.node(hub.url, *extra, admin_key=ADMIN_KEY)
                started = {name: ctx.__enter__() for name, ctx in nodes.items()}
                for name, node in started.items():
                    key = make_user(node)
                    url = node.url + hub.resolve_path()
                    c.curl_get(url, extra=["-H", f"Authorization: Bearer {key}"])  # store it
                    lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
                    script = WRK_LUA.format(size=size, block=65536, nblocks=size // 65536)
                    # Every request carries the user's key (wrk.format's header table replaces -H headers).
                    script = script.replace('{["Range"] =', '{["Authorization"] = "Bearer ' + key + '", ["Range"] =')
                    assert key in script
                    lua.write(script)
                    lua.close()
                    luas[name] = (url, lua.name)
                for rep in range(args.reps):
                    for name, (url, lua) in luas.items():
                        res[name].append(wrk_rps(url, lua, args.duration))
                    print(f"# rep {rep + 1}: " + "  ".join(f"{n}: {v[-1]:.0f} req/s" for n, v in res.items()),
                          flush=True)
            finally:
                for name, ctx in nodes.items():
                    ctx.__exit__(None, None, None)
                for _, lua in luas.values():
                    os.unlink(lua)
    finally:
        if redis:
            redis.terminate()
            redis.wait(timeout=30)
        shutil.rmtree(redis_dir, ignore_errors=True)
    med = {n: c.median(v) for n, v in res.items()}
    print()
    c.table(["limits", "req/s", "vs off"], [[n, f"{v:.0f}", f"{v / med['off']:.3f}"] for n, v in med.items()])
    print()
    c.ratio("limits_on_vs_off_rps", med["on"] / med["off"], "higher is better, goal >= 0.95")
    if "redis" in med:
        c.ratio("limits_redis_vs_off_rps", med["redis"] / med["off"], "higher is better (report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
