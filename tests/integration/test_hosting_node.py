"""Hosted repos as the node keeps them: their torrents (aria2 fetches a hosted snapshot from the node's seed and
from its web seed), private repos refused to everyone but their owner on every route (the Hub's read routes, the
torrent and magnet routes, the web seed with and without a passkey), kill -9 in the middle of an upload and of a
commit (nothing half-visible after the restart, and the client's retry succeeds), the per-namespace quota, a node
user's namespace never asked of the upstream, deletions that take the chunks with them, hosted files that max_disk
never evicts, multipart uploads, and the signed upload URLs.

The real binary against the fake Hub; the client is huggingface_hub 1.x from .venv/hub1 (HF_HUB_DISABLE_XET=1, in a
subprocess: test_hosting_python's DRIVER) where what a user sees matters, plain http.client for the raw upload
protocol (the LFS batch, the signed PUTs, the NDJSON commit). One node per class.

Run:  cd tests/integration && python3 -m unittest -v test_hosting_node
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bencode  # noqa: E402
import accounts  # noqa: E402
from accounts import ADMIN_KEY, add_user, admin  # noqa: E402
from harness import ROOT, Node, access_lines, clean_env, sha256, wait_until  # noqa: E402
from test_hosting_python import DRIVER  # noqa: E402

MIB = 1024 * 1024
HUB1_PYTHON = os.path.join(ROOT, ".venv", "hub1", "bin", "python")
MULTIPART_THRESHOLD = 64 * MIB  # HostingSettings::multipart_threshold
NDJSON = "application/x-ndjson"


# -- the raw protocol ---------------------------------------------------------------------------------

def bearer(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def call(node: Node, method: str, path: str, key: str | None = None, body=None, headers: dict | None = None):
    """(status, lower-case headers, body) of one request; a dict or list body goes as JSON."""
    all_headers = {**bearer(key), **(headers or {})}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    try:
        return node.request(method, path, all_headers, body)
    except (ConnectionError, http.client.RemoteDisconnected) as e:
        try:
            code = node.proc.wait(timeout=10)  # a node that crashes takes a moment to exit
        except subprocess.TimeoutExpired:
            code = None
        raise AssertionError(f"{method} {path}: no answer ({type(e).__name__}); the node "
                             f"{'is still running' if code is None else f'died (exit {code})'}") from None


def error_message(headers: dict, body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {}
    return headers.get("x-error-message", "") + " " + (parsed.get("error", "") if isinstance(parsed, dict) else "")


def create_repo(node: Node, key: str, repo: str, private: bool = False) -> None:
    ns, name = repo.split("/")
    status, _, body = call(node, "POST", "/api/repos/create", key,
                           {"name": name, "organization": ns, "type": "model", "private": private})
    assert status == 200, (repo, status, body)


def delete_repo(node: Node, key: str, repo: str) -> None:
    ns, name = repo.split("/")
    status, _, body = call(node, "DELETE", "/api/repos/delete", key,
                           {"name": name, "organization": ns, "type": "model"})
    assert status == 200, (repo, status, body)


def lfs_batch(node: Node, key: str, repo: str, objects: list[tuple[str, int]], multipart: bool = False) -> list[dict]:
    """The batch answer's objects for uploads of `objects` (oid, size); raises on another status than 200."""
    body = {"operation": "upload", "transfers": ["basic", "multipart"] if multipart else ["basic"],
            "hash_algo": "sha256", "objects": [{"oid": oid, "size": size} for oid, size in objects]}
    status, headers, answer = call(node, "POST", f"/{repo}.git/info/lfs/objects/batch", key, body,
                                   {"Accept": "application/vnd.git-lfs+json",
                                    "Content-Type": "application/vnd.git-lfs+json"})
    if status != 200:
        raise BatchRefused(status, error_message(headers, answer))
    return json.loads(answer)["objects"]


class BatchRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def path_of(url: str) -> str:
    """The path (and query) of an absolute URL the node handed out: requests go to the node's own address."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def put(node: Node, url: str, data: bytes):
    """A PUT of `data` to a signed upload URL, without Authorization (as the clients send it)."""
    return node.request("PUT", path_of(url), {"Content-Type": "application/octet-stream"}, data)


def upload_object(node: Node, key: str, repo: str, data: bytes) -> str:
    """The LFS object of `data` stored for `repo` through the batch and a PUT; its oid."""
    oid = sha256(data)
    answer, = lfs_batch(node, key, repo, [(oid, len(data))])
    if "actions" in answer:
        status, _, body = put(node, answer["actions"]["upload"]["href"], data)
        assert status == 200, (status, body)
    return oid


def commit_payload(summary: str, inline: dict[str, bytes] | None = None, lfs: dict[str, bytes] | None = None,
                   parent: str | None = None) -> bytes:
    header = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    lines = [{"key": "header", "value": header}]
    for path, data in (lfs or {}).items():
        lines.append({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": sha256(data),
                                                  "size": len(data)}})
    for path, data in (inline or {}).items():
        lines.append({"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(),
                                               "encoding": "base64"}})
    return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"


def commit(node: Node, key: str, repo: str, summary: str, inline: dict[str, bytes] | None = None,
           lfs: dict[str, bytes] | None = None) -> str:
    """Uploads the LFS files, commits everything to main; the new commit's id."""
    for data in (lfs or {}).values():
        upload_object(node, key, repo, data)
    status, _, body = call(node, "POST", f"/api/models/{repo}/commit/main", key,
                           commit_payload(summary, inline, lfs), {"Content-Type": NDJSON})
    assert status == 200, (status, body)
    return json.loads(body)["commitOid"]


def head(node: Node, key: str | None, repo: str, rev: str = "main") -> str:
    status, _, body = call(node, "GET", f"/api/models/{repo}/revision/{rev}", key)
    assert status == 200, (status, body)
    return json.loads(body)["sha"]


def listed_files(node: Node, key: str | None, repo: str, rev: str = "main") -> list[str]:
    status, _, body = call(node, "GET", f"/api/models/{repo}/tree/{rev}?recursive=true", key)
    assert status == 200, (status, body)
    return sorted(e["path"] for e in json.loads(body) if e["type"] == "file")


