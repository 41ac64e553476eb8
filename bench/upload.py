#!/usr/bin/env python3
"""Uploads to hosted repos: one big LFS object PUT to the node against the same PUT to nginx's WebDAV, and the
node's memory while huggingface_hub commits a folder of 1,000 small files.

(a) Throughput. The same file (--size, default 1 GiB, random bytes) is sent with the same client,
`curl -T FILE -H 'Expect:'`, to two servers writing to the same filesystem (nginx's DAV root and body temp
directory and the node's data directory are all under one temporary directory, --dir):
  * the node: a basic signed upload URL from its Git LFS batch endpoint (`transfers: ["basic"]`, so the
    object goes in one PUT whatever its size); the node hashes the bytes as they arrive (chunk merkle
    SHA-256 and piece SHA-1, the whole file's SHA-256 and git blob SHA-1), writes them as chunks, and answers
    once the SHA-256 matched the oid and the chunks are synced (fdatasync) and indexed;
  * the anchor: Debian's nginx (`dav_methods PUT`, one worker per core, default body buffers), which writes
    the body to a temporary file and renames it into place when the body ends; it never syncs. How long an
    fdatasync of its file takes right after the PUT is printed beside it (not in the ratio).
Node and nginx alternate, which goes first alternating too, --reps each (default 3), a fresh node and data
directory every rep (a second upload of stored bytes would skip the sync); the page cache is flushed
(sync) before every timed PUT, and each upload is checked (node: its verify action; nginx: size and SHA-256
of the file it wrote). `Expect:` is sent empty to both: the node answers no `100 Continue`, so curl would
wait a second before sending the body (a probe below shows it).
Line: `RATIO upload_put_vs_nginx_dav` = node PUT MB/s / nginx PUT MB/s (median of each), higher is better.
Besides, the whole `HfApi.upload_file` of the same file through the node with huggingface_hub 1.x
(HF_HUB_DISABLE_XET=1; .venv/hub1): it hashes the file client-side first (timed alone too), and, offered
"multipart", the node answers parts of 16 MiB for objects >= 64 MiB, which it stages, syncs and reads back to
assemble. Reported, not in the ratio. The node's CPU (user/system, busiest threads) is printed per rep, and one more, untimed node PUT
runs under `perf record` when perf works here (--no-perf to skip).

(b) Memory. A fresh node with one user; its idle RSS after start (2 s settle); then one
`HfApi.upload_folder` (one commit) of --files (default 1,000) text files of 1-4 KiB each in 10 folders
(regular files: their bytes come inline in the commit's NDJSON, base64). /proc/<node>/status is sampled every
50 ms; VmHWM at the end is the peak since start. Printed: idle RSS, VmHWM before and after, the
highest sampled VmRSS, RSS after, the upload's time; the repo's file list and a few files' bytes are checked.
--folder-reps runs (default 3), a fresh node each; medians. The node stores each inline file with syncs of
its own, so the time follows the disk's sync latency, which other work on the machine moves a lot.
Lines: `RATIO upload_folder_peak_over_idle` (lower is better), `RSS_MIB ...`, `TIME_S upload_folder_N_files`.

Needs `curl`, `openssl`, `nginx` with http_dav_module (Debian 12's nginx / nginx-light have it) and
.venv/hub1 (scripts/install-deps.sh --test).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import common as c
import harness
import ingest  # openssl_rate, perf_start, perf_report
from accounts import ADMIN_KEY, add_user  # noqa: E402  (tests/integration, on the path through common)

USER = "alice"
VENV_PYTHON = os.path.join(c.ROOT, ".venv", "hub1", "bin", "python")
CURL_FMT = "%{http_code} %{size_upload} %{time_total} %{speed_upload}"

# Runs in .venv/hub1: one call given as JSON on argv; prints one JSON line with its timings.
DRIVER = r'''
import json, os, sys, time
import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.utils.sha import sha_fileobj
call = json.loads(sys.argv[1])
api = HfApi()
out = {"version": huggingface_hub.__version__}
if call["call"] == "upload_file":
    t0 = time.monotonic()
    with open(call["path"], "rb") as f:
        sha_fileobj(f)  # what CommitOperationAdd does first (the file is in the page cache either way)
    out["hash_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    info = api.upload_file(path_or_fileobj=call["path"], path_in_repo=call["path_in_repo"], repo_id=call["repo_id"])
    out["upload_s"] = time.monotonic() - t0
    out["oid"] = info.oid
elif call["call"] == "upload_folder":
    t0 = time.monotonic()
    info = api.upload_folder(repo_id=call["repo_id"], folder_path=call["folder"], commit_message="many small files")
    out["upload_s"] = time.monotonic() - t0
    out["oid"] = info.oid
    out["files"] = sorted(api.list_repo_files(call["repo_id"]))
    out["commits"] = len(api.list_repo_commits(call["repo_id"]))
print(json.dumps(out))
'''


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

NGINX_DAV_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {tmp}/body;   # same filesystem as the root: the PUT ends with a rename
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


class NginxDav(c.NginxProcess):
    """nginx taking PUTs into a DAV root, its temporary files and root under `parent` (one filesystem)."""

    prefix = "nginx-"

    def __init__(self, parent: str):
        self.tmp = tempfile.mkdtemp(prefix=self.prefix, dir=parent)
        self.proc = None
        self.root = os.path.join(self.tmp, "dav")

    def prepare(self) -> None:
        for d in (self.root, os.path.join(self.tmp, "body")):
            os.makedirs(d)
            os.chmod(d, 0o777)  # run as root, the workers are `nobody`

    def config(self, port: int) -> str:
        return NGINX_DAV_CONF.format(tmp=self.tmp, port=port, root=self.root, workers=os.cpu_count() or 1)

    def __enter__(self) -> "NginxDav":
        super().__enter__()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def pids(self) -> list[int]:
        deadline = time.monotonic() + 10
        while len(pids := c.tree_pids(self.proc.pid)) < 1 + (os.cpu_count() or 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pids


@contextlib.contextmanager
def hosting_node(hub_url: str, parent: str):
    """A fresh node on a data directory under `parent`, with user alice and her key; removed afterwards."""
    data_dir = tempfile.mkdtemp(prefix="node-", dir=parent)
    n = harness.Node(hub_url, data_dir, "--log-level", "warn", admin_key=ADMIN_KEY)
    try:
        n.start()
        n.key = add_user(n, USER)
        yield n
    finally:
        n.stop()
        c.report_log(n.log_path)
        shutil.rmtree(data_dir, ignore_errors=True)


def auth(node, extra: dict | None = None) -> dict:
    return {"Authorization": f"Bearer {node.key}", **(extra or {})}


def create_repo(node, name: str) -> str:
    status, _, body = node.request("POST", "/api/repos/create", auth(node, {"Content-Type": "application/json"}),
                                   json.dumps({"name": name, "organization": USER, "type": "model"}).encode())
    if status != 200:
        raise RuntimeError(f"create_repo {name}: {status} {body[:300]!r}")
    return f"{USER}/{name}"


def basic_upload_url(node, repo: str, oid: str, size: int) -> str:
    """The signed URL of one whole-object PUT, from the repo's Git LFS batch endpoint."""
    request = {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
               "objects": [{"oid": oid, "size": size}]}
    status, _, body = node.request("POST", f"/{repo}.git/info/lfs/objects/batch",
                                   auth(node, {"Content-Type": "application/vnd.git-lfs+json",
                                               "Accept": "application/vnd.git-lfs+json"}),
                                   json.dumps(request).encode())
    answer = json.loads(body or b"null")
    if status != 200 or answer.get("transfer") != "basic":
        raise RuntimeError(f"LFS batch: {status} {answer}")
    upload = answer["objects"][0]["actions"]["upload"]
    if "header" in upload:
        raise RuntimeError(f"asked for basic, got parts: {upload}")
    return upload["href"]


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of processes (all their threads); vanished ones count 0."""
    user = system = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(f[11]) / c.CLK_TCK
        system += int(f[12]) / c.CLK_TCK
    return user, system


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def curl_put(path: str, url: str, size: int, expect: bool = False, timeout: float = 900) -> dict:
    """curl -T: status, bytes sent, total seconds (from curl), bytes/s; curl's own CPU."""
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-o", "/dev/null", "-w", CURL_FMT, "-T", path]
    if not expect:
        cmd += ["-H", "Expect:"]
    kids = children_cpu()
    out = c.run(cmd + [url], timeout=timeout + 30).split()
    code, sent, total = int(out[0]), int(out[1]), float(out[2])
    if sent != size:
        raise RuntimeError(f"curl sent {sent} of {size} bytes to {url}: status {code}")
    return {"code": code, "total": total, "speed": size / total, "client_cpu": children_cpu() - kids}


