"""Mirrors: a node fills its cache from another node's swarm (peers from its tracker, its web seed),
verifies every file against the Hub's etags from the source's tree, serves it over HTTP and seeds it.

Two real nodes on loopback and the fake Hub; the `inferllama mirror` CLI drives the admin route through
the node's admin socket. No
sleeps as synchronisation: the CLI blocks until the mirror is done, and the `mirrors` config is
observed by polling the node with a deadline.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

from harness import BINARY, FakeHub, Node, clean_env, free_port, sha256

MIRROR_TIMEOUT = 180


def run_mirror(node: Node, spec: str, source: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([BINARY, "mirror", spec, "--from", source, "--data-dir", node.data_dir, *extra],
                          capture_output=True, text=True, timeout=MIRROR_TIMEOUT, env=clean_env())


def list_cache(data_dir: str) -> str:
    done = subprocess.run([BINARY, "ls", "--data-dir", data_dir], capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def bencode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"


def torrent_path(repo_type: str, repo: str, rev: str = "main") -> str:
    return f"/api/{repo_type}s/{repo}/torrent/{urllib.parse.quote(rev, safe='')}"


def fetch_torrent(node: Node, repo_type: str, repo: str) -> tuple[str, str]:
    """(info-hash, commit) of the node's torrent of `repo` at main."""
    status, headers, body = node.request("GET", torrent_path(repo_type, repo))
    assert status == 200, (status, body[:300])
    return headers["x-inferllama-info-hash"], headers["x-repo-commit"]


class MirrorTestCase(unittest.TestCase):
    def assert_serves(self, node: Node, repo: str, files: dict, prefix: str = "", rev: str = "main",
                      commit: str | None = None):
        for path, f in files.items():
            status, headers, body = node.request("GET", node.resolve_path(repo, rev, path, prefix))
            self.assertEqual(status, 200, f"{repo}/{path}: {body[:200]!r}")
            self.assertEqual((len(body), sha256(body)), (f["size"], f["sha256"]), path)
            if commit:
                self.assertEqual(headers.get("x-repo-commit"), commit, path)

    def mirrored(self, done: subprocess.CompletedProcess) -> dict:
        """The CLI's summary line as numbers: files, fetched files and bytes, info-hash, same swarm."""
        self.assertEqual(done.returncode, 0, done.stderr)
        m = re.search(r"mirrored (\S+)@([0-9a-f]{40}): (\d+) files, (\d+) fetched over BitTorrent \((\d+) bytes\); "
                      r"seeding ([0-9a-f]{40})( \(the same swarm as the source\))?", done.stdout)
        self.assertIsNotNone(m, done.stdout)
        return {"repo": m[1], "commit": m[2], "files": int(m[3]), "fetched_files": int(m[4]),
                "fetched_bytes": int(m[5]), "info_hash": m[6], "same_swarm": bool(m[7])}


