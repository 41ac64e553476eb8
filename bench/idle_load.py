#!/usr/bin/env python3
"""Idle load: 1000 idle keep-alive connections held open while 64 clients download a stored file.

A real node has many clients that connect, ask for something small and then sit on the connection
(keep-alive) while a few others pull big files. Idle connections must cost little memory and must
not slow the downloads down; none of them may be dropped before the idle timeout.

Per server (node and nginx alternately, same bytes, both running for the whole run), `--reps` times:
  1. open --idle (default 1000) connections, each answers one small request (node: GET /healthz,
     nginx: a 3-byte file) with keep-alive, then stays open and idle;
  2. with all of them open, --clients (default 64) splice clients download the stored --size file
     (default 256 MiB) at once -> aggregate throughput = all bytes / wall time, first start to
     last finish; every download's status and byte count is checked;
  3. every idle connection is checked to be still open (non-blocking MSG_PEEK: no EOF, no reset)
     and a sample of --probe (default 50) of them sends one more request and must get its answer.
RSS: /proc/<pid>/status sampled every 50 ms during the phase (nginx: master + workers summed) and
VmHWM after resetting it at the start of the phase (`echo 5 > /proc/<pid>/clear_refs`, when allowed).
The node runs with default flags (idle timeout 60 s) except `--log-level warn`: each phase is kept
well under 60 s and the script warns if one is not. Anchor: nginx (as in hits.py, with
worker_connections raised to 4096 so 1000+ connections fit on one worker).
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import threading
import time

import common as c
from memory import rss_tree_kb  # nginx master + workers

NODE_IDLE_TIMEOUT = 60  # the node's default --idle-timeout, seconds
TINY = b"ok\n"  # nginx's small document, same body as the node's /healthz


class BigNginx(c.Nginx):
    """common.Nginx with worker_connections 4096 (common's config has 1024 per worker: with
    `reuseport` the kernel may put more than that on one worker) and a tiny file next to the big one."""

    def config(self, port: int) -> str:
        base = super().config(port)
        conf = base.replace("worker_connections 1024;", "worker_connections 4096;")
        if conf == base:
            raise RuntimeError("common.NGINX_CONF no longer has 'worker_connections 1024;': update idle_load.py")
        return conf

    def prepare(self) -> None:
        super().prepare()
        tiny = os.path.join(self.root, "tiny.txt")
        with open(tiny, "wb") as fh:
            fh.write(TINY)
        os.chmod(tiny, 0o644)  # the workers run as `nobody`


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def read_answer(s: socket.socket) -> None:
    """Reads one whole answer from `s`; raises unless it is a 200 with the body `TINY` that leaves
    the connection open (no `Connection: close`)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = s.recv(4096)
        if not got:
            raise ConnectionError("closed in the headers")
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip().lower() for k, _, v in (l.partition(":") for l in lines[1:])}
    length = int(fields.get("content-length", "-1"))
    if length < 0:
        raise ValueError(f"no Content-Length: {lines[0]}")
    while len(body) < length:
        got = s.recv(4096)
        if not got:
            raise ConnectionError("closed in the body")
        body += got
    if int(lines[0].split()[1]) != 200 or body != TINY or fields.get("connection") == "close":
        raise ValueError(f"unexpected answer {lines[0]!r} body={body[:40]!r} connection={fields.get('connection')}")


def open_idle(host: str, port: int, path: str, n: int, batch: int = 100) -> tuple[list, list]:
    """`n` connections, each with one answered request, left open. Connects and sends a batch at
    a time, then reads that batch's answers (bounded by a 10 s socket timeout each)."""
    conns, errors = [], []
    netloc = f"{host}:{port}"
    for start in range(0, n, batch):
        pending = []
        for _ in range(min(batch, n - start)):
            try:
                s = socket.create_connection((host, port), timeout=10)
                s.sendall(request(netloc, path))
                pending.append(s)
            except OSError as e:
                errors.append(f"connect: {e!r}")
        for s in pending:
            try:
                s.settimeout(10)
                read_answer(s)
                conns.append(s)
            except (OSError, ValueError) as e:
                errors.append(f"first request: {e!r}")
                s.close()
    return conns, errors


