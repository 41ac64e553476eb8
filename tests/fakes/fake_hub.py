#!/usr/bin/env python3
"""Fake HuggingFace Hub for InferLlama integration tests and benchmarks.

Standard library only (Python 3.11).  It imitates the parts of the real Hub a
pull-through cache talks to, including the awkward ones (302s to a signed CDN
URL, Xet lures, gated/private repos, renamed repos, paginated trees with an
absolute ``Link`` header, URL-encoded revisions and paths).

Two HTTP origins are served:

* the HUB origin  - ``/api/...``, ``/{prefix}{repo}/resolve/...`` and the
  control API under ``/_fake/`` (stats, faults, lies, hostile, throttle, manifest, reset, push, stop);
* the CDN origin  - ``/blobs/<sha256>?expires=..&sig=..`` (LFS content,
  served with ``os.sendfile`` from files materialised at start-up).

Usage::

    fake_hub.py [--host 127.0.0.1] [--port 0] [--cdn-port 0] [--data-dir DIR]
                [--tree-page-size 3] [--big-file-size BYTES]
                [--cdn-rate BYTES_PER_SEC] [--url-ttl SECONDS] [--verbose]
                [--files-from NAMESPACE/NAME=DIR ...]

When both origins listen it prints exactly one line on stdout::

    READY hub=http://127.0.0.1:PORT cdn=http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import signal
import socket
import socketserver
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MIB = 1024 * 1024
BLOCK = MIB                    # content generator block; every block differs
SENDFILE_CHUNK = 4 * MIB       # per sendfile() call, so byte counters advance
SLICE = 64 * 1024              # byte-level writes (rate limit / faults)
GENERATOR_VERSION = 1          # bump when BlobStore.materialise changes its output

APPROVED_TOKEN = "hf_approved"
UNAPPROVED_TOKEN = "hf_unapproved"
KNOWN_TOKENS = {APPROVED_TOKEN, UNAPPROVED_TOKEN}
# Any token with this prefix is valid, approved for no gated repo and member of no private one: a node's own
# tokens (upstream_token, upstream_tokens_file), which the Hub counts apart in requests_by_auth.
NODE_TOKEN_PREFIX = "hf_node_"


def known_token(token: str) -> bool:
    return token in KNOWN_TOKENS or token.startswith(NODE_TOKEN_PREFIX)

TYPE_BY_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
PLURAL = {v: k for k, v in TYPE_BY_PLURAL.items()}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_ACTIONS = {"revision", "tree", "paths-info", "refs", "xet-read-token"}
REF_NAMESPACES = {"pr", "heads", "tags", "convert"}

REQUEST_KINDS = (
    "api_info", "api_tree", "api_paths_info", "api_refs",
    "resolve_head", "resolve_get", "cdn_get", "cdn_head",
    "xet_read_token", "xet_cas", "other",
)
FAULT_KINDS = ("reset_after_bytes", "status", "corrupt_byte", "slow_body", "truncate")
XET_FILEINFO = "application/vnd.xet-fileinfo+json"
CREATED_AT = "2024-01-01T00:00:00.000Z"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n"


# --------------------------------------------------------------------------
# Hash helpers (same definitions as git / git-lfs / the Hub)
# --------------------------------------------------------------------------

def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------

@dataclass
class FileEntry:
    path: str
    size: int
    sha256: str
    git_sha1: str                 # tree oid: blob sha1 of content, or of the LFS pointer
    lfs: bool
    pointer_size: int = 0
    content: bytes | None = None  # regular files live in memory
    disk_path: str | None = None  # LFS files are materialised on disk for sendfile

    @property
    def xet_hash(self) -> str:
        # Not a real Xet merkle hash; only needs to look like one (64 hex) and
        # be stable, because the node must never act on it.
        return hashlib.sha256(b"xet:" + self.sha256.encode()).hexdigest()

    def manifest(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "git_sha1": self.git_sha1, "lfs": self.lfs}


@dataclass
class Revision:
    commit: str
    title: str
    date: str
    files: dict[str, FileEntry]
    dirs: dict[str, str] = field(default_factory=dict)  # dir path ("" = root) -> git tree oid

    def __post_init__(self) -> None:
        children: dict[str, list[tuple[str, bool, str]]] = {"": []}
        for path in sorted(self.files):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(parts[:depth])
                if d not in children:
                    children[d] = []
                    children["/".join(parts[:depth - 1])].append((parts[depth - 1], True, d))
            children["/".join(parts[:-1])].append((parts[-1], False, path))

        # Real git tree objects, so directory oids change exactly when content does.
        def tree_oid(d: str) -> str:
            rows = []
            for name, is_dir, p in children[d]:
                oid = tree_oid(p) if is_dir else self.files[p].git_sha1
                rows.append((name.encode(), is_dir, bytes.fromhex(oid)))
            rows.sort(key=lambda r: r[0] + (b"/" if r[1] else b""))  # git's tree order
            body = b"".join((b"40000 " if is_dir else b"100644 ") + name + b"\0" + oid
                            for name, is_dir, oid in rows)
            self.dirs[d] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
            return self.dirs[d]

        tree_oid("")

    def listing(self, path: str, recursive: bool) -> list[tuple[str, bool]]:
        """(path, is_dir) under directory `path`, sorted by path."""
        prefix = path + "/" if path else ""
        items = [(p, False) for p in self.files if p.startswith(prefix)]
        items += [(d, True) for d in self.dirs if d and d.startswith(prefix)]
        if not recursive:
            items = [(p, is_dir) for p, is_dir in items if "/" not in p[len(prefix):]]
        return sorted(items)


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    gated: bool | str = False
    commits: dict[str, Revision] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[str, str] = field(default_factory=dict)  # "refs/pr/1" -> commit

    def add_commit(self, rev: Revision) -> str:
        self.commits[rev.commit] = rev
        return rev.commit

    def resolve(self, rev: str) -> Revision | None:
        for table, prefix in ((self.branches, "refs/heads/"), (self.tags, "refs/tags/")):
            name = rev[len(prefix):] if rev.startswith(prefix) else rev
            if name in table:
                return self.commits[table[name]]
        if rev in self.prs:
            return self.commits[self.prs[rev]]
        return self.commits.get(rev.lower()) if len(rev) == 40 else None

    def all_revisions(self) -> dict[str, str]:
        return {**self.branches, **self.tags, **self.prs}


# --------------------------------------------------------------------------
# Blob materialisation and fixtures
# --------------------------------------------------------------------------

class BlobStore:
    """Writes deterministic, non-repetitive LFS content to disk once."""

    def __init__(self, root: str):
        self.root = root

    def materialise(self, seed: int, size: int) -> tuple[str, str]:
        # GENERATOR_VERSION in the name keeps reused --data-dir blobs honest if the
        # generator below ever changes.
        path = os.path.join(self.root, f"v{GENERATOR_VERSION}-{seed:016x}-{size}.blob")
        sidecar = path + ".sha256"
        # A caller-provided --data-dir may already hold the blob (benchmarks
        # restart often); the sidecar is only written after a complete write.
        if os.path.exists(sidecar) and os.path.exists(path) and os.path.getsize(path) == size:
            with open(sidecar) as fh:
                digest = fh.read().strip()
            if len(digest) == 64:
                return digest, path
        # One pseudo-random MiB per file, with (seed, block index) stamped in
        # its first 16 bytes: cheap to produce, yet no two MiBs are equal, so
        # block-level dedup or caching bugs cannot hide.
        block = bytearray(random.Random(seed).randbytes(BLOCK))
        view = memoryview(block)
        hasher = hashlib.sha256()
        tmp = path + ".tmp"
        with open(tmp, "wb") as out:
            index, remaining = 0, size
            while remaining > 0:
                struct.pack_into(">QQ", block, 0, seed, index)
                chunk = view[:min(BLOCK, remaining)]
                out.write(chunk)
                hasher.update(chunk)
                remaining -= len(chunk)
                index += 1
        os.replace(tmp, path)
        digest = hasher.hexdigest()
        with open(sidecar, "w") as fh:
            fh.write(digest)
        return digest, path


def regular_file(path: str, data: bytes | str) -> FileEntry:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest(),
                     git_blob_sha1(data), False, content=data)


def lfs_file(store: BlobStore, repo_key: str, path: str, size: int) -> FileEntry:
    seed = int.from_bytes(hashlib.sha256(f"{repo_key}/{path}".encode()).digest()[:8], "big")
    digest, disk_path = store.materialise(seed, size)
    pointer = LFS_POINTER.format(digest, size).encode()
    return FileEntry(path, size, digest, git_blob_sha1(pointer), True,
                     pointer_size=len(pointer), disk_path=disk_path)


def disk_lfs_file(path: str, disk_path: str) -> FileEntry:
    """An LFS file whose bytes are a file on disk as it is (served with sendfile like the generated ones)."""
    hasher = hashlib.sha256()
    with open(disk_path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            hasher.update(block)
    digest, size = hasher.hexdigest(), os.path.getsize(disk_path)
    pointer = LFS_POINTER.format(digest, size).encode()
    return FileEntry(path, size, digest, git_blob_sha1(pointer), True, pointer_size=len(pointer), disk_path=disk_path)


def repo_from_dir(repo_id: str, root: str) -> Repo:
    """A model repo whose main branch holds every file under `root` (as LFS files, at their relative paths)."""
    files = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            disk_path = os.path.join(folder, name)
            files.append(disk_lfs_file(os.path.relpath(disk_path, root).replace(os.sep, "/"), disk_path))
    return make_repo("model", repo_id, files)


def config_json(**fields) -> str:
    return json.dumps(fields, indent=2, sort_keys=True) + "\n"


def make_repo(rtype: str, repo_id: str, files: list[FileEntry], **kwargs) -> Repo:
    repo = Repo(rtype, repo_id, **kwargs)
    commit = sha1_hex(f"{rtype}/{repo_id}@main")
    repo.branches["main"] = repo.add_commit(Revision(
        commit, "Initial commit", "2024-05-01T12:00:00.000Z", {f.path: f for f in files}))
    return repo


def build_fixtures(store: BlobStore, big_file_size: int, sized_models: int = 0,
                   sized_model_size: int = 0) -> tuple[list[Repo], dict[tuple[str, str], str]]:
    repos: list[Repo] = []

    key = "model/acme/tiny-model"
    tiny_common = [
        regular_file("README.md", "---\nlicense: mit\n---\n# acme/tiny-model\n\n"
                                  "A tiny fixture model for InferLlama tests.\n"),
        regular_file("empty.txt", b""),
        lfs_file(store, key, "model.safetensors", 9 * MIB + 12345),
        lfs_file(store, key, "nested/deep/dir/weights.bin", 5 * MIB + 7),
        regular_file("with space/naïve – file.txt", "Unicode file name fixture: naïve – ✓\n"),
    ]
    tiny = make_repo("model", "acme/tiny-model", tiny_common + [regular_file(
        "config.json", config_json(architectures=["TinyModel"], model_type="tiny",
                                   hidden_size=64, num_layers=2, vocab_size=1000))])
    tiny.tags["v1.0"] = tiny.branches["main"]
    pr_files = tiny_common + [regular_file(
        "config.json", config_json(architectures=["TinyModel"], model_type="tiny",
                                   hidden_size=128, num_layers=4, vocab_size=1000))]
    tiny.prs["refs/pr/1"] = tiny.add_commit(Revision(
        sha1_hex("model/acme/tiny-model@refs/pr/1"), "Bigger config (#1)",
        "2024-05-02T12:00:00.000Z", {f.path: f for f in pr_files}))
    repos.append(tiny)

    repos.append(make_repo("model", "acme/gated-model", [
        regular_file("config.json", config_json(model_type="gated")),
        lfs_file(store, "model/acme/gated-model", "model.safetensors", 3 * MIB + 1),
    ], gated="manual"))
    repos.append(make_repo("model", "acme/private-model", [
        regular_file("config.json", config_json(model_type="private")),
        lfs_file(store, "model/acme/private-model", "weights.bin", 2 * MIB + 3),
    ], private=True))
    repos.append(make_repo("model", "acme/new-name", [
        regular_file("config.json", config_json(model_type="renamed")),
        lfs_file(store, "model/acme/new-name", "model.safetensors", 1 * MIB + 5),
    ]))
    repos.append(make_repo("dataset", "acme/tiny-dataset", [
        regular_file("README.md", "# acme/tiny-dataset\n\nFixture dataset.\n"),
        lfs_file(store, "dataset/acme/tiny-dataset", "data/train-00000-of-00001.parquet", 4 * MIB + 99),
        regular_file("data/test.csv", "id,text,label\n0,hello,1\n1,world,0\n2,naïve,1\n"),
    ]))
    repos.append(make_repo("space", "acme/tiny-space", [
        regular_file("app.py", "import gradio as gr\n\n"
                               "gr.Interface(lambda x: x, 'text', 'text').launch()\n"),
        regular_file("requirements.txt", "gradio\n"),
    ]))
    # Models of one size, for disk-budget tests: acme/sized-0 .. acme/sized-{N-1}.
    for i in range(sized_models):
        repos.append(make_repo("model", f"acme/sized-{i}", [
            regular_file("config.json", config_json(model_type=f"sized-{i}", size=sized_model_size)),
            lfs_file(store, f"model/acme/sized-{i}", "model.safetensors", sized_model_size),
        ]))
    if big_file_size > 0:
        repos.append(make_repo("model", "acme/big-model", [
            regular_file("config.json", config_json(model_type="big", size=big_file_size)),
            lfs_file(store, "model/acme/big-model", "model.safetensors", big_file_size),
        ]))
    renames = {("model", "acme/old-name"): "acme/new-name"}
    return repos, renames


# --------------------------------------------------------------------------
# Shared mutable state: counters and faults
# --------------------------------------------------------------------------

class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests = {k: 0 for k in REQUEST_KINDS}
            self.cdn_bytes: dict[str, int] = {}
            self.hub_file_bytes: dict[str, int] = {}
            self.cdn_authorization_headers = 0
            self.xet_fileinfo_responses = 0
            self.requests_by_auth: dict[str, int] = {}
            self.requests_by_kind_and_auth: dict[str, int] = {}  # "KIND AUTH": what went with which credential
            self.total_requests = 0
            # CDN GETs being answered now, and the most at once: how many parallel connections a node used.
            self.cdn_gets_active = 0
            self.cdn_gets_peak = 0
            self.signed_queries: list[str] = []  # the query of every signed CDN URL handed out
            # The routes a node passes through (listings, whoami, commits, ...): what each one carried.
            self.other_requests: list[dict] = []
            # Every request of the hub origin but the control API's: "METHOD /path?query", in arrival order.
            self.hub_requests: list[str] = []
            # Requests the throttle mode answered 429/503, by credential (as requests_by_auth).
            self.throttled_by_auth: dict[str, int] = {}

    def signed(self, query: str) -> None:
        with self.lock:
            self.signed_queries.append(query)

    def count(self, kind: str, auth_key: str) -> None:
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            self.requests_by_auth[auth_key] = self.requests_by_auth.get(auth_key, 0) + 1
            both = f"{kind} {auth_key}"
            self.requests_by_kind_and_auth[both] = self.requests_by_kind_and_auth.get(both, 0) + 1
            self.total_requests += 1

    def cdn_get_started(self) -> None:
        with self.lock:
            self.cdn_gets_active += 1
            self.cdn_gets_peak = max(self.cdn_gets_peak, self.cdn_gets_active)

    def cdn_get_ended(self) -> None:
        with self.lock:
            self.cdn_gets_active -= 1

    def add(self, table: str, key: str, n: int) -> None:
        with self.lock:
            d = getattr(self, table)
            d[key] = d.get(key, 0) + n

    def bump(self, attr: str) -> None:
        with self.lock:
            setattr(self, attr, getattr(self, attr) + 1)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "cdn_bytes": dict(self.cdn_bytes),
                "hub_file_bytes": dict(self.hub_file_bytes),
                "cdn_authorization_headers": self.cdn_authorization_headers,
                "xet_fileinfo_responses": self.xet_fileinfo_responses,
                "requests_by_auth": dict(self.requests_by_auth),
                "requests_by_kind_and_auth": dict(self.requests_by_kind_and_auth),
                "total_requests": self.total_requests,
                "cdn_gets_peak": self.cdn_gets_peak,
                "signed_queries": list(self.signed_queries),
                "other_requests": list(self.other_requests),
                "hub_requests": list(self.hub_requests),
                "throttled_by_auth": dict(self.throttled_by_auth),
            }


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict] = []

    @staticmethod
    def normalise(raw: dict) -> dict:
        if not isinstance(raw, dict) or not isinstance(raw.get("match"), str) or not raw["match"]:
            raise ValueError("each fault needs a non-empty string 'match'")
        kind = raw.get("kind", "status")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        fault = {"match": raw["match"], "kind": kind, "times": int(raw.get("times", 1)),
                 "bytes": int(raw.get("bytes", 0)), "status": int(raw.get("status", 503)),
                 "bps": int(raw.get("bps", 65536)), "triggered": 0}
        if raw.get("offset") is not None:
            fault["offset"] = int(raw["offset"])
        return fault

    def replace(self, raw_list: list) -> None:
        items = [self.normalise(r) for r in raw_list]
        with self.lock:
            self.items = items

    def take(self, predicate) -> dict | None:
        """Atomically find the first live fault accepted by `predicate` and consume one use."""
        with self.lock:
            for fault in self.items:
                if fault["times"] != 0 and predicate(fault):
                    if fault["times"] > 0:
                        fault["times"] -= 1
                    fault["triggered"] += 1
                    return dict(fault)
        return None

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(f) for f in self.items]


# --------------------------------------------------------------------------
# Hostile switches: an upstream that lies about where the bytes are, or never stops talking.
# Set with POST /_fake/hostile {...} (GET shows them), cleared by POST /_fake/reset.
#
#   lfs_locations  list: where successive LFS resolve answers (HEAD or GET) redirect; the last one
#                  repeats. "cdn" is the usual signed CDN URL (another origin); "hub-expired" is
#                  /_fake/hostile/expired/<sha> on the Hub origin, answering 403 like an expired signed
#                  URL (the node then asks the Hub again); "hub-redirect" is
#                  /_fake/hostile/redirect/<sha> on the Hub origin, answering 302 to `redirect_to`;
#                  anything with "://" is sent as it is (ftp://..., file:///...).
#   redirect_to    where /_fake/hostile/redirect/<sha> points: "cdn" (default) or a literal URL.
#   endless_info   true: revision info answers stream JSON padding until the client hangs up.
#
# Counted in stats: hostile_hub_authorization (Authorization headers the Hub origin's hostile paths
# received, which is the upstream's own origin); the CDN counts its own in cdn_authorization_headers.
# --------------------------------------------------------------------------

class Hostile:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.lfs_locations: list[str] = []
            self.redirect_to = "cdn"
            self.endless_info = False
            self.hub_authorization = 0

    def replace(self, raw: dict) -> None:
        if not isinstance(raw, dict):
            raise ValueError("expected an object of hostile switches")
        locations = raw.get("lfs_locations", [])
        if not isinstance(locations, list) or not all(isinstance(x, str) for x in locations):
            raise ValueError("lfs_locations must be a list of strings")
        with self.lock:
            self.lfs_locations = list(locations)
            self.redirect_to = str(raw.get("redirect_to", "cdn"))
            self.endless_info = bool(raw.get("endless_info", False))

    def next_lfs_location(self) -> str | None:
        with self.lock:
            if not self.lfs_locations:
                return None
            return self.lfs_locations.pop(0) if len(self.lfs_locations) > 1 else self.lfs_locations[0]

    def snapshot(self) -> dict:
        with self.lock:
            return {"lfs_locations": list(self.lfs_locations), "redirect_to": self.redirect_to,
                    "endless_info": self.endless_info, "hub_authorization": self.hub_authorization}


# --------------------------------------------------------------------------
# Throttle mode: the Hub's rate limits, as a node must take them.
# Set with POST /_fake/throttle {...} (GET shows it), cleared by POST /_fake/reset.
#
#   seconds   how long the window lasts from now (0 ends it)
#   status    429 (default) or 503
#   auth      the credentials it throttles: "anonymous" for none, else the bearer token; default: every one
#   headers   which of "retry-after" and "ratelimit" (RateLimit: "api";r=0;t=N and RateLimit-Policy, as the
#             Hub sends them) carry the time left, rounded up; default both, [] neither
#
# Every hub-origin request (control API aside) of a throttled credential during the window gets `status`,
# counted in stats as throttled_by_auth; requests_by_auth counts it as any other.
# --------------------------------------------------------------------------

THROTTLE_HEADERS = ("retry-after", "ratelimit")


class Throttle:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.until = 0.0
            self.status = 429
            self.auth: set[str] | None = None
            self.headers: tuple[str, ...] = THROTTLE_HEADERS

    def replace(self, raw: dict) -> None:
        if not isinstance(raw, dict):
            raise ValueError("expected an object: seconds, status, auth, headers")
        status = int(raw.get("status", 429))
        if status not in (429, 503):
            raise ValueError("status must be 429 or 503")
        auth = raw.get("auth")
        if auth is not None and (not isinstance(auth, list) or not all(isinstance(a, str) for a in auth)):
            raise ValueError("auth must be a list of strings")
        headers = raw.get("headers", list(THROTTLE_HEADERS))
        if not isinstance(headers, list) or any(h not in THROTTLE_HEADERS for h in headers):
            raise ValueError(f"headers must be a list among {THROTTLE_HEADERS}")
        with self.lock:
            self.until = time.monotonic() + float(raw.get("seconds", 0))
            self.status = status
            self.auth = None if auth is None else set(auth)
            self.headers = tuple(headers)

    def answer(self, auth_key: str) -> tuple[int, list] | None:
        """(status, headers) when `auth_key` is throttled now, else None."""
        with self.lock:
            left = self.until - time.monotonic()
            if left <= 0 or (self.auth is not None and auth_key not in self.auth):
                return None
            wait = max(1, int(-(-left // 1)))
            headers = []
            if "retry-after" in self.headers:
                headers.append(("Retry-After", str(wait)))
            if "ratelimit" in self.headers:
                headers += [("RateLimit", f'"api";r=0;t={wait}'),
                            ("RateLimit-Policy", '"fixed window";"api";q=500;w=300')]
            return self.status, headers

    def snapshot(self) -> dict:
        with self.lock:
            return {"seconds_left": max(0.0, self.until - time.monotonic()), "status": self.status,
                    "auth": None if self.auth is None else sorted(self.auth), "headers": list(self.headers)}


def corrupt_offset(fault: dict, size: int) -> int:
    return fault.get("offset", size // 2)


# --------------------------------------------------------------------------
# Hostile mode: an upstream (a compromised Hub, a parent node) that lies.
#
# POST /_fake/lies with a list of lies; each names one file as "{repo id}/{path}" in
# "match" and lasts until replaced or reset:
#   {"kind": "size", "size": N}     resolve (X-Linked-Size / Content-Length) and tree
#                                   entries claim N bytes; the bytes stay the file's own
#   {"kind": "etag_of", "repo": R, "path": P, "type": "model", "deliver": "own"|"claimed"}
#                                   resolve and tree entries name the hash and size of
#                                   R's file P; the body is the file's own bytes ("own")
#                                   or P's ("claimed": this upstream really has them)
#   {"kind": "endless"}             a body of the file (resolve GET or CDN) that never
#                                   ends: its bytes, then 0xAB without end, no length;
#                                   with "match": "{repo id}/" every API answer of the repo
# --------------------------------------------------------------------------

LIE_KINDS = ("size", "etag_of", "endless")
ENDLESS_FILLER = b"\xab" * SLICE


class Lies:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict] = []

    @staticmethod
    def normalise(raw: dict) -> dict:
        if not isinstance(raw, dict) or not isinstance(raw.get("match"), str) or "/" not in raw["match"]:
            raise ValueError("each lie needs 'match': \"{repo id}/{path}\"")
        if raw.get("kind") not in LIE_KINDS:
            raise ValueError(f"unknown lie kind {raw.get('kind')!r}; expected one of {LIE_KINDS}")
        lie = dict(raw)
        if lie["kind"] == "size" and not (isinstance(lie.get("size"), int) and lie["size"] >= 0):
            raise ValueError("a size lie needs 'size': N >= 0")
        if lie["kind"] == "etag_of":
            if not isinstance(lie.get("repo"), str) or not isinstance(lie.get("path"), str):
                raise ValueError("an etag_of lie needs 'repo' and 'path' of the file whose hash it claims")
            lie.setdefault("type", "model")
            lie.setdefault("deliver", "own")
        return lie

    def replace(self, raw_list: list) -> None:
        items = [self.normalise(r) for r in raw_list]
        with self.lock:
            self.items = items

    def find(self, kind: str, name: str) -> dict | None:
        with self.lock:
            return next((dict(lie) for lie in self.items if lie["kind"] == kind and lie["match"] == name), None)

    def any_for(self, kind: str, names) -> bool:
        with self.lock:
            return any(lie["kind"] == kind and lie["match"] in names for lie in self.items)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(lie) for lie in self.items]


def claimed_file(hub: "FakeHub", repo: "Repo", f: "FileEntry") -> tuple["FileEntry", "FileEntry"]:
    """(what the upstream says the file is, whose bytes it sends) under the lies about `f`."""
    name = f"{repo.id}/{f.path}"
    claim, body = f, f
    other = hub.lies.find("etag_of", name)
    if other is not None:
        source = hub.repos.get((other["type"], other["repo"]))
        rev = source.resolve("main") if source else None
        named = rev.files.get(other["path"]) if rev else None
        if named is not None:
            claim = named
            if other["deliver"] == "claimed":
                body = named
    size = hub.lies.find("size", name)
    if size is not None:
        claim = FileEntry(claim.path, size["size"], claim.sha256, claim.git_sha1, claim.lfs,
                          content=claim.content, pointer_size=claim.pointer_size, disk_path=claim.disk_path)
    return claim, body


class FakeHub:
    """Everything the handlers share: fixtures, signing key, counters, faults."""

    def __init__(self, args: argparse.Namespace, data_dir: str):
        self.host = args.host
        self.tree_page_size = max(1, args.tree_page_size)
        self.cdn_rate = max(0, args.cdn_rate)
        self.url_ttl = args.url_ttl
        self.verbose = args.verbose
        self.sign_key = secrets.token_bytes(32)  # per process: old signed URLs die with it
        self.stats = Stats()
        self.faults = Faults()
        self.lies = Lies()
        self.hostile = Hostile()
        self.throttle = Throttle()
        self.hub_port = 0
        self.cdn_port = 0
        self.stop_event = threading.Event()
        self.blob_store = BlobStore(data_dir)
        self.push_lock = threading.Lock()
        repos, self.renames = build_fixtures(self.blob_store, args.big_file_size, args.sized_models,
                                             args.sized_model_size)
        for spec in args.files_from:
            repo_id, _, root = spec.partition("=")
            repos.append(repo_from_dir(repo_id, root))
        self.repos = {(r.type, r.id): r for r in repos}
        self.blobs: dict[str, FileEntry] = {}         # sha256 -> LFS entry served by the CDN
        self.blob_names: dict[str, set[str]] = {}     # sha256 -> {"acme/x/path", ...} for fault matching
        for repo in repos:
            for rev in repo.commits.values():
                self.register_blobs(repo, rev)

    def register_blobs(self, repo: Repo, rev: Revision) -> None:
        for f in rev.files.values():
            if f.lfs:
                self.blobs.setdefault(f.sha256, f)
                self.blob_names.setdefault(f.sha256, set()).add(f"{repo.id}/{f.path}")

    def push(self, rtype: str, repo_id: str, branch: str, changes: dict) -> dict:
        """A new commit on `branch`: its parent's files with `changes` applied (path -> text for a
        regular file, {"size": N} for an LFS file of N generated bytes, None to delete the path)."""
        repo = self.repos.get((rtype, repo_id))
        if repo is None:
            raise KeyError(f"no {rtype} {repo_id}")
        with self.push_lock:
            parent = repo.commits[repo.branches[branch]] if branch in repo.branches else None
            files = dict(parent.files) if parent else {}
            for path, change in changes.items():
                if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                    raise ValueError(f"bad path {path!r}")
                if change is None:
                    files.pop(path, None)
                elif isinstance(change, str):
                    files[path] = regular_file(path, change)
                elif isinstance(change, dict) and isinstance(change.get("size"), int) and change["size"] >= 0:
                    # The parent commit in the seed gives a changed file new content at an unchanged path.
                    key = f"{rtype}/{repo_id}@{parent.commit if parent else ''}"
                    files[path] = lfs_file(self.blob_store, key, path, change["size"])
                else:
                    raise ValueError(f"{path}: expected text, {{\"size\": N}} or null")
            number = len(repo.commits) + 1
            commit = sha1_hex(f"{rtype}/{repo_id}@{branch}#{number}:{parent.commit if parent else ''}")
            rev = Revision(commit, f"Push #{number}", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                           files)
            repo.add_commit(rev)
            self.register_blobs(repo, rev)
            repo.branches[branch] = commit  # last: readers see the new branch only once it is complete
        return {"commit": commit, "parent": parent.commit if parent else None}

    @property
    def hub_url(self) -> str:
        return f"http://{self.host}:{self.hub_port}"

    @property
    def cdn_url(self) -> str:
        return f"http://{self.host}:{self.cdn_port}"

    def sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self.sign_key, f"{sha256}{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_blob_url(self, sha256: str) -> str:
        expires = int(time.time()) + self.url_ttl
        query = f"expires={expires}&sig={self.sign(sha256, expires)}"
        self.stats.signed(query)  # a test can look for the credential in whatever the node wrote
        return f"{self.cdn_url}/blobs/{sha256}?{query}"

    def verify(self, sha256: str, expires: str | None, sig: str | None) -> bool:
        if not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(self.sign(sha256, int(expires)), sig)

    def manifest(self) -> dict:
        out = []
        for repo in self.repos.values():
            out.append({
                "type": repo.type, "id": repo.id, "private": repo.private, "gated": repo.gated,
                "revisions": repo.all_revisions(),
                "files": {c: [f.manifest() for _, f in sorted(rev.files.items())]
                          for c, rev in repo.commits.items()},
            })
        return {"hub": self.hub_url, "cdn": self.cdn_url, "repos": out,
                "renames": {f"{t}/{old}": new for (t, old), new in self.renames.items()}}


# --------------------------------------------------------------------------
# HTTP plumbing shared by both origins
# --------------------------------------------------------------------------

UNSATISFIABLE = "unsatisfiable"


def parse_range(header: str | None, size: int):
    """None = serve everything, (start, end) inclusive, or UNSATISFIABLE.

    Multi-range and malformed headers are ignored (RFC 9110 allows that)."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec:
        return None
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first.strip() == "":
            n = int(last)
            if n <= 0 or size == 0:
                return UNSATISFIABLE
            return (max(0, size - n), size - 1)
        start = int(first)
        end = int(last) if last.strip() else size - 1
    except ValueError:
        return None
    if start < 0 or (last.strip() and end < start):
        return None
    if start >= size:
        return UNSATISFIABLE
    return (start, min(end, size - 1))