class MirrorWithTheHubStoppedTest(MirrorTestCase):
    """Node A caches and seeds snapshots; the Hub stops; node B mirrors them from A and serves them."""

    @staticmethod
    def shared_bytes(node: Node) -> float:
        """Bytes the node read for BitTorrent peers plus bytes it served from its store over HTTP (web seed)."""
        return node.metric("inferllama_bt_chunk_read_bytes_total") + \
            node.metric('inferllama_served_bytes_total{source="cache"}')

    def test_mirror_from_another_node_with_the_hub_stopped(self):
        hub = FakeHub().start()
        a = b = None
        try:
            a = Node(hub.url).start()
            model_files = hub.files("acme/tiny-model")
            dataset_files = hub.files("acme/tiny-dataset")
            model_commit = hub.commit("acme/tiny-model")
            # Asking for A's torrents completes both snapshots in A's cache; A seeds them.
            model_hash, commit = fetch_torrent(a, "model", "acme/tiny-model")
            self.assertEqual(commit, model_commit)
            dataset_hash, _ = fetch_torrent(a, "dataset", "acme/tiny-dataset")
            hub_requests = hub.stats()["total_requests"]
            hub.stop()
            a_upstream_bytes = a.metric("inferllama_upstream_bytes_total")
            self.assertGreater(a_upstream_bytes, 0)
            a_shared_bytes = self.shared_bytes(a)

            b = Node(hub.url).start()
            started = time.monotonic()
            model = self.mirrored(run_mirror(b, "acme/tiny-model", a.url))
            model_seconds = time.monotonic() - started
            self.assertEqual((model["repo"], model["commit"]), ("model/acme/tiny-model", model_commit))
            self.assertEqual(model["files"], len(model_files))
            # Every non-empty file came over BitTorrent, and B joined A's swarm.
            self.assertEqual(model["fetched_bytes"], sum(f["size"] for f in model_files.values()))
            self.assertTrue(model["same_swarm"])
            self.assertEqual(model["info_hash"], model_hash)

            started = time.monotonic()
            dataset = self.mirrored(run_mirror(b, "acme/tiny-dataset", a.url, "--repo-type", "dataset"))
            dataset_seconds = time.monotonic() - started
            self.assertEqual(dataset["fetched_bytes"], sum(f["size"] for f in dataset_files.values()))
            self.assertTrue(dataset["same_swarm"])
            self.assertEqual(dataset["info_hash"], dataset_hash)

            self.assert_serves(b, "acme/tiny-model", model_files, commit=model_commit)
            self.assert_serves(b, "acme/tiny-dataset", dataset_files, prefix="datasets/")
            self.assertEqual(fetch_torrent(b, "model", "acme/tiny-model")[0], model_hash)
            self.assertEqual(fetch_torrent(b, "dataset", "acme/tiny-dataset")[0], dataset_hash)
            self.assertEqual(b.metric("inferllama_bt_torrents"), 2)
            # Nothing came from an upstream: B's own upstream is the stopped Hub, and A served from its store.
            self.assertEqual(b.metric("inferllama_upstream_bytes_total"), 0)
            self.assertEqual(b.metric('inferllama_downloads_total{result="started"}'), 0)
            # Every file went through the verified ingest.
            self.assertEqual(b.metric('inferllama_ingests_total{result="completed"}'),
                             model["fetched_files"] + dataset["fetched_files"])
            self.assertEqual(a.metric("inferllama_upstream_bytes_total"), a_upstream_bytes)
            # A's seed and web seed gave B the bytes (a piece may come from both).
            self.assertGreaterEqual(self.shared_bytes(a) - a_shared_bytes,
                                    model["fetched_bytes"] + dataset["fetched_bytes"])

            # Mirroring again fetches nothing: every file is stored and verified already.
            again = self.mirrored(run_mirror(b, "acme/tiny-model", a.url))
            self.assertEqual((again["fetched_files"], again["fetched_bytes"]), (0, 0))
            self.assertEqual(os.listdir(os.path.join(b.data_dir, "mirror")), [])
            with open(b.log_path, errors="replace") as log:
                self.assertRegex(log.read(), r"mirrored model/acme/tiny-model@[0-9a-f]{40} from .*: \d+ files, "
                                             r"\d+ fetched \([1-9]\d* bytes\)")
            print(f"\n  mirror of acme/tiny-model: {model_seconds:.2f}s, acme/tiny-dataset: {dataset_seconds:.2f}s "
                  f"(fake Hub had {hub_requests} requests before it stopped)")
        finally:
            for node in (b, a):
                if node:
                    node.stop()
                    node.cleanup()
            hub.stop()