def resolve(node: Node, repo: str, path: str, key: str | None = None, rev: str = "main"):
    return call(node, "GET", node.resolve_path(repo, rev, path), key)


def chunk_files(node: Node) -> set[str]:
    found = set()
    for root, _, names in os.walk(os.path.join(node.data_dir, "chunks")):
        found.update(os.path.join(root, name) for name in names)
    return found


def staged_bytes(node: Node, prefix: str) -> int:
    """Bytes in the staging folders whose names start with `prefix` (upload-, inline-, multipart-)."""
    total = 0
    staging = os.path.join(node.data_dir, "staging")
    for folder in os.listdir(staging) if os.path.isdir(staging) else []:
        if folder.startswith(prefix):
            for root, _, names in os.walk(os.path.join(staging, folder)):
                for name in names:
                    try:
                        total += os.path.getsize(os.path.join(root, name))
                    except OSError:
                        pass  # taken away while we looked
    return total


def passkey_of(node: Node, user: str) -> str:
    status, answer = admin(node, "GET", "users")
    assert status == 200, (status, answer)
    return next(u["passkey"] for u in answer["users"] if u["name"] == user)


class HostedNodeCase(accounts.HostedNodeCase):
    """The shared fake Hub and node with users alice and bob, and what these tests add to it."""

    def node_answers(self) -> bool:
        """Whether the node answers /healthz; when it does not, it is dying: waits for its exit."""
        if self.node.proc.poll() is None:
            try:
                if self.node.request("GET", "/healthz")[0] == 200:
                    return True
            except OSError:
                pass
        try:
            self.node.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return True  # alive but not answering /healthz: the test's own assertions say more
        return False

    def setUp(self):
        # A test that crashed the node has failed by itself; the next ones get the node back on the same data.
        if not self.node_answers():
            self.node.stop()
            self.node.start()

    def tearDown(self):
        if not self.node_answers() and self.node.proc.returncode != -signal.SIGKILL:
            with open(self.node.log_path, errors="replace") as f:
                log = f.read()[-1500:]
            self.fail(f"the node died during the test (exit {self.node.proc.returncode}); its log ends:\n{log}")

    def folder(self, name: str) -> str:
        path = tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.folder(name), name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def hf(self, *calls: dict, user: str = "alice", timeout: float = 300) -> list[dict]:
        """`calls` made by huggingface_hub 1.x (test_hosting_python's DRIVER) as `user`, at nice 10: each
        call's result ({"value": ...} or the error's description)."""
        self.assertTrue(os.path.exists(HUB1_PYTHON), f"{HUB1_PYTHON} is missing: run scripts/install-deps.sh --test")
        env = {k: v for k, v in clean_env().items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update({"HF_ENDPOINT": self.node.url, "HF_TOKEN": self.keys[user], "HF_HOME": self.folder("hf-home"),
                    "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        done = subprocess.run(["nice", "-n", "10", HUB1_PYTHON, "-c", DRIVER], input=json.dumps(list(calls)),
                              capture_output=True, text=True, timeout=timeout, env=env)
        self.assertEqual(done.returncode, 0,
                         f"the client driver crashed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertTrue(out["version"].startswith("1."), out["version"])
        return out["results"]

    def hf_ok(self, *calls: dict, **kwargs) -> list:
        results = self.hf(*calls, **kwargs)
        for i, result in enumerate(results):
            self.assertNotIn("error", result, f"call {i} ({calls[i]['call']}) failed: {json.dumps(result, indent=1)}")
        self.assertEqual(len(results), len(calls))
        return [r["value"] for r in results]


# -- torrents, private repos, never upstream, deletions, multipart, upload URLs ----------------------

class HostedRepoNodeTest(HostedNodeCase):
    node_args = ("--access-log", "-")

    def aria2(self, source: str, *extra: str) -> tuple[str, subprocess.CompletedProcess]:
        """aria2c on a .torrent path or magnet URI, on loopback, DHT, local discovery and peer exchange off (the
        node's tracker, seed and web seed are its only sources): (its download folder, the finished process)."""
        directory = self.folder("aria2")
        done = subprocess.run(
            ["nice", "-n", "10", "aria2c", f"--dir={directory}", "--enable-dht=false", "--enable-dht6=false",
             "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-time=0", "--summary-interval=0",
             "--show-console-readout=false", "--console-log-level=notice", "--file-allocation=none",
             "--bt-stop-timeout=60", "--bt-tracker-connect-timeout=10", *extra, source],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, f"aria2c failed:\n{done.stdout[-6000:]}{done.stderr[-2000:]}")
        return directory, done

    def assert_files(self, root: str, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            full = os.path.join(root, path)
            self.assertTrue(os.path.isfile(full), f"{path} missing under {root}: {os.listdir(root)}")
            with open(full, "rb") as f:
                self.assertEqual(sha256(f.read()), sha256(data), f"{path} differs")

    def torrent_repo(self) -> tuple[str, str, dict[str, bytes]]:
        """A public hosted repo for the torrent tests, made once: (repo, its commit, path -> bytes)."""
        cls = type(self)
        if not hasattr(cls, "_torrent_repo"):
            key, repo = self.keys["alice"], "alice/torrent-me"
            files = {"config.json": b'{"model_type": "hosted"}\n', "README.md": b"# hosted\n",
                     "model.safetensors": os.urandom(3 * MIB + 7), "sub/tokenizer.bin": os.urandom(100_000)}
            create_repo(self.node, key, repo)
            sha = commit(self.node, key, repo, "weights",
                         inline={p: d for p, d in files.items() if not p.endswith((".safetensors", ".bin"))},
                         lfs={p: d for p, d in files.items() if p.endswith((".safetensors", ".bin"))})
            cls._torrent_repo = (repo, sha, files)
        return cls._torrent_repo

    def fetch_torrent(self, repo: str, sha: str, files: dict[str, bytes]) -> tuple[bytes, dict, str]:
        """The node's v1 .torrent of the repo's main, checked: (its bytes, decoded, its info-hash)."""
        status, headers, torrent = self.node.request("GET", f"/api/models/{repo}/torrent/main")
        self.assertEqual(status, 200, torrent[:300])
        self.assertEqual(headers["content-type"], "application/x-bittorrent")
        self.assertEqual(headers["x-repo-commit"], sha)
        info_hash = headers["x-inferllama-info-hash"]
        meta = bencode.decode(torrent)
        self.assertEqual(hashlib.sha1(bencode.encode(meta[b"info"])).hexdigest(), info_hash)
        listed = {"/".join(p.decode() for p in f[b"path"]) for f in meta[b"info"][b"files"]
                  if not f[b"path"][0] == b".pad"}
        self.assertEqual(listed, {*files, ".gitattributes"})
        return torrent, meta, info_hash

    def write_torrent(self, name: str, data: bytes) -> str:
        path = os.path.join(self.folder("torrents"), name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_torrent_of_a_hosted_snapshot_from_the_seed(self):
        """The v1 torrent of a hosted public snapshot: aria2 gets every file from the node's seed alone (the
        torrent without its url-list), and again from the magnet link without its web seed (the metadata from the
        node's seed, BEP 9); every byte as uploaded."""
        repo, sha, files = self.torrent_repo()
        torrent, meta, info_hash = self.fetch_torrent(repo, sha, files)
        name = meta[b"info"][b"name"].decode()
        # No url-list (it is outside the info dict: the info-hash stays).
        seed_only = self.write_torrent("seed-only.torrent",
                                       bencode.encode({k: v for k, v in meta.items() if k != b"url-list"}))
        uploaded_before = self.node.metric("inferllama_bt_uploaded_bytes_total")
        directory, _ = self.aria2(seed_only)
        self.assert_files(os.path.join(directory, name), files)
        wait_until(lambda: self.node.metric("inferllama_bt_uploaded_bytes_total") - uploaded_before
                   >= len(files["model.safetensors"]), timeout=15, what="the node's seed to count what it sent")

        status, headers, magnet = self.node.request("GET", f"/api/models/{repo}/magnet/main")
        self.assertEqual(status, 200, magnet[:300])
        self.assertEqual(headers["x-inferllama-info-hash"], info_hash)
        self.assertEqual(headers["x-repo-commit"], sha)
        uri = urllib.parse.urlsplit(magnet.decode())
        self.assertEqual(uri.scheme, "magnet")
        query = urllib.parse.parse_qs(uri.query)
        self.assertEqual(query["xt"], [f"urn:btih:{info_hash}"])
        self.assertIn(f"{self.node.url}/announce", query["tr"])
        self.assertEqual(query["ws"], [f"{self.node.url}/api/models/{repo}/webseed/{sha}/"])
        without_web_seed = "magnet:?" + urllib.parse.urlencode(
            [(k, v) for k, values in query.items() if k != "ws" for v in values])
        directory, _ = self.aria2(without_web_seed)
        self.assert_files(os.path.join(directory, name), files)

    def test_torrent_of_a_hosted_snapshot_from_the_web_seed(self):
        """The same torrent from the node's web seed alone: aria2 excludes every tracker, so it knows no peer."""
        repo, sha, files = self.torrent_repo()
        torrent, meta, _ = self.fetch_torrent(repo, sha, files)
        web_seeds = meta.get(b"url-list", [])
        web_seeds = [web_seeds] if isinstance(web_seeds, bytes) else web_seeds
        self.assertEqual(web_seeds, [f"{self.node.url}/api/models/{repo}/webseed/{sha}/".encode()])
        name = meta[b"info"][b"name"].decode()
        # One file straight from the web seed, as a BEP 19 client asks for it.
        status, _, body = call(self.node, "GET", f"/api/models/{repo}/webseed/{sha}/{name}/model.safetensors")
        self.assertEqual((status, sha256(body)), (200, sha256(files["model.safetensors"])))
        directory, _ = self.aria2(self.write_torrent("plain.torrent", torrent), "--bt-exclude-tracker=*")
        self.assert_files(os.path.join(directory, name), files)

    def private_repo(self) -> tuple[str, str, bytes]:
        """alice's private repo, made once: (repo, commit, the LFS file's bytes)."""
        cls = type(self)
        if not hasattr(cls, "_private_repo"):
            owner, repo = self.keys["alice"], "alice/hidden"
            secret = os.urandom(200_000)
            create_repo(self.node, owner, repo, private=True)
            sha = commit(self.node, owner, repo, "secret", inline={"notes.txt": b"private notes\n"},
                         lfs={"secret.bin": secret})
            cls._private_repo = (repo, sha, secret)
        return cls._private_repo

    def test_private_repo_read_routes_refuse_all_but_its_owner(self):
        """resolve, info, revision, tree, paths-info: 404 RepoNotFound for another user and for anyone."""
        repo, sha, secret = self.private_repo()
        owner, other = self.keys["alice"], self.keys["bob"]
        reads = {
            "resolve": ("GET", self.node.resolve_path(repo, "main", "secret.bin"), None),
            "resolve by commit": ("GET", self.node.resolve_path(repo, sha, "notes.txt"), None),
            "info": ("GET", f"/api/models/{repo}", None),
            "revision": ("GET", f"/api/models/{repo}/revision/main", None),
            "tree": ("GET", f"/api/models/{repo}/tree/main", None),
            "paths-info": ("POST", f"/api/models/{repo}/paths-info/main", {"paths": ["secret.bin"]}),
            "refs": ("GET", f"/api/models/{repo}/refs", None),
        }
        for what, (method, path, body) in reads.items():
            status, _, answer = call(self.node, method, path, owner, body)
            self.assertEqual(status, 200, f"the owner's {what}: {answer[:300]}")
            for who, key in (("bob", other), ("anonymous", None)):
                with self.subTest(route=what, who=who):
                    status, headers, answer = call(self.node, method, path, key, body)
                    self.assertEqual(status, 404, answer[:300])
                    self.assertEqual(headers.get("x-error-code"), "RepoNotFound", headers)
                    self.assertNotIn(secret[:64], answer)
        status, _, body = resolve(self.node, repo, "secret.bin", owner)
        self.assertEqual((status, sha256(body)), (200, sha256(secret)))

    def test_listing_a_users_repos_shows_private_ones_to_the_owner_only(self):
        """GET /api/models?author=alice (HfApi.list_models(author=...)) is answered by the node, never upstream;
        the private repo is listed for alice only."""
        repo, _, _ = self.private_repo()
        torrent_repo, _, _ = self.torrent_repo()
        before = len(self.hub.stats()["hub_requests"])
        for who, key, shown in (("alice", self.keys["alice"], True), ("bob", self.keys["bob"], False),
                                ("anonymous", None, False)):
            status, _, body = call(self.node, "GET", "/api/models?author=alice", key)
            self.assertEqual(status, 200, f"{who}: {body[:300]}")
            ids = [m["id"] for m in json.loads(body)]
            self.assertIn(torrent_repo, ids, who)
            self.assertEqual(repo in ids, shown, f"{who}: {ids}")
        self.assertEqual(self.hub.stats()["hub_requests"][before:], [])

    def test_private_repo_has_no_torrent(self):
        """Torrent and magnet: not found for anyone who may not read the repo; its owner is told torrents are
        for public repos only (403)."""
        repo, _, _ = self.private_repo()
        owner, other = self.keys["alice"], self.keys["bob"]
        for kind in ("torrent", "magnet"):
            path = f"/api/models/{repo}/{kind}/main"
            for who, key in (("bob", other), ("anonymous", None)):
                with self.subTest(route=kind, who=who):
                    status, headers, answer = call(self.node, "GET", path, key)
                    self.assertEqual(status, 404, answer[:300])
                    self.assertEqual(headers.get("x-error-code"), "RepoNotFound", headers)
            with self.subTest(route=kind, who="alice"):
                status, headers, answer = call(self.node, "GET", path, owner)
                self.assertEqual(status, 403, answer[:300])
                self.assertIn("public repositories only", error_message(headers, answer))

    def test_private_repo_web_seed_serves_its_owner_only(self):
        """The web seed route by path: refused anonymously, with bob's key and with bob's passkey; served with
        alice's passkey (a BitTorrent client's URL) and with her key."""
        repo, sha, secret = self.private_repo()
        owner, other = self.keys["alice"], self.keys["bob"]
        webseed = f"/api/models/{repo}/webseed/{sha}/hidden/secret.bin"
        own_passkey, other_passkey = passkey_of(self.node, "alice"), passkey_of(self.node, "bob")
        self.assertNotEqual(own_passkey, other_passkey)
        for who, path, key in (("anonymous", webseed, None), ("bob's key", webseed, other),
                               ("bob's passkey", f"/p/{other_passkey}{webseed}", None)):
            status, headers, answer = call(self.node, "GET", path, key)
            self.assertEqual((status, headers.get("x-error-code")), (404, "RepoNotFound"), f"{who}: {answer[:300]}")
            self.assertNotIn(secret[:64], answer)
        for who, path, key in (("alice's passkey", f"/p/{own_passkey}{webseed}", None),
                               ("alice's key", webseed, owner)):
            status, _, answer = call(self.node, "GET", path, key)
            self.assertEqual((status, sha256(answer)), (200, sha256(secret)), who)

    def test_private_org_repo_is_readable_by_members_but_not_torrented(self):
        """An organisation's private repo: a member reads it; a member asking for its torrent is told torrents are
        for public repos (403); a non-member is not told it exists (404)."""
        status, _, answer = call(self.node, "POST", "/api/inferllama/orgs", ADMIN_KEY, {"name": "labs"})
        if status != 201 and b"organisation" not in answer:
            self.skipTest(f"this node has no organisations' admin API (POST /api/inferllama/orgs: {status} "
                          f"{answer[:100]!r})")
        self.assertEqual(status, 201, answer)
        status, answer = admin(self.node, "PUT", "orgs/labs/members/bob", {"role": "read"})
        self.assertEqual(status, 200, answer)
        carol = add_user(self.node, "carol")  # no member
        repo = "labs/internal"
        status, answer = admin(self.node, "PUT", "orgs/labs/members/alice", {"role": "admin"})
        self.assertEqual(status, 200, answer)
        create_repo(self.node, self.keys["alice"], repo, private=True)
        sha = commit(self.node, self.keys["alice"], repo, "w", lfs={"w.bin": b"\x00labs" * 1000})
        status, _, body = resolve(self.node, repo, "w.bin", self.keys["bob"])
        self.assertEqual((status, body), (200, b"\x00labs" * 1000))
        for kind in ("torrent", "magnet"):
            with self.subTest(kind=kind, who="member"):
                status, headers, answer = call(self.node, "GET", f"/api/models/{repo}/{kind}/main", self.keys["bob"])
                self.assertEqual(status, 403, answer[:300])
                self.assertIn("public repositories only", error_message(headers, answer))
            with self.subTest(kind=kind, who="non-member"):
                status, headers, answer = call(self.node, "GET", f"/api/models/{repo}/{kind}/main", carol)
                self.assertEqual(status, 404, answer[:300])
                self.assertEqual(headers.get("x-error-code"), "RepoNotFound")
        # The web seed: a non-member's passkey is refused, a member's served.
        webseed = f"/api/models/{repo}/webseed/{sha}/internal/w.bin"
        status, headers, body = call(self.node, "GET", f"/p/{passkey_of(self.node, 'carol')}{webseed}")
        self.assertEqual((status, headers.get("x-error-code")), (404, "RepoNotFound"), body[:300])
        status, _, body = call(self.node, "GET", f"/p/{passkey_of(self.node, 'bob')}{webseed}")
        self.assertEqual((status, body), (200, b"\x00labs" * 1000))

    def test_a_node_users_namespace_is_never_asked_upstream(self):
        """Creating, filling, reading and deleting alice's repos (and asking for alice/nothing) sends nothing to
        the upstream; a repo of a namespace the node does not own (ghost-org) goes upstream without alice's key;
        acme/ (no node user) resolves through the upstream as before."""
        owner = self.keys["alice"]
        before = len(self.hub.stats()["hub_requests"])
        results = self.hf({"call": "create_repo", "repo_id": "alice/never-upstream"},
                          {"call": "upload_file", "repo_id": "alice/never-upstream", "path_in_repo": "w.safetensors",
                           "b64": base64.b64encode(os.urandom(50_000)).decode()},
                          {"call": "upload_file", "repo_id": "alice/never-upstream", "path_in_repo": "a.txt",
                           "text": "a\n"},
                          {"call": "model_info", "repo_id": "alice/never-upstream"},
                          {"call": "list_repo_files", "repo_id": "alice/never-upstream"},
                          {"call": "snapshot_download", "repo_id": "alice/never-upstream"},
                          {"call": "model_info", "repo_id": "alice/nothing", "may_fail": True},
                          {"call": "hf_hub_download", "repo_id": "alice/nothing", "filename": "x", "may_fail": True},
                          {"call": "delete_repo", "repo_id": "alice/never-upstream"},
                          {"call": "model_info", "repo_id": "alice/never-upstream", "may_fail": True},
                          {"call": "create_repo", "repo_id": "alice/private-one", "private": True},
                          {"call": "delete_repo", "repo_id": "alice/private-one"})
        for i in (0, 1, 2, 3, 4, 5, 8, 10, 11):
            self.assertNotIn("error", results[i], results[i])
        for i in (6, 9):
            self.assertEqual(results[i]["status"], 404, results[i])
            self.assertEqual(results[i]["error_code"], "RepoNotFound", results[i])
        self.assertEqual(results[7]["status"], 404, results[7])
        # The raw routes too, anonymous and as alice.
        for key in (None, owner):
            for method, path in (("GET", "/api/models/alice/nothing"), ("GET", "/alice/nothing/resolve/main/x"),
                                 ("GET", "/api/models/alice/nothing/tree/main"),
                                 ("GET", "/api/models/alice/nothing/revision/main"),
                                 ("GET", "/api/models/alice/nothing/refs"),
                                 ("GET", "/api/models/alice/nothing/torrent/main"),
                                 ("GET", "/api/models/alice/nothing/commits/main")):
                status, _, body = call(self.node, method, path, key)
                self.assertIn(status, (200, 401, 403, 404), f"{method} {path}: {status} {body[:200]}")
        for key in (None, self.keys["bob"]):
            status, _, _ = call(self.node, "DELETE", "/api/repos/delete", key,
                                {"name": "nothing", "organization": "alice"})
            self.assertIn(status, (401, 403, 404))
        after = self.hub.stats()["hub_requests"]
        self.assertEqual(after[before:], [], "the upstream was asked about a node user's namespace")

        # A namespace that is neither a user's nor an organisation's of this node goes upstream, and carries
        # nothing of alice's (her key never leaves the node).
        before = len(self.hub.stats()["hub_requests"])
        self.hf({"call": "create_repo", "repo_id": "ghost-org/thing", "may_fail": True})
        upstream = self.hub.stats()
        sent = upstream["hub_requests"][before:]
        self.assertIn("POST /api/repos/create", sent, "a repo of a namespace the node does not own stayed on the node")
        self.assertFalse([r for r in sent if "alice" in r], sent)
        created = [r for r in upstream["other_requests"] if r["path"] == "/api/repos/create"]
        self.assertEqual([(r["auth"], json.loads(r["body"]).get("organization") or json.loads(r["body"])["name"])
                          for r in created], [("anonymous", "ghost-org")], created)
        for request in upstream["other_requests"]:
            self.assertNotIn("alice", json.dumps(request), request)
            self.assertNotIn(owner, json.dumps(request), request)
        self.assertNotIn(owner, json.dumps(upstream))

        # acme/ is not a node user: its repos resolve through the upstream as before.
        expected = self.hub.files("acme/tiny-model")
        before = self.hub.stats()["requests"]
        status, headers, body = resolve(self.node, "acme/tiny-model", "config.json")
        self.assertEqual((status, sha256(body)), (200, expected["config.json"]["sha256"]))
        status, _, body = call(self.node, "GET", "/api/models/acme/tiny-model")
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(json.loads(body)["id"], "acme/tiny-model")
        after = self.hub.stats()["requests"]
        self.assertGreater(after["resolve_head"] + after["resolve_get"] + after["api_info"],
                           before["resolve_head"] + before["resolve_get"] + before["api_info"])
        self.assertFalse([r for r in self.hub.stats()["hub_requests"] if "alice" in r])

    def test_deleting_a_repo_releases_its_chunks(self):
        """The chunks of a deleted repo's LFS file leave the store; the blob is gone (uploaded again, or no
        commit can name it)."""
        key, repo = self.keys["alice"], "alice/to-delete"
        before = chunk_files(self.node)
        weights = os.urandom(9 * MIB + 5)  # three chunks of 4 MiB
        create_repo(self.node, key, repo)
        commit(self.node, key, repo, "weights", inline={"a.txt": b"a\n"}, lfs={"weights.bin": weights})
        with_repo = chunk_files(self.node)
        self.assertGreaterEqual(len(with_repo - before), 3, "the upload stored fewer chunks than it has")
        status, _, body = resolve(self.node, repo, "weights.bin", key)
        self.assertEqual((status, sha256(body)), (200, sha256(weights)))

        delete_repo(self.node, key, repo)
        # Only the repo's own chunks are watched: hourly garbage collection may remove an unrelated orphan
        # from `before` meanwhile.
        added = with_repo - before
        wait_until(lambda: not (chunk_files(self.node) & added), timeout=30,
                   what="the deleted repo's chunks to leave the store")
        status, headers, _ = resolve(self.node, repo, "weights.bin", key)
        self.assertEqual((status, headers.get("x-error-code")), (404, "RepoNotFound"))
        # The blob is gone: a repo of the same name must upload it again, and cannot commit it without.
        create_repo(self.node, key, repo)
        answer, = lfs_batch(self.node, key, repo, [(sha256(weights), len(weights))])
        self.assertIn("upload", answer.get("actions", {}), answer)
        status, _, body = call(self.node, "POST", f"/api/models/{repo}/commit/main", key,
                               commit_payload("again", lfs={"weights.bin": weights}), {"Content-Type": NDJSON})
        self.assertGreaterEqual(status, 400, body[:300])
        self.assertEqual(listed_files(self.node, key, repo), [".gitattributes"])
        delete_repo(self.node, key, repo)

    def test_multipart_upload_by_the_client_and_a_bad_part(self):
        """A file above the multipart threshold goes up in parts through huggingface_hub and comes back whole;
        parts of which one has wrong bytes make the completion a 400 that stores nothing."""
        key, repo = self.keys["alice"], "alice/multipart"
        big = bytearray(os.urandom(MULTIPART_THRESHOLD + 4 * MIB + 12345))
        path = self.file("big.bin", big)
        logged = len(access_lines(self.node.stdout_text()))
        _, committed, downloaded = self.hf_ok(
            {"call": "create_repo", "repo_id": repo},
            {"call": "upload_file", "repo_id": repo, "path_in_repo": "big.bin", "path": path},
            {"call": "hf_hub_download", "repo_id": repo, "filename": "big.bin"}, timeout=600)
        self.assertEqual(downloaded, sha256(big))
        self.assertEqual(head(self.node, key, repo), committed["oid"])
        # It went up in parts: a PUT per part, then the completion call (each logged once answered).
        wait_until(lambda: any(e["method"] == "POST" and e["target"].endswith("/complete") for e in
                               access_lines(self.node.stdout_text())[logged:]), what="the completion call logged")
        requests = [e for e in access_lines(self.node.stdout_text())[logged:]
                    if e["target"].startswith("/api/inferllama/lfs/")]
        part_puts = [e for e in requests if e["method"] == "PUT" and e["target"].rsplit("/", 1)[1].isdigit()]
        self.assertEqual(len(part_puts), 5, requests)
        self.assertEqual({e["status"] for e in requests}, {200}, requests)
        # An upload URL is its own credential: the log keeps its shape, never its ticket.
        self.assertTrue(all(e["target"].startswith("/api/inferllama/lfs/<ticket>") for e in requests), requests)

        # Raw: the batch answer's parts, one of them with wrong bytes of the right size.
        other = bytes(os.urandom(MULTIPART_THRESHOLD))
        oid = sha256(other)
        chunks_before = chunk_files(self.node)
        answer, = lfs_batch(self.node, key, repo, [(oid, len(other))], multipart=True)
        upload = answer["actions"]["upload"]
        part_size = int(upload["header"]["chunk_size"])
        parts = sorted((k, v) for k, v in upload["header"].items() if k.isdigit())
        self.assertEqual(len(parts), -(-len(other) // part_size))
        self.assertGreater(len(parts), 1)
        for number, (_, url) in enumerate(parts, 1):
            data = other[(number - 1) * part_size:number * part_size]
            if number == 2:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            status, _, body = put(self.node, url, data)
            self.assertEqual(status, 200, body[:300])
        status, headers, body = self.node.request("POST", path_of(upload["href"]),
                                                  {"Content-Type": "application/json"},
                                                  json.dumps({"oid": oid, "parts": [
                                                      {"partNumber": n, "etag": "x"} for n in range(1, len(parts) + 1)
                                                  ]}).encode())
        self.assertEqual(status, 400, body[:300])
        self.assertEqual(chunk_files(self.node), chunks_before, "a failed completion left chunks in the store")
        status, _, body = self.node.request("POST", path_of(answer["actions"]["verify"]["href"]),
                                            {"Content-Type": "application/json"},
                                            json.dumps({"oid": oid, "size": len(other)}).encode())
        self.assertEqual(status, 404, body[:300])
        again, = lfs_batch(self.node, key, repo, [(oid, len(other))], multipart=True)
        self.assertIn("upload", again.get("actions", {}), "the batch says an object of wrong parts is stored")
        status, _, body = call(self.node, "POST", f"/api/models/{repo}/commit/main", key,
                               commit_payload("bad", lfs={"other.bin": other}), {"Content-Type": NDJSON})
        self.assertGreaterEqual(status, 400, body[:300])
        self.assertEqual(listed_files(self.node, key, repo), [".gitattributes", "big.bin"])
        # Its part, completion and verify requests were logged: none of them with the ticket.
        ticket = path_of(upload["href"]).split("/")[4]
        wait_until(lambda: any(e["target"].endswith("/verify") for e in access_lines(self.node.stdout_text())),
                   what="the verify call logged")
        self.assertNotIn(ticket, self.node.stdout_text())

    def test_upload_urls_are_signed_and_bound_to_their_object(self):
        """The upload URL is the credential: one hex digit changed is a 403; bytes that are not the oid's are a
        400 and stored under no name; the URL names its repo."""
        key, repo = self.keys["alice"], "alice/tickets"
        create_repo(self.node, key, repo)
        data = os.urandom(300_000)
        oid = sha256(data)
        answer, = lfs_batch(self.node, key, repo, [(oid, len(data))])
        href = answer["actions"]["upload"]["href"]
        token = href.rsplit("/", 1)[1]
        fields, mac = token.split(".")
        self.assertTrue(all(c in "0123456789abcdef" for c in fields + mac), token)

        def flipped(text: str, at: int) -> str:
            return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]

        # One hex digit changed, in the signed fields or in the signature: not a URL this node signed.
        for what, tampered in (("fields", flipped(fields, len(fields) // 2) + "." + mac),
                               ("signature", fields + "." + flipped(mac, 7))):
            with self.subTest(tampered=what):
                status, _, body = put(self.node, href[:-len(token)] + tampered, data)
                self.assertEqual(status, 403, body[:300])
        # Bytes that are not the oid's: 400, nothing stored; the batch still asks for the object.
        wrong = os.urandom(len(data))
        status, headers, body = put(self.node, href, wrong)
        self.assertEqual(status, 400, body[:300])
        again, = lfs_batch(self.node, key, repo, [(oid, len(data))])
        self.assertIn("upload", again.get("actions", {}), again)
        status, _, body = self.node.request("POST", path_of(answer["actions"]["verify"]["href"]),
                                            {"Content-Type": "application/json"},
                                            json.dumps({"oid": oid, "size": len(data)}).encode())
        self.assertEqual(status, 404, body[:300])
        # Nothing stored under the wrong bytes' own hash either.
        wrong_answer, = lfs_batch(self.node, key, repo, [(sha256(wrong), len(wrong))])
        self.assertIn("upload", wrong_answer.get("actions", {}), wrong_answer)
        # The right bytes, through the same URL, are stored.
        status, _, body = put(self.node, href, data)
        self.assertEqual(status, 200, body[:300])
        stored, = lfs_batch(self.node, key, repo, [(oid, len(data))])
        self.assertNotIn("actions", stored)
        # A URL for one repo's object is no URL for another's: the signed fields name the repo.
        create_repo(self.node, key, "alice/tickets-2")
        other, = lfs_batch(self.node, key, "alice/tickets-2", [(oid, len(data))])
        self.assertIn("upload", other.get("actions", {}), "bytes stored for one repo count for another")


# -- kill -9 -----------------------------------------------------------------------------------------

class KillDuringUploadTest(HostedNodeCase):
    """A node of its own, killed and started again on the same data directory (its port changes)."""

    def restart(self) -> None:
        self.node.stop(signal.SIGKILL)
        self.node.start()

    def assert_unchanged(self, repo: str, commit_id: str, files: list[str], gone: list[str]) -> None:
        key = self.keys["alice"]
        self.assertEqual(head(self.node, key, repo), commit_id)
        self.assertEqual(listed_files(self.node, key, repo), files)
        status, _, body = call(self.node, "GET", f"/api/models/{repo}/refs", key)
        self.assertEqual(status, 200, body)
        self.assertEqual({b["name"]: b["targetCommit"] for b in json.loads(body)["branches"]}, {"main": commit_id})
        for path in gone:
            status, headers, _ = resolve(self.node, repo, path, key)
            self.assertEqual((status, headers.get("x-error-code")), (404, "EntryNotFound"), path)

    def test_kill_during_an_upload_put(self):
        """kill -9 with 10 of a 24 MiB object's bytes sent: after the restart main, its files and its refs are as
        before, the object is not stored (the batch asks for it again), and huggingface_hub's retry uploads and
        commits it; it downloads byte for byte."""
        key, repo = self.keys["alice"], "alice/crash-put"
        create_repo(self.node, key, repo)
        before = commit(self.node, key, repo, "first", inline={"keep.txt": b"kept\n"})
        big = os.urandom(24 * MIB + 3)
        answer, = lfs_batch(self.node, key, repo, [(sha256(big), len(big))])
        href = path_of(answer["actions"]["upload"]["href"])
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.putrequest("PUT", href)
        conn.putheader("Content-Length", str(len(big)))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        sent = 0
        for _ in range(10):  # 10 MiB of 24, a MiB at a time
            conn.send(big[sent:sent + MIB])
            sent += MIB
        wait_until(lambda: staged_bytes(self.node, "upload-") >= 4 * MIB, timeout=30,
                   what="the node to stage the upload's first bytes")
        self.restart()
        conn.close()
        self.assert_unchanged(repo, before, [".gitattributes", "keep.txt"], ["big.bin"])
        again, = lfs_batch(self.node, key, repo, [(sha256(big), len(big))])
        self.assertIn("upload", again.get("actions", {}), "half an upload counts as stored after the restart")

        # The client's retry: the whole upload again, then the commit.
        path = self.file("big.bin", big)
        committed, downloaded, files = self.hf_ok(
            {"call": "upload_file", "repo_id": repo, "path_in_repo": "big.bin", "path": path},
            {"call": "hf_hub_download", "repo_id": repo, "filename": "big.bin"},
            {"call": "list_repo_files", "repo_id": repo})
        self.assertEqual(downloaded, sha256(big))
        self.assertEqual(sorted(files), [".gitattributes", "big.bin", "keep.txt"])
        self.assertEqual(head(self.node, key, repo), committed["oid"])

    def test_kill_during_a_commit(self):
        """kill -9 while the commit's body arrives, then while the node stores its inline files: main does not
        move (nor any file of the commit show); the client's retry then commits the LFS file it uploaded before."""
        key, repo = self.keys["alice"], "alice/crash-commit"
        create_repo(self.node, key, repo)
        before = commit(self.node, key, repo, "first", inline={"keep.txt": b"kept\n"})
        weights = os.urandom(5 * MIB + 1)
        upload_object(self.node, key, repo, weights)  # stored, committed by nothing yet
        files = [".gitattributes", "keep.txt"]

        # 1. Killed while the commit's body arrives: half of an NDJSON payload.
        inline = {f"inline/{i:03d}.txt": os.urandom(100_000).hex().encode() for i in range(60)}
        payload = commit_payload("interrupted", inline=inline, lfs={"weights.bin": weights})
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.putrequest("POST", f"/api/models/{repo}/commit/main")
        conn.putheader("Authorization", f"Bearer {key}")
        conn.putheader("Content-Type", NDJSON)
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders()
        conn.send(payload[:len(payload) // 2])
        # The node holds what it received (buffered in memory): only the connection tells it is there.
        self.restart()
        conn.close()
        self.assert_unchanged(repo, before, files, ["weights.bin", "inline/000.txt"])

        # 2. Killed while the node stores the commit's inline files (a staging folder of theirs is there): the
        # branch has not moved, or moved whole.
        conn = http.client.HTTPConnection(self.node.host, self.node.port, timeout=60)
        conn.request("POST", f"/api/models/{repo}/commit/main", body=payload,
                     headers={"Authorization": f"Bearer {key}", "Content-Type": NDJSON})
        wait_until(lambda: os.path.isdir(os.path.join(self.node.data_dir, "staging")) and any(
            name.startswith("inline-") for name in os.listdir(os.path.join(self.node.data_dir, "staging"))),
            timeout=60, what="the node to stage the commit's inline files")
        self.restart()
        conn.close()
        now = head(self.node, key, repo)
        if now == before:
            self.assert_unchanged(repo, before, files, ["weights.bin", "inline/000.txt", "inline/059.txt"])
        else:
            # The commit was written before the kill: then all of it.
            self.assertEqual(listed_files(self.node, key, repo), sorted([*files, "weights.bin", *inline]))
            for path in ("weights.bin", "inline/000.txt", "inline/059.txt"):
                status, _, body = resolve(self.node, repo, path, key)
                self.assertEqual(status, 200, path)
            self.skipTest("the kill came after the commit was written: only all-or-nothing was checked")

        # The client's retry succeeds: the LFS object is still held for the repo, so nothing is sent again.
        path = self.file("weights.bin", weights)
        committed, downloaded = self.hf_ok(
            {"call": "upload_file", "repo_id": repo, "path_in_repo": "weights.bin", "path": path},
            {"call": "hf_hub_download", "repo_id": repo, "filename": "weights.bin"})
        self.assertEqual(downloaded, sha256(weights))
        self.assertEqual(head(self.node, key, repo), committed["oid"])
        self.assertEqual(listed_files(self.node, key, repo), sorted([*files, "weights.bin"]))


# -- the quota ---------------------------------------------------------------------------------------

class HostedQuotaTest(HostedNodeCase):
    node_args = ("--hosted-quota", "20MB")

    def test_quota_refuses_what_does_not_fit_and_deletion_frees_it(self):
        repo = "alice/quota"
        too_big = self.file("too-big.bin", os.urandom(30_000_000))
        fits = self.file("fits.bin", os.urandom(8_000_000))
        fits_too = self.file("fits-too.bin", os.urandom(8_000_000))
        results = self.hf({"call": "create_repo", "repo_id": repo},
                          {"call": "upload_file", "repo_id": repo, "path_in_repo": "too-big.bin", "path": too_big,
                           "may_fail": True},
                          {"call": "upload_file", "repo_id": repo, "path_in_repo": "fits.bin", "path": fits},
                          {"call": "upload_file", "repo_id": repo, "path_in_repo": "fits-too.bin", "path": fits_too},
                          {"call": "upload_file", "repo_id": repo, "path_in_repo": "one-more.bin", "path": fits_too,
                           "may_fail": True},
                          {"call": "list_repo_files", "repo_id": repo})
        self.assertEqual(len(results), 6, results)
        refused = results[1]
        self.assertIn("error", refused, "a 30 MB file went into a 20 MB quota")
        self.assertEqual(refused["status"], 413, refused)
        self.assertIn("hosted_quota", refused["message"], refused)
        for i in (2, 3):
            self.assertNotIn("error", results[i], results[i])
        # The same bytes again under another path take no more room: they fit.
        self.assertNotIn("error", results[4], results[4])
        self.assertEqual(sorted(results[5]["value"]), [".gitattributes", "fits-too.bin", "fits.bin", "one-more.bin"])
        # A third 8 MB file would make 24 MB: refused.
        third = self.file("third.bin", os.urandom(8_000_000))
        refused, = self.hf({"call": "upload_file", "repo_id": repo, "path_in_repo": "third.bin", "path": third,
                            "may_fail": True})
        self.assertEqual(refused.get("status"), 413, refused)
        self.assertIn("hosted_quota", refused["message"], refused)
        # Another repo of the same namespace shares the quota.
        create_repo(self.node, self.keys["alice"], "alice/quota-2")
        with self.assertRaises(BatchRefused) as caught:
            upload_object(self.node, self.keys["alice"], "alice/quota-2", os.urandom(5_000_000))
        self.assertEqual(caught.exception.status, 413)
        # Bob's namespace has its own.
        create_repo(self.node, self.keys["bob"], "bob/quota")
        commit(self.node, self.keys["bob"], "bob/quota", "bob's", lfs={"b.bin": os.urandom(15_000_000)})

        # Deleting the repo frees what it held: a 15 MB file then fits.
        ok = self.file("after.bin", os.urandom(15_000_000))
        _, _, downloaded = self.hf_ok({"call": "delete_repo", "repo_id": repo},
                                      {"call": "upload_file", "repo_id": "alice/quota-2", "path_in_repo": "after.bin",
                                       "path": ok},
                                      {"call": "hf_hub_download", "repo_id": "alice/quota-2", "filename": "after.bin"})
        with open(ok, "rb") as f:
            self.assertEqual(downloaded, sha256(f.read()))


# -- max_disk ----------------------------------------------------------------------------------------

class HostedFilesAreNeverEvictedTest(HostedNodeCase):
    hub_args = ("--sized-models", "3", "--sized-model-size", str(3 * MIB))
    node_args = ("--max-disk", "8MiB")

    def test_max_disk_never_evicts_hosted_files(self):
        key, repo = self.keys["alice"], "alice/kept"
        hosted = os.urandom(12_000_000)
        create_repo(self.node, key, repo)
        commit(self.node, key, repo, "hosted", lfs={"weights.bin": hosted})
        evicted_before = self.node.metric("inferllama_evictions_total")
        # 9 MiB of cached upstream files: over the 8 MiB budget.
        for i in range(3):
            expected = self.hub.files(f"acme/sized-{i}")["model.safetensors"]
            status, _, body = resolve(self.node, f"acme/sized-{i}", "model.safetensors")
            self.assertEqual((status, sha256(body)), (200, expected["sha256"]))
        wait_until(lambda: self.node.metric("inferllama_evictions_total") > evicted_before, timeout=30,
                   what="the budget to evict a cached file")
        status, _, body = resolve(self.node, repo, "weights.bin", key)
        self.assertEqual((status, sha256(body)), (200, sha256(hosted)))
        status, _, body = resolve(self.node, repo, "weights.bin")  # public: anyone
        self.assertEqual((status, sha256(body)), (200, sha256(hosted)))


if __name__ == "__main__":
    unittest.main()
