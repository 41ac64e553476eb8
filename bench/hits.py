#!/usr/bin/env python3
"""Cache hits: the node serving a stored file vs nginx serving the same bytes from a plain file.

Anchor: Debian's nginx (sendfile on, tcp_nopush, keepalive, access_log off, one worker per core)
serving the fake Hub's materialised blob, i.e. the very bytes the node stored.

Measured, node and nginx alternately (so drifting background load hits both alike), `--reps` times:
  (a) one client downloading the whole file               -> bytes/s   (higher is better)
  (b) 16 concurrent clients downloading the whole file    -> aggregate bytes/s
  (c) 64 KiB Range requests at random 64 KiB-aligned offsets, wrk -t2 -c32 -d10s -> requests/s
The whole-file clients discard with splice(2) (see common.splice_get: curl would be the bottleneck).
Figures are medians over the repetitions. Goal: every ratio node/nginx >= 1.0 (nginx is the bar).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import common as c

WRK_LUA = """\
-- One 64 KiB Range per request at a random 64 KiB-aligned offset of a {size}-byte file.
local block = {block}
local nblocks = {nblocks}
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end
init = function(args)
  math.randomseed(os.time() * 1000 + id)  -- differ per thread
  statuses = {{}}
end
request = function()
  local off = math.random(0, nblocks - 1) * block
  return wrk.format("GET", nil, {{["Range"] = "bytes=" .. off .. "-" .. (off + block - 1)}})
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("WRKSUMMARY requests=%d bytes=%d errors=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.bytes,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_ranges(url: str, lua: str, duration: int, threads: int, conns: int) -> dict:
    out = c.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "-s", lua, url],
                timeout=duration + 60)
    m = re.search(r"WRKSUMMARY requests=(\d+) bytes=(\d+) errors=(\d+) p50_us=(\d+) p99_us=(\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    req, nbytes, errors, p50, p99 = map(int, m.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    per_req = nbytes / max(1, req)
    # A 206 of 64 KiB is ~65.8 kB with headers; a 200 of the whole file would show up here.
    if errors or non2xx or not (65536 <= per_req < 65536 + 2048):
        raise RuntimeError(f"bad range responses: errors={errors} non2xx={non2xx and non2xx.group(1)} "
                           f"bytes/request={per_req:.0f}\n{out}")
    return {"rps": float(rps.group(1)), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (median)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients for (b)")
    ap.add_argument("--duration", type=int, default=10, help="wrk seconds per run for (c)")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    print(f"# hits: {c.fmt_size(size)} file, {args.reps} reps, node and nginx alternately")

    with c.BigHub(size) as hub:
        blob = hub.blob_path()
        c.drop_page_cache_hint(blob)  # both servers read from a warm page cache
        lua = tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-ranges-", delete=False)
        lua.write(WRK_LUA.format(size=size, block=65536, nblocks=size // 65536))
        lua.close()
        try:
            with c.node(hub.url) as node, c.Nginx(blob) as nginx:
                node_url = node.url + hub.resolve_path()
                # Warm: one cold miss stores the file; check it is a hit and bit-exact.
                t0 = time.monotonic()
                c.curl_get(node_url)
                print(f"# warmed the node in {time.monotonic() - t0:.1f} s")
                code, digest = c.sha256_of_url(node_url)
                if code != 200 or digest != hub.sha256:
                    raise RuntimeError(f"node served {code} {digest}, want {hub.sha256}")
                served = hub.cdn_bytes()
                targets = {"node": node_url, "nginx": nginx.url}
                res = {k: {"one": [], "many": [], "rps": [], "p99": []} for k in targets}
                for rep in range(args.reps):
                    for name, url in targets.items():
                        r = c.splice_get(url)
                        if r["code"] != 200 or r["bytes"] != size:
                            raise RuntimeError(f"{name}: {r}")
                        res[name]["one"].append(r["speed"])
                    for name, url in targets.items():
                        res[name]["many"].append(c.splice_many(url, args.clients, size)["aggregate"])
                    for name, url in targets.items():
                        w = wrk_ranges(url, lua.name, args.duration, 2, 32)
                        res[name]["rps"].append(w["rps"])
                        res[name]["p99"].append(w["p99_ms"])
                    print(f"# rep {rep + 1}: " + "  ".join(
                        f"{n}: 1x {v['one'][-1] / 1e9:.2f} GB/s, {args.clients}x {v['many'][-1] / 1e9:.2f} GB/s, "
                        f"{v['rps'][-1]:.0f} req/s" for n, v in res.items()), flush=True)
                if hub.cdn_bytes() != served:
                    print(f"# WARNING: the node fetched {hub.cdn_bytes() - served} bytes upstream during hits")
        finally:
            os.unlink(lua.name)

    med = {n: {k: c.median(v) for k, v in d.items()} for n, d in res.items()}
    print()
    c.table(["measurement", "node", "nginx", "node/nginx"], [
        ["(a) 1 client, whole file", c.mbps(med["node"]["one"]), c.mbps(med["nginx"]["one"]),
         f"{med['node']['one'] / med['nginx']['one']:.2f}"],
        [f"(b) {args.clients} clients, aggregate", c.mbps(med["node"]["many"]), c.mbps(med["nginx"]["many"]),
         f"{med['node']['many'] / med['nginx']['many']:.2f}"],
        ["(c) 64 KiB ranges, req/s", f"{med['node']['rps']:.0f}", f"{med['nginx']['rps']:.0f}",
         f"{med['node']['rps'] / med['nginx']['rps']:.2f}"],
        ["(c) p99 latency, ms", f"{med['node']['p99']:.2f}", f"{med['nginx']['p99']:.2f}",
         f"{med['node']['p99'] / med['nginx']['p99']:.2f}"],
    ])
    print()
    c.ratio("hits_single_client_throughput", med["node"]["one"] / med["nginx"]["one"], "node/nginx, higher is better, goal >= 1")
    c.ratio("hits_concurrent_clients_throughput", med["node"]["many"] / med["nginx"]["many"], "node/nginx, higher is better, goal >= 1")
    c.ratio("hits_64k_ranges_rps", med["node"]["rps"] / med["nginx"]["rps"], "node/nginx, higher is better, goal >= 1")
    c.ratio("hits_64k_ranges_p99_latency", med["node"]["p99"] / med["nginx"]["p99"], "node/nginx, LOWER is better")
    return 0


if __name__ == "__main__":
    sys.exit(main())