class TamperedSource:
    """A node that offers a torrent of acme/tiny-model whose bytes are not the Hub's: the tree and
    everything else come from a real node, the torrent and its web seed carry one flipped byte."""

    PIECE = 256 * 1024

    def __init__(self, real: Node, files: dict[str, bytes], commit: str, tampered: str, stall: bool = False):
        self.real, self.commit = real, commit
        self.contents = dict(files)
        data = bytearray(self.contents[tampered])
        data[len(data) // 2] ^= 0xFF
        self.contents[tampered] = bytes(data)
        # With `stall`, the web seed takes requests and never answers them: a swarm download in progress.
        self.web_seed_asked = threading.Event()
        self.release = threading.Event()
        if not stall:
            self.release.set()
        source = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.unquote(self.path.partition("?")[0])
                if path == torrent_path("model", "acme/tiny-model"):
                    return self.answer(200, source.torrent(), [("X-Repo-Commit", source.commit)])
                if path.startswith("/webseed/tiny-model/"):
                    return self.web_seed(path[len("/webseed/tiny-model/"):])
                status, headers, body = source.real.request("GET", self.path)
                self.answer(status, body, [(k, v) for k, v in headers.items()
                                           if k in ("link", "x-repo-commit", "x-error-code", "x-error-message",
                                                    "x-inferllama-node")])

            def web_seed(self, name: str):
                source.web_seed_asked.set()
                source.release.wait()
                data = source.contents.get(name)
                if data is None:
                    return self.answer(404, b"")
                first, last = 0, len(data) - 1
                if m := re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", "")):
                    first, last = int(m[1]), min(int(m[2]), len(data) - 1)
                self.answer(206, data[first:last + 1], [("Content-Range", f"bytes {first}-{last}/{len(data)}")])

            def answer(self, status: int, body: bytes, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the node gave up on this request (shutdown, or another source was faster)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def torrent(self) -> bytes:
        paths = sorted(self.contents)
        stream = b"".join(self.contents[p] for p in paths)
        pieces = b"".join(hashlib.sha1(stream[i:i + self.PIECE]).digest() for i in range(0, len(stream), self.PIECE))
        info = {"name": "tiny-model", "piece length": self.PIECE, "pieces": pieces,
                "files": [{"length": len(self.contents[p]), "path": p.split("/")} for p in paths]}
        return bencode({"info": info, "url-list": [self.url + "/webseed/"]})

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class MirrorRefusalsTest(MirrorTestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.a = Node(cls.hub.url).start()

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.a.cleanup()
        cls.hub.stop()

    def setUp(self):
        # B's upstream is a port nothing listens on: anything B serves came through the mirror.
        self.b = Node(f"http://127.0.0.1:{free_port()}").start()

    def tearDown(self):
        self.b.stop()
        self.b.cleanup()

    def assert_nothing_cached(self):
        self.assertEqual(self.b.metric("inferllama_bt_torrents"), 0)
        self.assertEqual(os.listdir(os.path.join(self.b.data_dir, "mirror")), [])
        self.b.stop()
        self.assertIn("the cache is empty", list_cache(self.b.data_dir))

    def test_the_hubs_word_on_a_gated_repo_outranks_a_source(self):
        """A source, confused or hostile, offers a torrent of a gated repo: the Hub says gated, so it is refused."""
        status, _, torrent = self.a.request("GET", torrent_path("model", "acme/tiny-model"))
        self.assertEqual(status, 200)
        commit = self.hub.commit("acme/gated-model")

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", str(len(torrent)))
                self.end_headers()
                self.wfile.write(torrent)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        b = Node(self.hub.url).start()  # this node can ask the Hub
        try:
            done = run_mirror(b, "acme/gated-model", f"http://127.0.0.1:{server.server_address[1]}")
            self.assertNotEqual(done.returncode, 0, done.stdout)
            self.assertIn("gated or private on the Hub", done.stderr)
            self.assertEqual(b.metric("inferllama_bt_torrents"), 0)
            self.assertEqual(b.metric('inferllama_ingests_total{result="started"}'), 0)
        finally:
            b.stop()
            b.cleanup()
            server.shutdown()
            server.server_close()

    def test_a_source_where_nothing_listens(self):
        done = run_mirror(self.b, "acme/tiny-model", f"http://127.0.0.1:{free_port()}")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("cannot be reached", done.stderr)
        self.assertEqual(self.b.metric("inferllama_disk_used_bytes"), 0)
        self.assert_nothing_cached()

    def tampered_source(self, stall: bool = False) -> TamperedSource:
        contents = {}
        for path in self.hub.files("acme/tiny-model"):
            status, _, body = self.a.request("GET", self.a.resolve_path("acme/tiny-model", "main", path))
            self.assertEqual(status, 200, path)
            contents[path] = body
        return TamperedSource(self.a, contents, self.hub.commit("acme/tiny-model"), "model.safetensors", stall)

    def test_a_source_whose_bytes_do_not_hash_to_the_etags(self):
        source = self.tampered_source()
        try:
            done = run_mirror(self.b, "acme/tiny-model", source.url)
        finally:
            source.close()
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertIn("failed verification", done.stderr)
        self.assertIn("model.safetensors", done.stderr)
        status, _, _ = self.b.request("GET", self.b.resolve_path("acme/tiny-model", "main", "model.safetensors"))
        self.assertNotEqual(status, 200)
        self.assert_nothing_cached()

    def test_shutdown_during_a_mirror(self):
        source = self.tampered_source(stall=True)
        try:
            b = Node(f"http://127.0.0.1:{free_port()}", None, "--mirrors", "acme/tiny-model", "--mirror-from",
                     source.url).start()
            try:
                self.assertTrue(source.web_seed_asked.wait(60), "the mirror never asked the web seed")
                started = time.monotonic()
                self.assertEqual(b.stop(), 0)
                self.assertLess(time.monotonic() - started, 10)
                self.assertIn("the cache is empty", list_cache(b.data_dir))
            finally:
                b.stop()
                b.cleanup()
        finally:
            source.close()

    def test_shutdown_during_a_mirror_asked_for_by_the_cli(self):
        source = self.tampered_source(stall=True)
        try:
            cli = subprocess.Popen([BINARY, "mirror", "acme/tiny-model", "--from", source.url, "--data-dir",
                                    self.b.data_dir],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
            try:
                self.assertTrue(source.web_seed_asked.wait(60), "the mirror never asked the web seed")
                started = time.monotonic()
                # The mirror in flight answers at once instead of holding the drain for its 30 s.
                self.assertEqual(self.b.stop(), 0)
                self.assertLess(time.monotonic() - started, 10)
                _, stderr = cli.communicate(timeout=30)
                self.assertNotEqual(cli.returncode, 0)
                self.assertIn("cancelled", stderr)
            finally:
                if cli.poll() is None:
                    cli.kill()
                    cli.communicate()
            self.assertIn("the cache is empty", list_cache(self.b.data_dir))
        finally:
            source.close()

    def test_gated_and_private_repos_are_refused(self):
        # A offers no torrent of a gated repo (403), and the Hub tells it a private one does not exist (401).
        for repo, answer, why in (("acme/gated-model", "403", "public repositories only"),
                                  ("acme/private-model", "401", "Repository Not Found")):
            done = run_mirror(self.b, repo, self.a.url)
            self.assertNotEqual(done.returncode, 0, repo)
            self.assertIn(f"the source node answered {answer}", done.stderr, repo)
            self.assertIn(why, done.stderr, repo)
        self.assert_nothing_cached()


class MirrorsConfigTest(MirrorTestCase):
    """`mirrors` keeps a branch in sync: B mirrors at start, and again when the branch moves on the Hub."""

    INTERVAL = 10

    def test_a_moved_branch_is_mirrored_within_the_interval(self):
        hub = FakeHub().start()
        a = b = None
        try:
            a = Node(hub.url, None, "--ref-ttl", "0").start()
            first = hub.commit("acme/tiny-model")
            b = Node(f"http://127.0.0.1:{free_port()}", None, "--mirrors", "acme/tiny-model", "--mirror-from", a.url,
                     "--mirror-interval", f"{self.INTERVAL}s").start()
            self.wait_for_commit(b, first, deadline=120)
            self.assert_serves(b, "acme/tiny-model", hub.files("acme/tiny-model"), commit=first)

            pushed_at = time.monotonic()
            second = hub.push("acme/tiny-model", {"config.json": '{"model_type": "tiny", "version": 2}\n',
                                                  "extra/adapter.bin": {"size": 2 * 1024 * 1024 + 3}})
            self.wait_for_commit(b, second, deadline=self.INTERVAL + 60)
            picked_up = time.monotonic() - pushed_at
            self.assert_serves(b, "acme/tiny-model", hub.files("acme/tiny-model"), commit=second)
            self.assertEqual(b.metric("inferllama_upstream_bytes_total"), 0)
            self.assertEqual(fetch_torrent(b, "model", "acme/tiny-model"), fetch_torrent(a, "model", "acme/tiny-model"))
            # Files B already held were not fetched again: only the changed ones came over the swarm.
            with open(b.log_path, errors="replace") as f:
                fetched = [int(m[1]) for m in re.finditer(
                    rf"mirrored model/acme/tiny-model@{second} from \S+: \d+ files, \d+ fetched \((\d+) bytes\)", f.read())]
            total = sum(f["size"] for f in hub.files("acme/tiny-model").values())
            self.assertTrue(fetched and 2 * 1024 * 1024 <= fetched[0] < total // 2, (fetched, total))
            print(f"\n  the moved branch was mirrored {picked_up:.1f}s after the push (interval {self.INTERVAL}s)")
        finally:
            for node in (b, a):
                if node:
                    node.stop()
                    node.cleanup()
            hub.stop()

    def wait_for_commit(self, node: Node, commit: str, deadline: float):
        end = time.monotonic() + deadline
        seen = None
        while time.monotonic() < end:
            status, headers, _ = node.request("HEAD", node.resolve_path("acme/tiny-model", "main", "config.json"))
            seen = (status, headers.get("x-repo-commit"))
            if seen == (200, commit):
                return
            time.sleep(0.2)  # poll interval, not synchronisation: the deadline bounds the wait
        self.fail(f"{node.url} did not serve acme/tiny-model at {commit} within {deadline}s (last: {seen})")


if __name__ == "__main__":
    unittest.main()