def check_idle(conns: list, host: str, port: int, path: str, probe: int) -> dict:
    """Still open? Non-blocking MSG_PEEK on every connection (EOF or reset = closed by the server,
    data = something unsolicited); then one more request on `probe` evenly spread connections."""
    closed, unsolicited = 0, 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
            else:
                unsolicited += 1
        except BlockingIOError:
            pass  # open, nothing to read: what an idle keep-alive connection looks like
        except OSError:
            closed += 1
    failed_probes, errors = 0, []
    step = max(1, len(conns) // max(1, probe))
    sample = conns[::step][:probe]
    for s in sample:
        try:
            s.settimeout(10)
            s.sendall(request(f"{host}:{port}", path))
            read_answer(s)
        except (OSError, ValueError) as e:
            failed_probes += 1
            errors.append(repr(e))
    return {"closed": closed, "unsolicited": unsolicited, "probed": len(sample), "failed_probes": failed_probes,
            "errors": errors}


def downloads(url: str, n: int, size: int, timeout: float) -> dict:
    """`n` concurrent splice_get()s; failures are counted, not raised (unlike common.splice_many)."""
    results: list = [None] * n

    def one(i: int) -> None:
        try:
            results[i] = c.splice_get(url, timeout)
        except Exception as e:  # noqa: BLE001 - counted below
            results[i] = {"error": repr(e)}

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    wall = time.monotonic() - t0
    bad = [r for r in results if r is None or "error" in r or r["code"] != 200 or r["bytes"] != size]
    good = [r for r in results if r is not None and "error" not in r]
    total = sum(r["bytes"] for r in good)
    return {"wall": wall, "bytes": total, "aggregate": total / wall, "bad": bad,
            "slowest": max((r["total"] for r in good), default=0.0)}


def reset_hwm(pids: list[int]) -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0, needs permission to write clear_refs)."""
    try:
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
        return True
    except OSError:
        return False


def phase(name: str, pid: int, rss, host: str, port: int, small_path: str, url: str, args, size: int) -> dict:
    pids = c.tree_pids(pid)
    hwm_ok = reset_hwm(pids)
    before = rss()
    t0 = time.monotonic()
    conns, open_errors = open_idle(host, port, small_path, args.idle)
    try:
        opened = time.monotonic() - t0
        time.sleep(1)  # let the server settle with its idle connections
        with_idle = rss()
        sampler = c.Sampler(rss, 0.05)
        sampler.start()
        try:
            dl = downloads(url, args.clients, size, timeout=120)
        finally:
            samples = sampler.stop()
        check = check_idle(conns, host, port, small_path, args.probe)
        held = time.monotonic() - t0
    finally:
        for s in conns:
            s.close()
    peak = max([s for _, s in samples] + [with_idle])
    hwm = c.status_kb(pids, "VmHWM") if hwm_ok else 0
    failed = len(open_errors) + len(dl["bad"]) + check["closed"] + check["unsolicited"] + check["failed_probes"]
    print(f"# {name}: {len(conns)}/{args.idle} idle open in {opened:.2f} s, "
          f"{args.clients} x {c.fmt_size(size)} in {dl['wall']:.2f} s = {dl['aggregate'] / 1e9:.2f} GB/s, "
          f"peak RSS {peak / 1024:.1f} MiB, idle held {held:.1f} s, "
          f"{check['closed']} closed / {check['failed_probes']} of {check['probed']} probes failed", flush=True)
    for what, errs in (("idle open", open_errors), ("download", dl["bad"]), ("probe", check["errors"])):
        if errs:
            print(f"#   {name}: {len(errs)} {what} failures, e.g. {errs[:3]}")
    if name == "node" and held > NODE_IDLE_TIMEOUT - 5:
        print(f"# WARNING: idle connections were held {held:.0f} s, near the node's {NODE_IDLE_TIMEOUT} s idle timeout")
    return {"before": before, "with_idle": with_idle, "peak": peak, "hwm": hwm, "aggregate": dl["aggregate"],
            "slowest": dl["slowest"], "failed_downloads": len(dl["bad"]), "failed_idle": len(open_errors),
            "closed": check["closed"] + check["unsolicited"], "failed_probes": check["failed_probes"],
            "probed": check["probed"], "failed": failed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--idle", type=int, default=1000, help="idle keep-alive connections")
    ap.add_argument("--clients", type=int, default=64, help="concurrent downloads of the whole file")
    ap.add_argument("--probe", type=int, default=50, help="idle connections that send one more request at the end")
    ap.add_argument("--reps", type=int, default=1, help="repetitions (median throughput, max RSS)")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    nofile = raise_nofile()
    need = args.idle + args.clients + 64
    if nofile < need:
        sys.exit(f"RLIMIT_NOFILE hard limit {nofile} < {need}: raise it (ulimit -Hn)")
    c.check_binary()
    print(f"# idle_load: {args.idle} idle keep-alive connections + {args.clients} downloads of a "
          f"{c.fmt_size(size)} stored file, {args.reps} rep(s), node and nginx alternately; open files {nofile}")

    res: dict[str, list] = {"node": [], "nginx": []}
    with c.BigHub(size) as hub:
        blob = hub.blob_path()
        c.drop_page_cache_hint(blob)
        with c.node(hub.url) as node, BigNginx(blob) as nginx:
            node_url = node.url + hub.resolve_path()
            t0 = time.monotonic()
            r = c.curl_get(node_url)  # one cold miss stores the file
            if r["code"] != 200 or r["bytes"] != size:
                raise RuntimeError(f"warm-up: {r}")
            code, digest = c.sha256_of_url(node_url)
            if code != 200 or digest != hub.sha256:
                raise RuntimeError(f"node served {code} {digest}, want {hub.sha256}")
            print(f"# warmed the node in {time.monotonic() - t0:.1f} s")
            time.sleep(2)  # let the commit and its background work settle
            served = hub.cdn_bytes()
            npid = node.proc.pid
            node_rss = lambda: c.proc_status(npid)["VmRSS"]  # noqa: E731
            nginx_rss = lambda: rss_tree_kb(nginx.proc.pid)  # noqa: E731
            for _ in range(args.reps):
                res["node"].append(phase("node", npid, node_rss, node.host, node.port, "/healthz",
                                         node_url, args, size))
                res["nginx"].append(phase("nginx", nginx.proc.pid, nginx_rss, "127.0.0.1", nginx.port,
                                          "/tiny.txt", nginx.url, args, size))
            if hub.cdn_bytes() != served:
                print(f"# WARNING: the node fetched {hub.cdn_bytes() - served} bytes upstream during the load")

    def summary(rs: list[dict]) -> dict:
        return {"before": max(r["before"] for r in rs), "with_idle": max(r["with_idle"] for r in rs),
                "peak": max(r["peak"] for r in rs), "hwm": max(r["hwm"] for r in rs),
                "aggregate": c.median([r["aggregate"] for r in rs]), "slowest": max(r["slowest"] for r in rs),
                **{k: sum(r[k] for r in rs) for k in ("failed_downloads", "failed_idle", "closed",
                                                        "failed_probes", "probed", "failed")}}

    s = {k: summary(v) for k, v in res.items()}
    mib = lambda kb: f"{kb / 1024:.1f}" if kb else "-"  # noqa: E731
    print()
    c.table(["server", "RSS before MiB", f"RSS +{args.idle} idle MiB", "peak RSS MiB", "VmHWM MiB",
             f"{args.clients} downloads", "slowest s", "failed downloads", "failed idle opens",
             "idle closed", "failed probes"],
            [[n if n == "node" else "nginx (master+workers)", mib(v["before"]), mib(v["with_idle"]),
              mib(v["peak"]), mib(v["hwm"]), c.mbps(v["aggregate"]), f"{v['slowest']:.2f}",
              v["failed_downloads"], v["failed_idle"], v["closed"], f"{v['failed_probes']}/{v['probed']}"]
             for n, v in s.items()])
    print("# peak RSS: max of 50 ms samples during a phase; VmHWM: reset at the start of each phase "
          "(nginx: summed over processes, shared pages counted per process)")
    print()
    node_s, nginx_s = s["node"], s["nginx"]
    per_conn = (node_s["with_idle"] - node_s["before"]) * 1024 / max(1, args.idle)
    print(f"FAILED idle_load_node = {node_s['failed']}   (downloads + idle connections + probes, goal 0)")
    print(f"FAILED idle_load_nginx = {nginx_s['failed']}")
    print(f"RSS_MIB idle_load_node_peak = {node_s['peak'] / 1024:.1f}   "
          f"(lower is better; {per_conn:.0f} B per idle connection before the downloads)")
    c.ratio("idle_load_throughput", node_s["aggregate"] / nginx_s["aggregate"],
            "node/nginx, higher is better, goal >= 1")
    c.ratio("idle_load_peak_rss_vs_nginx", node_s["peak"] / nginx_s["peak"],
            "node peak RSS / nginx peak RSS, LOWER is better")
    return 0 if node_s["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