def file_sha256(path: str) -> str:
    return c.run(["openssl", "dgst", "-sha256", "-r", path], timeout=600).split()[0]


def fdatasync_seconds(path: str) -> float:
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def busiest_threads(before: dict, after: dict, total: float, top: int = 6) -> str:
    rows = sorted(((tid, cpu - before.get(tid, ("", 0.0))[1]) for tid, (_, cpu) in after.items()), key=lambda t: -t[1])
    return ", ".join(f"{tid}: {cpu:.2f} s ({cpu / max(total, 1e-9) * 100:.0f}%)" for tid, cpu in rows[:top] if cpu >= 0.01)


def node_put(hub_url: str, work: str, path: str, sha: str, size: int, rep: int, perf: bool = False) -> dict:
    with hosting_node(hub_url, work) as node:
        repo = create_repo(node, f"put-{rep}")
        href = basic_upload_url(node, repo, sha, size)
        pid = node.proc.pid
        os.sync()  # nothing of an earlier run left to write back
        threads0, (u0, s0) = c.thread_cpu(pid), cpu_split([pid])
        perf_file = os.path.join(work, "perf.data")
        recorder = ingest.perf_start(pid, perf_file) if perf else None
        if recorder:
            time.sleep(0.3)  # let perf attach before the bytes flow
        lines: list[str] = []
        try:
            r = curl_put(path, href, size)
            (u1, s1), threads1 = cpu_split([pid]), c.thread_cpu(pid)
        finally:
            if recorder:
                lines = ingest.perf_report(recorder, perf_file)
            with contextlib.suppress(OSError):
                os.unlink(perf_file)
        hwm = c.proc_status(pid)["VmHWM"]
        if r["code"] != 200:
            raise RuntimeError(f"node PUT: status {r['code']}")
        status, _, body = node.request("POST", href.split(node.url, 1)[1] + "/verify", {"Content-Type": "application/json"},
                                       json.dumps({"oid": sha, "size": size}).encode())
        if status != 200:
            raise RuntimeError(f"the node does not hold the upload: verify {status} {body[:200]!r}")
    r.update(user=u1 - u0, system=s1 - s0, threads=busiest_threads(threads0, threads1, u1 - u0 + s1 - s0),
             hwm=hwm, perf=lines)
    return r