def split_segments(raw_path: str) -> tuple[list[str], list[str]]:
    """Raw and decoded path segments.

    http.server decoded the request line as latin-1; undo that to get the raw
    bytes, then percent-decode each segment on its own as UTF-8 so that an
    encoded slash (``refs%2Fpr%2F1``) stays inside its segment."""
    raw = [s for s in raw_path.split("/") if s]
    decoded = [urllib.parse.unquote_to_bytes(s.encode("latin-1")).decode("utf-8", "replace")
               for s in raw]
    return raw, decoded


def split_rev(args: list[str]) -> tuple[str, list[str]]:
    """First revision in `args` (also accepts unencoded ``refs/pr/1``) and the rest."""
    if len(args) >= 3 and args[0] == "refs" and args[1] in REF_NAMESPACES:
        return "/".join(args[:3]), args[3:]
    return args[0], args[1:]


def header_safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, handler, hub: FakeHub):
        self.hub = hub
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which can stall on a machine
        # without working DNS; we never need the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # client went away
            return
        super().handle_error(request, client_address)


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    origin = "?"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def handle(self) -> None:
        # Clients (and our own reset faults) drop connections mid-response;
        # that must never take a thread down with a traceback.
        try:
            super().handle()
        except OSError:
            self.close_connection = True

    def log_message(self, fmt, *args) -> None:
        if self.hub.verbose:
            sys.stderr.write(f"[{self.origin}] {self.address_string()} {fmt % args}\n")

    def do_GET(self) -> None:
        self._safe_dispatch("GET")

    def do_HEAD(self) -> None:
        self._safe_dispatch("HEAD")

    def do_POST(self) -> None:
        self._safe_dispatch("POST")

    def do_PUT(self) -> None:
        self._safe_dispatch("PUT")

    def do_PATCH(self) -> None:
        self._safe_dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._safe_dispatch("DELETE")

    def _safe_dispatch(self, method: str) -> None:
        self._headers_sent = False
        try:
            self.dispatch(method)
        except OSError:
            raise
        except Exception:  # a bug in the fake: make it loud but keep serving
            traceback.print_exc(file=sys.stderr)
            if self._headers_sent:
                self.close_connection = True
            else:
                self.send_json(500, {"error": "fake hub internal error"}, method=method)

    def dispatch(self, method: str) -> None:
        raise NotImplementedError

    # -- request helpers --------------------------------------------------

    def read_body(self) -> bytes:
        """Always drain the body so keep-alive stays in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- response helpers -------------------------------------------------

    def end_headers(self) -> None:
        self._headers_sent = True
        super().end_headers()

    def send(self, status: int, body: bytes = b"", headers=(), method: str = "GET",
             content_type: str | None = "application/json") -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, header_safe(str(v)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, status: int, obj, headers=(), method: str = "GET") -> None:
        self.send(status, json.dumps(obj).encode(), headers, method)

    def send_error_json(self, status: int, code: str | None, message: str, method: str,
                        headers=()) -> None:
        hdrs = list(headers) + [("X-Error-Message", message)]
        if code:
            hdrs.append(("X-Error-Code", code))
        self.send_json(status, {"error": message}, hdrs, method)

    def send_fault_status(self, fault: dict, method: str) -> None:
        self.send_error_json(fault["status"], None, f"Injected fault: HTTP {fault['status']}", method)

    def abort_connection(self) -> None:
        """Send a TCP RST (what a crashing proxy looks like to a client).

        RST discards unsent kernel buffers, so first wait (bounded) until the
        peer has acknowledged what we wrote: the client then sees exactly the
        promised number of bytes followed by ECONNRESET."""
        self.close_connection = True
        sock = self.connection
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                pending = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
                if pending == 0:
                    break
                time.sleep(0.001)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile() reference so close() really closes
            sock.close()
        except OSError:
            pass

    def serve_content(self, f: FileEntry, headers: list, method: str, matcher, rate: int,
                      account, endless: bool = False) -> None:
        """200/206/416 for `f`, honouring a single byte range, faults and rate."""
        size = f.size
        rng = parse_range(self.headers.get("Range"), size)
        if endless and method == "GET" and rng != UNSATISFIABLE:
            return self.send_endless(f, 0 if rng is None else rng[0], headers, account)
        if rng == UNSATISFIABLE:
            self.send(416, b"", headers + [("Content-Range", f"bytes */{size}")], method,
                      content_type=None)
            return
        if rng is None:
            status, start, length = 200, 0, size
        else:
            status, start, length = 206, rng[0], rng[1] - rng[0] + 1
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, header_safe(str(v)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        fault = None
        if matcher is not None:
            fault = self.hub.faults.take(lambda flt: (
                flt["kind"] != "status" and matcher(flt["match"])
                # a corrupt_byte fault is only spent on a response that carries its byte
                and (flt["kind"] != "corrupt_byte"
                     or start <= corrupt_offset(flt, size) < start + length)))
        self.send_body(f, start, length, fault, rate, account)

    def send_endless(self, f: FileEntry, start: int, headers: list, account) -> None:
        """Hostile: the file's bytes from `start`, then filler until the client hangs up (no length)."""
        self.send_response(206 if start else 200)
        for k, v in headers:
            self.send_header(k, header_safe(str(v)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with open(f.disk_path, "rb") if f.content is None else _nullcontext() as fh:
            pos = start
            while True:
                if pos < f.size:
                    chunk = f.content[pos:pos + SLICE] if fh is None else os.pread(fh.fileno(), SLICE, pos)
                else:
                    chunk = ENDLESS_FILLER
                self.wfile.write(chunk)  # raises once the client closes the connection
                pos += len(chunk)
                account(len(chunk))

    def send_body(self, f: FileEntry, start: int, length: int, fault: dict | None,
                  rate: int, account) -> None:
        kind = fault["kind"] if fault else None
        bps = rate
        if kind == "slow_body":
            bps = min(b for b in (rate, max(1, fault["bps"])) if b > 0)
        if kind is None and not bps:  # fast path
            if f.content is not None:
                self.wfile.write(f.content[start:start + length])
                account(length)
                return
            with open(f.disk_path, "rb") as fh:
                sent = 0
                while sent < length:
                    n = self.connection.sendfile(fh, start + sent, min(SENDFILE_CHUNK, length - sent))
                    if n <= 0:
                        raise ConnectionError("sendfile made no progress")
                    sent += n
                    account(n)
            return

        # Byte-level path: rate limiting and faults need to see every slice.
        limit = length
        if kind in ("reset_after_bytes", "truncate"):
            limit = max(0, min(length, fault["bytes"]))
        flip_at = corrupt_offset(fault, f.size) if kind == "corrupt_byte" else None
        slice_size = max(1, min(SLICE, bps // 16)) if bps else SLICE
        fd = os.open(f.disk_path, os.O_RDONLY) if f.content is None else None
        try:
            t0, sent = time.monotonic(), 0
            while sent < limit:
                off, n = start + sent, min(slice_size, limit - sent)
                chunk = f.content[off:off + n] if fd is None else os.pread(fd, n, off)
                if flip_at is not None and off <= flip_at < off + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[flip_at - off] ^= 0xFF
                self.wfile.write(chunk)
                sent += len(chunk)
                account(len(chunk))
                if bps and sent < limit:  # token bucket: never run ahead of bps
                    delay = t0 + sent / bps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        finally:
            if fd is not None:
                os.close(fd)
        if kind == "reset_after_bytes":
            self.abort_connection()
        elif kind == "truncate":
            self.close_connection = True  # orderly FIN before Content-Length was reached


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def auth_key_of(header: str | None) -> str:
    if header is None:
        return "anonymous"
    parts = header.split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    return "invalid"


# --------------------------------------------------------------------------
# HUB origin
# --------------------------------------------------------------------------

@dataclass
class Route:
    kind: str                # api_info / api_tree / api_paths_info / api_refs / resolve / xet_read_token
    rtype: str
    repo_id: str
    span: tuple[int, int]    # segments holding the repo id (for rename redirects)
    rev: str = "main"
    path: str = ""


def route_hub(segs: list[str]) -> Route | None:
    if len(segs) >= 3 and segs[0] == "api" and segs[1] in TYPE_BY_PLURAL:
        rtype, rest = TYPE_BY_PLURAL[segs[1]], segs[2:]
        # Legacy ids have no namespace ("gpt2"); everything we host has one.
        n = 1 if len(rest) == 1 or rest[1] in API_ACTIONS else 2
        repo_id, tail, span = "/".join(rest[:n]), rest[n:], (2, 2 + n)
        if not tail:
            return Route("api_info", rtype, repo_id, span)
        action, args = tail[0], tail[1:]
        if action == "revision" and args:
            return Route("api_info", rtype, repo_id, span, rev="/".join(args))
        if action == "tree" and args:
            rev, rest_path = split_rev(args)
            return Route("api_tree", rtype, repo_id, span, rev=rev, path="/".join(rest_path))
        if action == "paths-info" and args:
            return Route("api_paths_info", rtype, repo_id, span, rev="/".join(args))
        if action == "refs" and not args:
            return Route("api_refs", rtype, repo_id, span)
        if action == "xet-read-token" and args:
            return Route("xet_read_token", rtype, repo_id, span, rev="/".join(args))
        return None
    i, rtype = 0, "model"
    if segs and segs[0] in ("datasets", "spaces"):
        i, rtype = 1, TYPE_BY_PLURAL[segs[0]]
    for n in (2, 1):
        if len(segs) > i + n and segs[i + n] == "resolve":
            args = segs[i + n + 1:]
            if len(args) < 2:
                return None
            rev, rest_path = split_rev(args)
            if not rest_path:
                return None
            return Route("resolve", rtype, "/".join(segs[i:i + n]), (i, i + n),
                         rev=rev, path="/".join(rest_path))
    return None


class HubHandler(BaseHandler):
    origin = "hub"

    def dispatch(self, method: str) -> None:
        hub = self.hub
        raw_path, _, query = self.path.partition("?")
        body = self.read_body()
        if raw_path == "/_fake" or raw_path.startswith("/_fake/"):
            return self.control(method, raw_path, body)

        raw_segs, segs = split_segments(raw_path)
        route = route_hub(segs)
        auth_header = self.headers.get("Authorization")
        auth_key = auth_key_of(auth_header)
        kind = route.kind if route else "other"
        if kind == "resolve":
            kind = "resolve_head" if method == "HEAD" else "resolve_get"
        hub.stats.count(kind, auth_key)
        with hub.stats.lock:
            hub.stats.hub_requests.append(f"{method} {self.path}")

        throttled = hub.throttle.answer(auth_key)
        if throttled is not None:
            hub.stats.add("throttled_by_auth", auth_key, 1)
            status, headers = throttled
            return self.send_error_json(status, None, "You have been rate-limited; retry later", method, headers)
        decoded_path = "/" + "/".join(segs)
        fault = hub.faults.take(lambda f: f["kind"] == "status"
                                and (f["match"] in decoded_path or f["match"] in raw_path))
        if fault:
            return self.send_fault_status(fault, method)
        if auth_header is not None and not known_token(auth_key):
            return self.send_error_json(401, None, "Invalid credentials in Authorization header", method)
        if route is None:
            return self.other_route(method, raw_path, segs, query, auth_header, body)

        new_id = hub.renames.get((route.rtype, route.repo_id))
        if new_id is not None:
            # The Hub answers a renamed repo with a *relative* 307 to the new name.
            i, j = route.span
            location = "/" + "/".join(raw_segs[:i] + new_id.split("/") + raw_segs[j:])
            if query:
                location += "?" + query
            body = f"Temporary Redirect. Redirecting to {location}".encode()
            return self.send(307, body, [("Location", location)], method, "text/plain; charset=utf-8")

        token = auth_key if auth_header is not None else None
        repo = hub.repos.get((route.rtype, route.repo_id))
        if repo is None or (repo.private and token != APPROVED_TOKEN):
            return self.send_error_json(401, "RepoNotFound",
                                        f"Repository Not Found for url: {hub.hub_url}{self.path}.", method)
        if method not in ({"POST"} if route.kind == "api_paths_info" else {"GET", "HEAD"}):
            return self.send_error_json(405, None, f"Method {method} not allowed", method)
        if route.kind != "api_info" and route.kind != "api_refs" and self.gate_refused(repo, token, method):
            return
        if route.kind.startswith("api_") and hub.lies.any_for("endless", {f"{repo.id}/"}):
            return self.send_endless_json(method)
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        if route.kind == "api_refs":
            return self.api_refs(repo, q, method)
        rev = repo.resolve(route.rev)
        if rev is None:
            return self.send_error_json(404, "RevisionNotFound", f"Invalid rev id: {route.rev}", method)
        getattr(self, route.kind)(route, repo, rev, q, body, method)

    # -- the routes a node does not serve itself, only passes on ------------

    def other_route(self, method: str, raw_path: str, segs: list[str], query: str, auth_header: str | None,
                    body: bytes) -> None:
        hub = self.hub
        token = auth_key_of(auth_header) if auth_header is not None else None
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        with hub.stats.lock:
            hub.stats.other_requests.append({
                "method": method, "path": raw_path, "query": query, "auth": token or "anonymous",
                "via": self.headers.get("Via", ""), "accept": self.headers.get("Accept", ""),
                "cookie": self.headers.get("Cookie", ""), "body": body.decode("utf-8", "replace")})
        not_found = "Sorry, we can't find the page you are looking for."
        # A cookie and an internal header no proxy should hand on.
        private_headers = [("Set-Cookie", "token=fake-session; Path=/; HttpOnly"), ("X-Internal-Route", "other")]
        if segs == ["api", "whoami-v2"]:
            if token is None:
                return self.send_error_json(401, None, "Invalid credentials in Authorization header", method)
            name = "approved-user" if token == APPROVED_TOKEN else "unapproved-user"
            return self.send_json(200, {"type": "user", "id": sha1_hex(name)[:24], "name": name,
                                        "fullname": name.replace("-", " ").title(), "orgs": [],
                                        "auth": {"type": "access_token",
                                                 "accessToken": {"displayName": "tests", "role": "read"}}},
                                  private_headers + [("Cache-Control", "public, max-age=300")], method)
        # The web's sign-in: a redirect within the Hub, and one to another origin.
        if segs == ["join"]:
            return self.send(302, b"", [("Location", "/login?next=%2Fjoin")], method, None)
        if segs == ["login"]:
            return self.send(302, b"", [("Location", "https://accounts.example.invalid/oauth?state=1")], method, None)
        # Settings, branches, collections: writes the node passes on; the answer says what arrived.
        if method in ("PUT", "PATCH", "DELETE"):
            if token is None:
                return self.send_error_json(401, None, "You must be authenticated", method)
            return self.send_json(200, {"method": method, "path": raw_path, "body": body.decode("utf-8", "replace")},
                                  method=method)
        if len(segs) == 2 and segs[0] == "api" and segs[1] in TYPE_BY_PLURAL:
            return self.list_repos(TYPE_BY_PLURAL[segs[1]], segs[1], token, q, method, private_headers)
        if len(segs) >= 5 and segs[0] == "api" and segs[1] in TYPE_BY_PLURAL:
            rtype, repo_id, action, args = TYPE_BY_PLURAL[segs[1]], "/".join(segs[2:4]), segs[4], segs[5:]
        elif len(segs) >= 4 and segs[0] in ("datasets", "spaces"):
            rtype, repo_id, action, args = TYPE_BY_PLURAL[segs[0]], "/".join(segs[1:3]), segs[3], segs[4:]
        elif len(segs) >= 3:
            rtype, repo_id, action, args = "model", "/".join(segs[0:2]), segs[2], segs[3:]
        else:
            return self.send_error_json(404, None, not_found, method)
        repo = hub.repos.get((rtype, repo_id))
        if repo is None or (repo.private and token != APPROVED_TOKEN):
            return self.send_error_json(401, "RepoNotFound",
                                        f"Repository Not Found for url: {hub.hub_url}{self.path}.", method)
        if action == "discussions" and not args and segs[0] == "api":
            if method == "POST":
                if token is None:
                    return self.send_error_json(401, None, "You must be authenticated to open a discussion", method)
                title = json.loads(body or b"{}").get("title", "")
                return self.send_json(200, {"num": 100 + len(repo.prs), "title": title, "status": "open",
                                            "isPullRequest": False, "url": f"{hub.hub_url}/{repo_id}/discussions/100"},
                                      method=method)
            rows = [{"num": int(ref.rsplit("/", 1)[1]), "title": f"Change {ref}", "status": "open",
                     "isPullRequest": True, "createdAt": repo.commits[commit].date, "author": {"name": "acme-bot"},
                     "repo": {"name": repo.id, "type": repo.type}} for ref, commit in sorted(repo.prs.items())]
            return self.send_json(200, {"discussions": rows, "count": len(rows), "start": 0,
                                        "numItemsPerPage": 50}, method=method)
        if action == "commits" and args and segs[0] == "api":
            rev = repo.resolve("/".join(args))
            if rev is None:
                return self.send_error_json(404, "RevisionNotFound", f"Invalid rev id: {'/'.join(args)}", method)
            history = sorted((c for c in repo.commits.values() if c.date <= rev.date),
                             key=lambda c: c.date, reverse=True)
            page = int((q.get("p") or ["0"])[-1])
            rows = [{"id": c.commit, "title": c.title, "message": c.title + "\n", "date": c.date,
                     "authors": [{"user": "acme-bot", "avatar": ""}]}
                    for c in history[page * 2:page * 2 + 2]]
            headers = [("ETag", f'W/"{rev.commit}-{page}"')]
            if (page + 1) * 2 < len(history):
                headers.append(("Link", f'<{hub.hub_url}{raw_path}?p={page + 1}>; rel="next"'))
            if self.headers.get("If-None-Match") == headers[0][1]:
                return self.send(304, b"", headers, method, None)
            return self.send_json(200, rows, headers, method)
        if action == "parquet" and rtype == "dataset" and not args and segs[0] == "api":
            base = f"{hub.hub_url}/api/datasets/{repo.id}/parquet/default/train"
            return self.send_json(200, {"default": {"train": [f"{base}/0.parquet"]}}, method=method)
        if action == "raw" and len(args) >= 2:
            rev_name, path_parts = split_rev(args)
            rev = repo.resolve(rev_name)
            if rev is None:
                return self.send_error_json(404, "RevisionNotFound", f"Invalid rev id: {rev_name}", method)
            f = rev.files.get("/".join(path_parts))
            if f is None:
                return self.send_error_json(404, "EntryNotFound", "Entry not found", method,
                                            [("X-Repo-Commit", rev.commit)])
            if self.gate_refused(repo, token, method):
                return
            content = f.content if not f.lfs else (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\nsize {f.size}\n".encode())
            return self.send(200, content, [("ETag", f'"{f.git_sha1}"'), ("X-Repo-Commit", rev.commit),
                                            ("Content-Disposition", "inline")] + private_headers,
                             method, "text/plain; charset=utf-8")
        return self.send_error_json(404, None, not_found, method)

    def list_repos(self, rtype: str, plural: str, token: str | None, q: dict, method: str, headers: list) -> None:
        """GET /api/models (datasets, spaces): search, author, limit and a cursor, two repos a page."""
        search = (q.get("search") or [""])[-1].lower()
        author = (q.get("author") or [""])[-1]
        rows = [r for (t, _), r in sorted(self.hub.repos.items())
                if t == rtype and (not r.private or token == APPROVED_TOKEN) and search in r.id.lower()
                and (not author or r.id.split("/")[0] == author)]
        start = int((q.get("cursor") or ["0"])[-1])
        page = [{"_id": sha1_hex(r.id)[:24], "id": r.id, "modelId" if rtype == "model" else "id": r.id,
                 "private": r.private, "gated": r.gated, "downloads": 0, "likes": 0, "tags": [],
                 "createdAt": min(c.date for c in r.commits.values())} for r in rows[start:start + 2]]
        headers = list(headers)
        if start + 2 < len(rows):
            others = urllib.parse.urlencode([(k, v) for k, vs in q.items() if k != "cursor" for v in vs])
            headers.append(("Link", f'<{self.hub.hub_url}/api/{plural}?{others}&cursor={start + 2}>; rel="next"'))
        return self.send_json(200, page, headers, method)

    def gate_refused(self, repo: Repo, token: str | None, method: str) -> bool:
        if not repo.gated or token == APPROVED_TOKEN:
            return False
        what = f"Access to {repo.type} {repo.id} is restricted"
        if token is None:
            self.send_error_json(401, "GatedRepo", f"{what}. You must have access to it and be "
                                 "authenticated to access it. Please log in.", method)
        else:
            self.send_error_json(403, "GatedRepo", f"{what} and you are not in the authorized list. "
                                 f"Visit https://huggingface.co/{repo.id} to ask for access.", method)
        return True

    # -- JSON shapes ------------------------------------------------------

    def entry_json(self, rev: Revision, path: str, is_dir: bool, expand: bool, repo: Repo | None = None) -> dict:
        if is_dir:
            d = {"type": "directory", "oid": rev.dirs[path], "size": 0, "path": path}
        else:
            f = rev.files[path]
            if repo is not None:
                f = claimed_file(self.hub, repo, f)[0]
            d = {"type": "file", "oid": f.git_sha1, "size": f.size, "path": path}
            if f.lfs:
                d["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                d["xetHash"] = f.xet_hash  # Xet marker, must be harmless to the node
        if expand:
            d["lastCommit"] = {"id": rev.commit, "title": rev.title, "date": rev.date}
            if not is_dir:
                d["securityFileStatus"] = {"status": "safe"}
        return d

    def api_info(self, route: Route, repo: Repo, rev: Revision, q: dict, body: bytes, method: str) -> None:
        if self.hub.hostile.endless_info:
            return self.send_endless_json(method)
        blobs = truthy((q.get("blobs") or [None])[-1])
        siblings = []
        for path, f in sorted(rev.files.items()):
            s = {"rfilename": path}
            if blobs:
                s.update(size=f.size, blobId=f.git_sha1)
                if f.lfs:
                    s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(s)
        info = {"_id": sha1_hex(f"{repo.type}/{repo.id}")[:24], "id": repo.id}
        if repo.type == "model":
            info["modelId"] = repo.id
        info.update({
            "author": repo.id.split("/")[0], "sha": rev.commit, "lastModified": rev.date,
            "createdAt": CREATED_AT, "private": repo.private, "gated": repo.gated,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "usedStorage": sum(f.size for f in rev.files.values()),
            "xetEnabled": True, "siblings": siblings,
        })
        if repo.type == "space":
            info["sdk"] = "gradio"
        expand = q.get("expand", []) + q.get("expand[]", [])
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        self.send_json(200, info, method=method)

    def api_tree(self, route: Route, repo: Repo, rev: Revision, q: dict, body: bytes, method: str) -> None:
        path = route.path.strip("/")
        if path and path not in rev.dirs:
            return self.send_error_json(404, "EntryNotFound",
                                        f"{path} does not exist on \"{route.rev}\"", method)
        recursive_raw = (q.get("recursive") or ["false"])[-1]
        expand_raw = (q.get("expand") or ["false"])[-1]
        items = rev.listing(path, truthy(recursive_raw))

        page = self.hub.tree_page_size
        limit = (q.get("limit") or [""])[-1]
        if limit.isdigit() and int(limit) > 0:
            page = min(page, int(limit))
        cursor = (q.get("cursor") or [""])[-1]
        if cursor:
            # Shaped like the Hub's cursor: base64("<base64 json>:<page size>").
            try:
                inner, _, size = base64.b64decode(cursor).decode().rpartition(":")
                after = json.loads(base64.b64decode(inner))["file_name"]
                if not (limit.isdigit() and int(limit) > 0):
                    page = min(int(size), self.hub.tree_page_size)
            except (ValueError, KeyError, TypeError):
                return self.send_error_json(400, "BadRequest", "Invalid cursor", method)
            items = [it for it in items if it[0] > after]

        chunk, more = items[:page], len(items) > page
        headers = []
        if more:
            inner = base64.b64encode(json.dumps({"file_name": chunk[-1][0]}).encode()).decode()
            token = base64.b64encode(f"{inner}:{page}".encode()).decode()
            url = (f"{self.hub.hub_url}/api/{PLURAL[repo.type]}/{repo.id}/tree/"
                   f"{urllib.parse.quote(route.rev, safe='')}")
            if path:
                url += "/" + urllib.parse.quote(path, safe="/")
            url += (f"?recursive={urllib.parse.quote(recursive_raw)}&expand={urllib.parse.quote(expand_raw)}"
                    f"&cursor={urllib.parse.quote(token, safe='')}")
            headers.append(("Link", f'<{url}>; rel="next"'))
        expand = truthy(expand_raw)
        self.send_json(200, [self.entry_json(rev, p, d, expand, repo) for p, d in chunk], headers, method)

    def api_paths_info(self, route: Route, repo: Repo, rev: Revision, q: dict, body: bytes, method: str) -> None:
        ctype = self.headers.get("Content-Type", "")
        try:
            if "json" in ctype:
                obj = json.loads(body or b"{}")
                paths, expand = obj.get("paths", []), obj.get("expand", False)
                if isinstance(paths, str):
                    paths = [paths]
                expand = expand if isinstance(expand, bool) else truthy(str(expand))
            else:
                form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
                paths = form.get("paths", []) + form.get("paths[]", []) + q.get("paths", [])
                expand = truthy((form.get("expand") or q.get("expand") or ["false"])[-1])
        except (ValueError, AttributeError, UnicodeDecodeError):
            return self.send_error_json(400, "BadRequest", "Invalid paths-info body", method)
        out = []
        for p in paths:
            p = str(p).strip("/")
            if p in rev.files:
                out.append(self.entry_json(rev, p, False, expand, repo))
            elif p and p in rev.dirs:
                out.append(self.entry_json(rev, p, True, expand))
        self.send_json(200, out, method=method)

    def api_refs(self, repo: Repo, q: dict, method: str) -> None:
        out = {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in repo.tags.items()],
            "converts": [],
        }
        if truthy((q.get("include_prs") or [None])[-1]):
            out["pullRequests"] = [{"name": n, "ref": n, "targetCommit": c} for n, c in repo.prs.items()]
        self.send_json(200, out, method=method)

    def xet_urls(self, repo: Repo, rev: Revision, f: FileEntry) -> tuple[str, str]:
        refresh = f"/api/{PLURAL[repo.type]}/{repo.id}/xet-read-token/{rev.commit}"
        reconstruction = f"{self.hub.cdn_url}/xet-cas/reconstruction/{f.xet_hash}"
        return refresh, reconstruction

    def xet_read_token(self, route: Route, repo: Repo, rev: Revision, q: dict, body: bytes, method: str) -> None:
        exp = int(time.time()) + 3600
        cas = f"{self.hub.cdn_url}/xet-cas"
        self.send_json(200, {"accessToken": "xet_fake_token", "exp": exp, "casUrl": cas},
                       [("X-Xet-Access-Token", "xet_fake_token"), ("X-Xet-Token-Expiration", exp),
                        ("X-Xet-Cas-Url", cas)], method)

    def resolve(self, route: Route, repo: Repo, rev: Revision, q: dict, body: bytes, method: str) -> None:
        hub = self.hub
        f = rev.files.get(route.path)
        if f is None:
            return self.send_error_json(404, "EntryNotFound", "Entry not found", method,
                                        [("X-Repo-Commit", rev.commit)])
        claim, body = claimed_file(hub, repo, f)
        if claim is not f or body is not f or (not f.lfs and hub.lies.any_for("endless", {f"{repo.id}/{f.path}"})):
            return self.resolve_lying(repo, rev, f, claim, body, method)
        headers = [("X-Repo-Commit", rev.commit), ("Accept-Ranges", "bytes")]
        if f.lfs:
            refresh, reconstruction = self.xet_urls(repo, rev, f)
            headers += [
                ("ETag", f'"{f.sha256}"'), ("X-Linked-Etag", f'"{f.sha256}"'), ("X-Linked-Size", f.size),
                ("X-Xet-Hash", f.xet_hash), ("X-Xet-Refresh-Route", refresh),
                ("Link", f'<{hub.hub_url}{refresh}>; rel="xet-auth", '
                         f'<{reconstruction}>; rel="xet-reconstruction-info"'),
            ]
            if XET_FILEINFO in self.headers.get("Accept", ""):
                # How the real Hub lures Xet-capable clients; the node must not pass it on.
                hub.stats.bump("xet_fileinfo_responses")
                info = {"hash": f.xet_hash, "refreshUrl": hub.hub_url + refresh,
                        "reconstructionUrl": reconstruction, "etag": f.sha256, "size": f.size}
                return self.send(200, json.dumps(info).encode(), headers, method, XET_FILEINFO)
            location = self.hostile_location(f.sha256) or hub.signed_blob_url(f.sha256)
            text = f"Found. Redirecting to {location}".encode()
            return self.send(302, text, headers + [("Location", location)], method,
                             "text/plain; charset=utf-8")

        # Regular file, served by the Hub itself.
        def matcher(m: str) -> bool:
            return m in route.path or m in f"{repo.id}/{route.path}" or m in (f.sha256, f.git_sha1)

        if method == "GET":
            fault = hub.faults.take(lambda flt: flt["kind"] == "status" and matcher(flt["match"]))
            if fault:
                return self.send_fault_status(fault, method)
        if f.path.endswith(".json"):
            ctype = "application/json"
        else:
            try:
                f.content.decode("utf-8")
                ctype = "text/plain; charset=utf-8"
            except UnicodeDecodeError:
                ctype = "application/octet-stream"
        headers += [("ETag", f'"{f.git_sha1}"'), ("Content-Type", ctype)]
        self.serve_content(f, headers, method, matcher, 0,
                           lambda n: hub.stats.add("hub_file_bytes", f.git_sha1, n))

    def resolve_lying(self, repo: Repo, rev: Revision, f: FileEntry, claim: FileEntry, body: FileEntry,
                      method: str) -> None:
        """Hostile: describe `f` as `claim` and send `body`'s bytes (LFS through the CDN as usual)."""
        hub = self.hub
        headers = [("X-Repo-Commit", rev.commit), ("Accept-Ranges", "bytes")]
        if f.lfs:
            headers += [("ETag", f'"{claim.sha256}"'), ("X-Linked-Etag", f'"{claim.sha256}"'),
                        ("X-Linked-Size", claim.size)]
            location = hub.signed_blob_url(body.sha256)
            return self.send(302, f"Found. Redirecting to {location}".encode(),
                             headers + [("Location", location)], method, "text/plain; charset=utf-8")
        headers += [("ETag", f'"{claim.git_sha1}"'), ("Content-Type", "application/octet-stream")]
        if method == "HEAD":
            self.send_response(200)
            for k, v in headers:
                self.send_header(k, header_safe(str(v)))
            self.send_header("Content-Length", str(claim.size))
            self.end_headers()
            return
        endless = hub.lies.any_for("endless", {f"{repo.id}/{f.path}"})
        self.serve_content(body, headers, method, None, 0,
                           lambda n: hub.stats.add("hub_file_bytes", body.git_sha1, n), endless)

    # -- hostile switches (see Hostile) ---------------------------------------

    def hostile_location(self, sha: str) -> str | None:
        kind = self.hub.hostile.next_lfs_location()
        if kind is None or kind == "cdn":
            return None
        if kind == "hub-expired":
            return f"/_fake/hostile/expired/{sha}"
        if kind == "hub-redirect":
            return f"/_fake/hostile/redirect/{sha}"
        return kind  # a literal Location, e.g. ftp:// or file://

    def hostile_control(self, method: str, action: str, body: bytes) -> None:
        hub = self.hub
        if action == "hostile":
            if method == "POST":
                try:
                    hub.hostile.replace(json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    return self.send_json(400, {"error": str(exc)})
            return self.send_json(200, hub.hostile.snapshot(), method=method)
        if self.headers.get("Authorization") is not None:
            with hub.hostile.lock:
                hub.hostile.hub_authorization += 1
        kind, _, sha = action[len("hostile/"):].partition("/")
        if kind == "expired":
            return self.send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                             method=method, content_type="application/xml")
        if kind == "redirect" and sha in hub.blobs:
            target = hub.hostile.redirect_to
            location = hub.signed_blob_url(sha) if target == "cdn" else target
            return self.send(302, b"", [("Location", location)], method, content_type=None)
        return self.send_json(404, {"error": f"unknown hostile path {action}"}, method=method)

    def send_endless_json(self, method: str) -> None:
        """A JSON answer that never ends (no length, closed only when the client hangs up)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        if method == "HEAD":
            return
        pad = b" " * MIB
        try:
            self.wfile.write(b'{"sha": "')
            while not self.hub.stop_event.is_set():
                self.wfile.write(pad)
        except OSError:
            pass

    # -- control API --------------------------------------------------------

    def control(self, method: str, raw_path: str, body: bytes) -> None:
        hub = self.hub
        action = raw_path[len("/_fake/"):].strip("/")
        if method in ("GET", "HEAD") and action == "stats":
            return self.send_json(200, hub.stats.snapshot(), method=method)
        if method in ("GET", "HEAD") and action == "faults":
            return self.send_json(200, hub.faults.snapshot(), method=method)
        if method in ("GET", "HEAD") and action == "lies":
            return self.send_json(200, hub.lies.snapshot(), method=method)
        if method == "POST" and action == "lies":
            try:
                obj = json.loads(body or b"[]")
                hub.lies.replace(obj if isinstance(obj, list) else [obj])
            except (ValueError, TypeError) as exc:
                return self.send_json(400, {"error": str(exc)})
            return self.send_json(200, hub.lies.snapshot())
        if method in ("GET", "HEAD") and action == "manifest":
            return self.send_json(200, hub.manifest(), method=method)
        if action == "hostile" or action.startswith("hostile/"):
            return self.hostile_control(method, action, body)
        if method in ("GET", "HEAD") and action == "throttle":
            return self.send_json(200, hub.throttle.snapshot(), method=method)
        if method == "POST" and action == "throttle":
            try:
                hub.throttle.replace(json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                return self.send_json(400, {"error": str(exc)})
            return self.send_json(200, hub.throttle.snapshot())
        if method == "POST" and action == "reset":
            hub.stats.reset()
            hub.faults.replace([])
            hub.lies.replace([])
            hub.hostile.reset()
            hub.throttle.reset()
            return self.send_json(200, {"ok": True})
        if method == "POST" and action == "faults":
            try:
                obj = json.loads(body or b"[]")
                if isinstance(obj, dict):
                    obj = obj.get("faults", [obj] if "match" in obj else [])
                hub.faults.replace(obj)
            except (ValueError, TypeError) as exc:
                return self.send_json(400, {"error": str(exc)})
            return self.send_json(200, hub.faults.snapshot())
        if method == "POST" and action == "push":
            try:
                obj = json.loads(body or b"{}")
                if not isinstance(obj.get("repo"), str):
                    raise ValueError("expected {\"repo\": ..., \"type\": ..., \"branch\": ..., \"files\": {...}}")
                result = hub.push(obj.get("type", "model"), obj["repo"], obj.get("branch", "main"),
                                  obj.get("files", {}))
            except KeyError as exc:
                return self.send_json(404, {"error": str(exc)})
            except (ValueError, TypeError, AttributeError) as exc:
                return self.send_json(400, {"error": str(exc)})
            return self.send_json(200, result)
        if method == "POST" and action == "stop":
            self.close_connection = True
            self.send_json(200, {"ok": True})
            hub.stop_event.set()  # main thread shuts the servers down
            return
        self.send_json(404, {"error": f"unknown control endpoint {method} {raw_path}"}, method=method)


# --------------------------------------------------------------------------
# CDN origin
# --------------------------------------------------------------------------

class CdnHandler(BaseHandler):
    origin = "cdn"
    server_version = "FakeCDN/1.0"

    def dispatch(self, method: str) -> None:
        hub = self.hub
        raw_path, _, query = self.path.partition("?")
        self.read_body()
        auth_header = self.headers.get("Authorization")
        auth_key = auth_key_of(auth_header)
        if raw_path.startswith("/xet-cas/"):
            hub.stats.count("xet_cas", auth_key)
            return self.send_json(404, {"error": "the fake hub has no Xet CAS; use the LFS redirect"},
                                  method=method)
        if not raw_path.startswith("/blobs/") or method not in ("GET", "HEAD"):
            hub.stats.count("other", auth_key)
            return self.send_json(404, {"error": "Not Found"}, method=method)
        hub.stats.count("cdn_get" if method == "GET" else "cdn_head", auth_key)
        if auth_header is not None:
            # The signed URL is the credential; a Hub token reaching the CDN is a leak.
            hub.stats.bump("cdn_authorization_headers")

        sha = raw_path[len("/blobs/"):]
        q = urllib.parse.parse_qs(query)
        if not hub.verify(sha, (q.get("expires") or [None])[-1], (q.get("sig") or [None])[-1]):
            body = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                    b"<Message>Request has expired or signature is invalid</Message></Error>")
            return self.send(403, body, method=method, content_type="application/xml")
        f = hub.blobs.get(sha)
        if f is None:
            return self.send(404, b"<Error><Code>NoSuchKey</Code></Error>", method=method,
                             content_type="application/xml")

        names = hub.blob_names.get(sha, ())

        def matcher(m: str) -> bool:
            return m in raw_path or m == sha or any(m in n for n in names)

        if method == "GET":
            fault = hub.faults.take(lambda flt: flt["kind"] == "status" and matcher(flt["match"]))
            if fault:
                return self.send_fault_status(fault, method)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   ("ETag", f'"{sha}"'), ("Cache-Control", "public, max-age=604800, immutable")]
        if method == "GET":
            hub.stats.cdn_get_started()
        try:
            self.serve_content(f, headers, method, matcher, hub.cdn_rate,
                               lambda n: hub.stats.add("cdn_bytes", sha, n), hub.lies.any_for("endless", names))
        finally:
            if method == "GET":
                hub.stats.cdn_get_ended()


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake HuggingFace Hub (hub + CDN origins) for tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="hub origin port (0 = ephemeral)")
    p.add_argument("--cdn-port", type=int, default=0, help="CDN origin port (0 = ephemeral)")
    p.add_argument("--data-dir", default=None,
                   help="where LFS blobs are materialised (default: temp dir removed at exit)")
    p.add_argument("--tree-page-size", type=int, default=3)
    p.add_argument("--big-file-size", type=int, default=0,
                   help="if > 0, add acme/big-model with an LFS file of this many bytes")
    p.add_argument("--sized-models", type=int, default=0,
                   help="add acme/sized-0..N-1, each with an LFS file of --sized-model-size bytes")
    p.add_argument("--sized-model-size", type=int, default=8 * MIB)
    p.add_argument("--cdn-rate", type=int, default=0, help="bytes/s per CDN response (0 = unlimited)")
    p.add_argument("--url-ttl", type=int, default=3600, help="lifetime of signed CDN URLs, seconds")
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    p.add_argument("--files-from", action="append", default=[], metavar="NAMESPACE/NAME=DIR",
                   help="add the model repo NAMESPACE/NAME holding every file under DIR as an LFS file (repeatable)")
    args = p.parse_args(argv)
    for spec in args.files_from:
        repo_id, eq, root = spec.partition("=")
        if not eq or repo_id.count("/") != 1 or not os.path.isdir(root):
            p.error(f"--files-from {spec!r}: expected NAMESPACE/NAME=DIR with an existing DIR")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    # Installed first, so SIGTERM during a long materialisation still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    owns_dir = args.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="fake-hub-") if owns_dir else args.data_dir
    servers: list[Server] = []
    try:
        os.makedirs(data_dir, exist_ok=True)
        hub = FakeHub(args, data_dir)
        hub.stop_event = stop
        if stop.is_set():
            return 0
        servers = [Server((args.host, args.port), HubHandler, hub),
                   Server((args.host, args.cdn_port), CdnHandler, hub)]
        hub.hub_port = servers[0].server_address[1]
        hub.cdn_port = servers[1].server_address[1]
        for srv in servers:
            threading.Thread(target=srv.serve_forever, name=f"serve-{srv.server_port}", daemon=True).start()
        sys.stdout.write(f"READY hub={hub.hub_url} cdn={hub.cdn_url}\n")
        sys.stdout.flush()
        stop.wait()
        return 0
    finally:
        # shutdown() waits for the serve loop's next poll; do both at once.
        stoppers = [threading.Thread(target=srv.shutdown) for srv in servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        for srv in servers:
            srv.server_close()
        if owns_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