def nginx_put(work: str, path: str, sha: str, size: int) -> dict:
    with NginxDav(work) as nginx:
        pids = nginx.pids()
        os.sync()
        u0, s0 = cpu_split(pids)
        r = curl_put(path, nginx.url + "/upload/file.bin", size)
        u1, s1 = cpu_split(pids)
        stored = os.path.join(nginx.root, "upload", "file.bin")
        if r["code"] not in (201, 204):
            raise RuntimeError(f"nginx PUT: status {r['code']}")
        r["sync_s"] = fdatasync_seconds(stored)  # not in the ratio
        if os.path.getsize(stored) != size or file_sha256(stored) != sha:
            raise RuntimeError(f"nginx stored something else than the file in {stored}")
    r.update(user=u1 - u0, system=s1 - s0, threads="", hwm=0)
    return r


def client_env(node, home: str) -> dict:
    base = {k: v for k, v in harness.clean_env().items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**base, "HF_ENDPOINT": node.url, "HF_TOKEN": node.key, "HF_HOME": home, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def hub_client(node, work: str, call: dict, timeout: float = 1800) -> dict:
    home = tempfile.mkdtemp(prefix="hf-home-", dir=work)
    try:
        done = subprocess.run([VENV_PYTHON, "-c", DRIVER, json.dumps(call)], capture_output=True, text=True,
                              timeout=timeout, env=client_env(node, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"huggingface_hub {call['call']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hub_upload_file(hub_url: str, work: str, path: str, sha: str, size: int, rep: int) -> dict:
    with hosting_node(hub_url, work) as node:
        repo = create_repo(node, f"hf-{rep}")
        pid = node.proc.pid
        os.sync()
        u0, s0 = cpu_split([pid])
        out = hub_client(node, work, {"call": "upload_file", "path": path, "path_in_repo": "model.safetensors",
                                      "repo_id": repo})
        u1, s1 = cpu_split([pid])
        hwm = c.proc_status(pid)["VmHWM"]
        status, headers, _ = node.request("HEAD", f"/{repo}/resolve/main/model.safetensors", auth(node))
        if status != 200 or headers.get("x-linked-etag", "").strip('"') != sha:
            raise RuntimeError(f"the node does not serve the uploaded file: {status} {headers}")
    out.update(user=u1 - u0, system=s1 - s0, hwm=hwm)
    return out


def expect_probe(hub_url: str, work: str) -> tuple[float, float]:
    """curl -T of 2 MiB with curl's default `Expect: 100-continue`, to the node and to nginx: seconds each."""
    probe = os.path.join(work, "probe.bin")
    with open(probe, "wb") as fh:
        fh.write(os.urandom(2 * c.MIB))
    sha = file_sha256(probe)
    with hosting_node(hub_url, work) as node:
        href = basic_upload_url(node, create_repo(node, "probe"), sha, 2 * c.MIB)
        node_s = curl_put(probe, href, 2 * c.MIB, expect=True)["total"]
    with NginxDav(work) as nginx:
        nginx_s = curl_put(probe, nginx.url + "/probe.bin", 2 * c.MIB, expect=True)["total"]
    os.unlink(probe)
    return node_s, nginx_s


# --------------------------------------------------------------------------------------------
# (b) memory during upload_folder
# --------------------------------------------------------------------------------------------

def make_folder(folder: str, count: int, seed: int = 1) -> dict[str, bytes]:
    """`count` text files of 1-4 KiB in 10 folders (regular files for the Hub: no NUL, small)."""
    rnd = random.Random(seed)
    files = {}
    for i in range(count):
        ext = (".txt", ".json", ".md", ".py")[i % 4]
        name = f"d{i % 10}/file{i:04d}{ext}"
        size = rnd.randint(1024, 4096)
        line = f"{name} {i} ".encode()
        body = (line + rnd.randbytes(size).hex().encode())[:size - 1] + b"\n"
        files[name] = body
        full = os.path.join(folder, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(body)
    return files


def folder_memory(hub_url: str, work: str, count: int) -> dict:
    folder = tempfile.mkdtemp(prefix="folder-", dir=work)
    files = make_folder(folder, count)
    with hosting_node(hub_url, work) as node:
        pid = node.proc.pid
        start = c.proc_status(pid)
        repo = create_repo(node, "many-small-files")
        time.sleep(2)  # settle
        idle = c.proc_status(pid)
        os.sync()
        u0, s0 = cpu_split([pid])
        sampler = c.Sampler(lambda: c.proc_status(pid), 0.05)
        sampler.start()
        t0 = time.monotonic()
        try:
            out = hub_client(node, work, {"call": "upload_folder", "folder": folder, "repo_id": repo})
        finally:
            wall = time.monotonic() - t0
            samples = sampler.stop()
        u1, s1 = cpu_split([pid])
        end = c.proc_status(pid)
        time.sleep(2)
        after = c.proc_status(pid)
        listed = [f for f in out["files"] if f != ".gitattributes"]
        if sorted(listed) != sorted(files):
            raise RuntimeError(f"the repo lists {len(listed)} files, {count} were uploaded")
        for name in random.Random(2).sample(sorted(files), 5):
            status, _, body = node.request("GET", f"/{repo}/resolve/main/{name}", auth(node))
            if status != 200 or body != files[name]:
                raise RuntimeError(f"{name}: {status}, {len(body)} bytes, not what was uploaded")
    shutil.rmtree(folder, ignore_errors=True)
    return {"start": start, "idle": idle, "end": end, "after": after, "samples": samples, "client": out,
            "wall": wall, "bytes": sum(len(b) for b in files.values()), "user": u1 - u0, "system": s1 - s0}


# --------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="the uploaded file (default 1GiB)")
    ap.add_argument("--reps", type=int, default=3, help="PUTs of each (node, nginx), alternating; and upload_files")
    ap.add_argument("--files", type=int, default=1000, help="files in the upload_folder (default 1000)")
    ap.add_argument("--dir", default=None, help="where the temporary directory goes (default $TMPDIR)")
    ap.add_argument("--no-perf", action="store_true", help="skip the extra profiled node PUT")
    ap.add_argument("--no-hub-client", action="store_true", help="skip huggingface_hub's upload_file")
    ap.add_argument("--folder-reps", type=int, default=3, help="upload_folder runs, a fresh node each (0: skip (b))")
    args = ap.parse_args()
    size = c.parse_size(args.size)
    c.check_binary()
    if not os.access(VENV_PYTHON, os.X_OK):
        sys.exit(f"{VENV_PYTHON} is missing: scripts/install-deps.sh --test")
    if "http_dav_module" not in subprocess.run([c.NGINX, "-V"], capture_output=True, text=True).stderr:
        sys.exit(f"{c.NGINX} has no http_dav_module (Debian: nginx, nginx-light, nginx-full or nginx-extras have it)")

    work = tempfile.mkdtemp(prefix="inferllama-bench-upload-", dir=args.dir)
    os.chmod(work, 0o755)  # nginx's workers (nobody) go through it
    folders: list[dict] = []
    try:
        st = os.statvfs(work)
        print(f"# upload: {c.fmt_size(size)} file, {args.reps} reps; all under {work} "
              f"({st.f_bavail * st.f_frsize / c.GIB:.0f} GiB free)")
        if st.f_bavail * st.f_frsize < 4 * size + c.GIB:
            sys.exit("not enough free space for the file and two copies of it")
        path = os.path.join(work, "file.bin")
        t0 = time.monotonic()
        with open(path, "wb") as fh:
            left = size
            while left:
                n = min(left, 8 * c.MIB)
                fh.write(os.urandom(n))
                left -= n
        sha = file_sha256(path)
        print(f"# file written in {time.monotonic() - t0:.1f} s, sha256 {sha}")

        hub = harness.FakeHub().start()
        try:
            r256 = ingest.openssl_rate("sha256", 2)
            r1 = ingest.openssl_rate("sha1", 2)
            hash_limit = 1 / (2 / r256 + 2 / r1)
            print(f"# openssl, one core, 16 KiB blocks: SHA-256 {r256 / 1e6:.0f} MB/s, SHA-1 {r1 / 1e6:.0f} MB/s; "
                  f"the node's 2x SHA-256 + 2x SHA-1 per uploaded byte on one core: {hash_limit / 1e6:.0f} MB/s")
            node_probe, nginx_probe = expect_probe(hub.url, work)
            print(f"# curl -T 2 MiB with curl's default 'Expect: 100-continue': node {node_probe:.2f} s, nginx "
                  f"{nginx_probe:.2f} s" + (" (no 100 Continue from the node: curl waited 1 s before sending)"
                                            if node_probe >= 0.9 > nginx_probe else ""))

            runs: dict[str, list[dict]] = {"node": [], "nginx": [], "hf": []}
            for rep in range(args.reps):
                for who in (("node", "nginx") if rep % 2 == 0 else ("nginx", "node")):
                    r = node_put(hub.url, work, path, sha, size, rep) if who == "node" else nginx_put(work, path, sha, size)
                    runs[who].append(r)
                    extra = f", then fdatasync of its file {r['sync_s']:.2f} s" if who == "nginx" else \
                        f", VmHWM {r['hwm'] / 1024:.0f} MiB; busiest threads {r['threads']}"
                    print(f"# rep {rep + 1} {who:5} PUT: {r['speed'] / 1e6:.0f} MB/s in {r['total']:.2f} s; CPU s "
                          f"user {r['user']:.2f} sys {r['system']:.2f}, curl {r['client_cpu']:.2f}{extra}", flush=True)
            if not args.no_hub_client:
                for rep in range(args.reps):
                    r = hub_upload_file(hub.url, work, path, sha, size, rep)
                    runs["hf"].append(r)
                    print(f"# rep {rep + 1} huggingface_hub {r['version']} upload_file: {size / r['upload_s'] / 1e6:.0f} "
                          f"MB/s in {r['upload_s']:.2f} s (its SHA-256 of the file alone: {r['hash_s']:.2f} s); node CPU s "
                          f"user {r['user']:.2f} sys {r['system']:.2f}, VmHWM {r['hwm'] / 1024:.0f} MiB", flush=True)
            profiled = None
            if not args.no_perf:
                profiled = node_put(hub.url, work, path, sha, size, 99, perf=True)
            for rep in range(args.folder_reps):
                folders.append(folder_memory(hub.url, work, args.files))
                f = folders[-1]
                print(f"# rep {rep + 1} upload_folder of {args.files} files: {f['client']['upload_s']:.2f} s; node RSS idle "
                      f"{f['idle']['VmRSS'] / 1024:.1f} MiB, VmHWM after {f['end']['VmHWM'] / 1024:.1f} MiB; node CPU s "
                      f"user {f['user']:.2f} sys {f['system']:.2f}", flush=True)
        finally:
            hub.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    node_speed = c.median([r["speed"] for r in runs["node"]])
    nginx_speed = c.median([r["speed"] for r in runs["nginx"]])
    gib = size / c.GIB
    print()
    rows = [["node PUT (basic signed URL), curl -T", c.mbps(node_speed),
             f"{c.median([r['total'] for r in runs['node']]):.2f} s",
             f"{c.median([r['user'] + r['system'] for r in runs['node']]) / gib:.2f}"],
            ["nginx DAV PUT, curl -T", c.mbps(nginx_speed), f"{c.median([r['total'] for r in runs['nginx']]):.2f} s",
             f"{c.median([r['user'] + r['system'] for r in runs['nginx']]) / gib:.2f}"],
            ["  nginx PUT + fdatasync of its file after", c.mbps(c.median([size / (r['total'] + r['sync_s']) for r in runs['nginx']])),
             f"{c.median([r['total'] + r['sync_s'] for r in runs['nginx']]):.2f} s", "-"]]
    rows.append(["  one core hashing 2x SHA-256 + 2x SHA-1 (openssl)", c.mbps(hash_limit), f"{size / hash_limit:.2f} s", "-"])
    if runs["hf"]:
        rows.append([f"huggingface_hub {runs['hf'][0]['version']} upload_file (multipart)",
                     c.mbps(c.median([size / r["upload_s"] for r in runs["hf"]])),
                     f"{c.median([r['upload_s'] for r in runs['hf']]):.2f} s",
                     f"{c.median([r['user'] + r['system'] for r in runs['hf']]) / gib:.2f}"])
        rows.append(["  of which its client-side SHA-256", "-", f"{c.median([r['hash_s'] for r in runs['hf']]):.2f} s", "-"])
    c.table(["upload of the file (median)", "throughput", "time", "server CPU s per GiB"], rows)
    if profiled:
        print()
        print(f"profiled node PUT (not counted): {profiled['speed'] / 1e6:.0f} MB/s; node CPU s user {profiled['user']:.2f} "
              f"sys {profiled['system']:.2f}; busiest threads {profiled['threads']}")
        if profiled["perf"]:
            print("perf record -F 499 -p <node>, self time:")
            for line in profiled["perf"]:
                print("  " + line.strip())
    if folders:
        mib = lambda kb: f"{kb / 1024:.1f}"  # noqa: E731
        for f in folders:
            # The kernel updates VmHWM lazily: a sample of VmRSS may show a little more.
            f["peak_sampled"] = max([s["VmRSS"] for _, s in f["samples"]] + [f["end"]["VmRSS"]])
            f["top"] = max(f["end"]["VmHWM"], f["peak_sampled"])
        cols = lambda fn: [fn(f) for f in folders]  # noqa: E731
        print()
        c.table([f"upload_folder of {args.files} files ({c.fmt_size(folders[0]['bytes'])}), one commit, MiB / s"]
                + [f"rep {i + 1}" for i in range(len(folders))], [
            ["node RSS at start"] + cols(lambda f: mib(f["start"]["VmRSS"])),
            ["node RSS idle (user and repo made, 2 s settle)"] + cols(lambda f: mib(f["idle"]["VmRSS"])),
            ["node VmHWM before the upload"] + cols(lambda f: mib(f["idle"]["VmHWM"])),
            ["node VmHWM after the upload"] + cols(lambda f: mib(f["end"]["VmHWM"])),
            ["node highest VmRSS sampled (50 ms)"] + cols(lambda f: mib(f["peak_sampled"])),
            ["node RSS 2 s after"] + cols(lambda f: mib(f["after"]["VmRSS"])),
            ["node threads (idle / most)"] + cols(lambda f: f"{f['idle']['Threads']} / "
                                                  f"{max(s['Threads'] for _, s in f['samples'])}"),
            ["upload_folder time (client), s"] + cols(lambda f: f"{f['client']['upload_s']:.2f}"),
            ["node CPU s during it (user / sys)"] + cols(lambda f: f"{f['user']:.2f} / {f['system']:.2f}"),
            ["commits in the repo (its creation's and the upload's)"] + cols(lambda f: f["client"]["commits"]),
        ])
        print()
        print(f"RSS_MIB upload_folder_node_idle = {c.median([f['idle']['VmRSS'] for f in folders]) / 1024:.1f}   (median)")
        print(f"RSS_MIB upload_folder_node_peak = {c.median([f['top'] for f in folders]) / 1024:.1f}   "
              "(median of VmHWM or the highest sample, lower is better)")
        print(f"TIME_S upload_folder_{args.files}_files = {c.median([f['client']['upload_s'] for f in folders]):.2f}   "
              "(median, lower is better)")
        c.ratio("upload_folder_peak_over_idle", c.median([f["top"] / f["idle"]["VmRSS"] for f in folders]),
                "node peak RSS / idle RSS, median, LOWER is better")
    print()
    c.ratio("upload_put_vs_nginx_dav", node_speed / nginx_speed, "node PUT MB/s / nginx DAV PUT MB/s, higher is better")
    return 0


if __name__ == "__main__":
    sys.exit(main())
