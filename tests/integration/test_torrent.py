"""Torrents of cached snapshots, seeded from the chunk store: the torrent, magnet and web seed routes,
and real BitTorrent clients (aria2c over the peer wire alone, over the web seed alone and on a magnet
link through either tracker; libtorrent's Python bindings on the hybrid torrent, the v2 torrent and v2
magnet, and over uTP alone) whose bytes must equal the fake Hub's."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

import bencode
from harness import FakeHub, Node, sha256, wait_until

REPO = "acme/tiny-model"
HERE = os.path.dirname(os.path.abspath(__file__))
# Debian's python3-libtorrent is built for the system interpreter.
SYSTEM_PYTHON = "/usr/bin/python3"


def aria2c(torrent: str, directory: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """aria2c as a user runs it, but only with the peers and web seeds the torrent names."""
    return subprocess.run(
        ["aria2c", f"--dir={directory}", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
         "--enable-peer-exchange=false", "--seed-time=0", "--summary-interval=0", "--console-log-level=warn",
         "--file-allocation=none", f"--bt-stop-timeout={timeout}", "--bt-tracker-connect-timeout=10",
         torrent], capture_output=True, text=True, timeout=timeout + 30)


def aria2c_magnet(uri: str, directory: str, dht_dir: str | None = None, timeout: int = 30) -> subprocess.CompletedProcess:
    """aria2c on a magnet link: it announces left=0 until it has the metadata. aria2 asks UDP trackers
    only with DHT on (`dht_dir`): a DHT without entry points, so the tracker stays the only source of peers.
    The DHT's UDP port is a range: aria2 binds the first free port in it, so parallel runs never collide."""
    dht = ["--enable-dht=false"]
    if dht_dir:
        dht = ["--enable-dht=true", f"--dht-file-path={os.path.join(dht_dir, 'dht.dat')}",
               "--dht-listen-port=6881-6999"]
    return subprocess.run(
        ["aria2c", f"--dir={directory}", *dht, "--enable-dht6=false", "--bt-enable-lpd=false",
         "--enable-peer-exchange=false", "--seed-time=0", "--summary-interval=0", "--console-log-level=warn",
         "--file-allocation=none", "--bt-save-metadata=false", f"--bt-stop-timeout={timeout}",
         "--bt-tracker-connect-timeout=10", uri], capture_output=True, text=True, timeout=timeout + 30)


class TorrentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = FakeHub().start()
        cls.files = cls.hub.files(REPO)
        cls.commit = cls.hub.commit(REPO)
        cls.node = Node(cls.hub.url).start()
        cls.tmp = tempfile.mkdtemp(prefix="inferllama-torrent-")

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()
        cls.node.cleanup()
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def torrent(self, node: Node | None = None, suffix: str = "", repo: str = REPO, rev: str = "main"):
        node = node or self.node
        return node.request("GET", f"/api/models/{repo}/torrent/{rev}{suffix}")

    def save(self, name: str, data: bytes) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def check_download(self, root: str):
        """Every file of the snapshot, byte for byte as the Hub has it."""
        for path, entry in self.files.items():
            with open(os.path.join(root, path), "rb") as f:
                self.assertEqual(sha256(f.read()), entry["sha256"], path)

    # -- the routes -------------------------------------------------------------------------------

    def test_torrent_describes_the_snapshot(self):
        status, headers, body = self.torrent()
        self.assertEqual(status, 200, body[:200])
        self.assertEqual(headers["content-type"], "application/x-bittorrent")
        self.assertEqual(headers["x-repo-commit"], self.commit)
        meta = bencode.decode(body)
        info = meta[b"info"]
        self.assertEqual(hashlib.sha1(bencode.encode(info)).hexdigest(), headers["x-inferllama-info-hash"])
        self.assertEqual(info[b"name"], b"tiny-model")
        self.assertEqual(info[b"piece length"], 4 * 1024 * 1024)
        self.assertNotIn(b"meta version", info)  # v1 by default: what aria2 and Transmission can use
        real = {b"/".join(f[b"path"]).decode(): f[b"length"] for f in info[b"files"] if f.get(b"attr") != b"p"}
        self.assertEqual(real, {p: e["size"] for p, e in self.files.items()})
        pads = [f for f in info[b"files"] if f.get(b"attr") == b"p"]
        self.assertTrue(pads and all(f[b"path"][0] == b".pad" for f in pads))
        trackers = [t[0].decode() for t in meta[b"announce-list"]]
        self.assertEqual(trackers[0], f"{self.node.url}/announce")
        self.assertEqual(trackers[1], f"udp://127.0.0.1:{self.node.udp_tracker_port}/announce")
        self.assertEqual(meta[b"url-list"], [f"{self.node.url}/api/models/{REPO}/webseed/{self.commit}/".encode()])
        self.assertNotIn(b"creation date", meta)  # the same bytes every time

        # The ETag is the file's; a client that has it gets a 304.
        again = self.node.request("GET", f"/api/models/{REPO}/torrent/main",
                                  headers={"If-None-Match": headers["etag"]})
        self.assertEqual(again[0], 304)

    def test_every_node_makes_the_same_info_hash(self):
        """Seeds of one snapshot on different nodes join one swarm."""
        with Node(self.hub.url) as other:
            for query in ("", "?format=hybrid"):
                mine = self.torrent(suffix=query)
                theirs = self.torrent(other, suffix=query)
                self.assertEqual(mine[0], 200)
                self.assertEqual(theirs[0], 200)
                self.assertEqual(mine[1]["x-inferllama-info-hash"], theirs[1]["x-inferllama-info-hash"])
                self.assertEqual(bencode.decode(mine[2])[b"info"], bencode.decode(theirs[2])[b"info"])

    def test_hybrid_torrent_carries_v2(self):
        status, headers, body = self.torrent(suffix="?format=hybrid")
        self.assertEqual(status, 200)
        meta = bencode.decode(body)
        info = meta[b"info"]
        self.assertEqual(info[b"meta version"], 2)
        self.assertIn(b"file tree", info)
        self.assertIn(b"piece layers", meta)
        self.assertEqual(hashlib.sha256(bencode.encode(info)).hexdigest(), headers["x-inferllama-info-hash-v2"])
        self.assertNotEqual(self.torrent()[1]["x-inferllama-info-hash"], headers["x-inferllama-info-hash"])

    def test_magnet(self):
        status, headers, body = self.node.request("GET", f"/api/models/{REPO}/magnet/main")
        self.assertEqual(status, 200)
        uri = body.decode()
        self.assertTrue(uri.startswith("magnet:?"), uri)
        q = urllib.parse.parse_qs(uri[len("magnet:?"):])
        self.assertEqual(q["xt"], [f"urn:btih:{headers['x-inferllama-info-hash']}"])
        self.assertEqual(q["dn"], ["tiny-model"])
        self.assertIn(f"{self.node.url}/announce", q["tr"])
        self.assertTrue(q["ws"][0].startswith(f"{self.node.url}/api/models/{REPO}/webseed/"))
        hybrid = self.node.request("GET", f"/api/models/{REPO}/magnet/main?format=hybrid")[2].decode()
        self.assertIn("urn:btmh:1220", urllib.parse.unquote(hybrid))

    def test_v2_torrent_and_magnet(self):
        status, headers, body = self.torrent(suffix="?format=v2")
        self.assertEqual(status, 200, body[:200])
        self.assertNotIn("x-inferllama-info-hash", headers)  # no v1 info-hash
        meta = bencode.decode(body)
        info = meta[b"info"]
        self.assertEqual(info[b"meta version"], 2)
        self.assertNotIn(b"pieces", info)
        self.assertNotIn(b"files", info)  # no v1 file list, so no pad files for clients to write
        self.assertIn(b"piece layers", meta)
        v2 = hashlib.sha256(bencode.encode(info)).hexdigest()
        self.assertEqual(headers["x-inferllama-info-hash-v2"], v2)
        hybrid = self.torrent(suffix="?format=hybrid")[1]["x-inferllama-info-hash-v2"]
        self.assertNotEqual(hybrid, v2)  # another info dict: another swarm

        status, headers, body = self.node.request("GET", f"/api/models/{REPO}/magnet/main?format=v2")
        self.assertEqual(status, 200)
        uri = body.decode()
        q = urllib.parse.parse_qs(uri[len("magnet:?"):])
        self.assertEqual(q["xt"], [f"urn:btmh:1220{v2}"])
        self.assertIn(f"{self.node.url}/announce", q["tr"])

        # The tracker takes the truncated v2 hash (BEP 52) and names the node's seed.
        self.assertIn(("127.0.0.1", self.node.bt_port), self.announce(bytes.fromhex(v2)[:20]))

    def test_single_file_torrent(self):
        status, _, body = self.torrent(suffix="/model.safetensors")
        self.assertEqual(status, 200, body[:200])
        meta = bencode.decode(body)
        info = meta[b"info"]
        self.assertEqual(info[b"name"], b"model.safetensors")
        self.assertEqual(info[b"length"], self.files["model.safetensors"]["size"])
        self.assertNotIn(b"files", info)  # no pad files: the most compatible form
        # Its web seed is the file itself (BEP 19 uses a single-file URL as it is).
        self.assertEqual(meta[b"url-list"],
                         [f"{self.node.url}/{REPO}/resolve/{self.commit}/model.safetensors".encode()])
        out = os.path.join(self.tmp, "single")
        result = aria2c(self.save("single.torrent", body), out)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            self.assertEqual(sha256(f.read()), self.files["model.safetensors"]["sha256"])

    def test_bad_requests(self):
        self.assertEqual(self.torrent(suffix="?format=v3")[0], 400)
        self.assertEqual(self.node.request("GET", f"/api/models/{REPO}/magnet/main?format=v3")[0], 400)
        self.assertEqual(self.torrent(suffix="/no/such/file")[0], 404)
        self.assertEqual(self.torrent(repo="acme/does-not-exist")[0] // 100, 4)
        self.assertEqual(self.torrent(rev="no-such-branch")[0] // 100, 4)
        # Gated and private repos never become torrents: a swarm cannot ask the Hub who may read them.
        for repo in ("acme/gated-model", "acme/private-model"):
            for token in ("", "hf_approved"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                status, _, body = self.node.request("GET", f"/api/models/{repo}/torrent/main", headers=headers)
                self.assertIn(status, (401, 403, 404), (repo, token, body))
        self.assertEqual(self.node.request("POST", f"/api/models/{REPO}/torrent/main")[0], 405)

    def test_web_seed_route(self):
        base = f"/api/models/{REPO}/webseed/{self.commit}/tiny-model"
        status, _, body = self.node.request("GET", f"{base}/config.json")
        self.assertEqual(status, 200)
        self.assertEqual(sha256(body), self.files["config.json"]["sha256"])
        status, _, body = self.node.request("GET", f"{base}/.pad/1000")
        self.assertEqual((status, body), (200, b"\0" * 1000))
        status, headers, body = self.node.request("GET", f"{base}/.pad/1000", headers={"Range": "bytes=990-"})
        self.assertEqual((status, body, headers["content-range"]), (206, b"\0" * 10, "bytes 990-999/1000"))
        self.assertEqual(self.node.request("GET", f"{base}/.pad/12x")[0], 404)
        self.assertEqual(self.node.request("GET", f"{base}/.pad/999999999")[0], 404)
        self.assertEqual(self.node.request("GET", f"{base}/%2e%2e/%2e%2e/etc/passwd")[0], 400)
        # Only commits: a branch name would let a web seed change under a torrent.
        self.assertEqual(self.node.request("GET", f"/api/models/{REPO}/webseed/main/tiny-model/config.json")[0], 404)

    def test_not_waiting_for_a_snapshot_not_cached(self):
        with Node(self.hub.url) as fresh:
            status, headers, body = self.torrent(fresh, suffix="?wait=false")
            self.assertEqual(status, 409, body)
            self.assertIn("not cached yet", headers["x-error-message"])
            self.assertEqual(self.torrent(fresh)[0], 200)  # completes the snapshot through the cache first
            self.assertEqual(self.torrent(fresh, suffix="?wait=false")[0], 200)

    # -- real clients -----------------------------------------------------------------------------

    def test_aria2_over_the_peer_wire_only(self):
        status, _, body = self.torrent()
        self.assertEqual(status, 200)
        meta = bencode.decode(body)
        del meta[b"url-list"]  # the web seed is unreachable: every byte comes from the node's seed
        torrent = self.save("peers-only.torrent", bencode.encode(meta))
        webseed_before = self.webseed_requests()
        uploaded_before = self.node.metric("inferllama_bt_uploaded_bytes_total")
        out = os.path.join(self.tmp, "peers")
        result = aria2c(torrent, out)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.check_download(os.path.join(out, "tiny-model"))
        self.assertEqual(self.webseed_requests(), webseed_before)
        self.wait_for_upload(uploaded_before)

    def test_aria2_over_the_web_seed_only(self):
        status, _, body = self.torrent()
        meta = bencode.decode(body)
        # No tracker: no peers, so every byte (and every pad file) comes from the web seed.
        meta.pop(b"announce", None)
        meta.pop(b"announce-list", None)
        torrent = self.save("webseed-only.torrent", bencode.encode(meta))
        uploaded_before = self.node.metric("inferllama_bt_uploaded_bytes_total")
        webseed_before = self.webseed_requests()
        out = os.path.join(self.tmp, "webseed")
        result = aria2c(torrent, out)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.check_download(os.path.join(out, "tiny-model"))
        self.assertGreater(self.webseed_requests(), webseed_before)
        self.assertEqual(self.node.metric("inferllama_bt_uploaded_bytes_total"), uploaded_before)

    def test_aria2_magnet_finds_the_seed_through_either_tracker(self):
        """aria2 announces left=0 before it has the metadata; the tracker still names the node's seed."""
        status, headers, _ = self.node.request("GET", f"/api/models/{REPO}/magnet/main")
        self.assertEqual(status, 200)
        trackers = {"http": f"{self.node.url}/announce",
                    "udp": f"udp://127.0.0.1:{self.node.udp_tracker_port}/announce"}
        for kind, tracker in trackers.items():
            with self.subTest(tracker=kind):
                # One tracker and no web seed: the metadata and every byte come from the node's seed.
                uri = (f"magnet:?xt=urn:btih:{headers['x-inferllama-info-hash']}&dn=tiny-model"
                       f"&tr={urllib.parse.quote(tracker, safe='')}")
                uploaded_before = self.node.metric("inferllama_bt_uploaded_bytes_total")
                out = os.path.join(self.tmp, f"magnet-{kind}")
                dht_dir = tempfile.mkdtemp(dir=self.tmp) if kind == "udp" else None
                result = aria2c_magnet(uri, out, dht_dir)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                self.check_download(os.path.join(out, "tiny-model"))
                self.wait_for_upload(uploaded_before)

    def libtorrent_download(self, torrent: str, out: str, *options: str) -> dict:
        """lt_client.py's report of a download that must have succeeded."""
        if not os.path.exists(SYSTEM_PYTHON):
            self.fail("python3-libtorrent needs /usr/bin/python3 (scripts/install-deps.sh --test installs it)")
        result = subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, "lt_client.py"), torrent, out, "--timeout", "120",
                                 *options], capture_output=True, text=True, timeout=180)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertTrue(report["ok"], report)
        return report

    def peers_only_torrent(self, name: str, suffix: str = "") -> str:
        """The snapshot's torrent without its web seed: the client finds the node's seed through the tracker."""
        status, _, body = self.torrent(suffix=suffix)
        self.assertEqual(status, 200, body[:200])
        meta = bencode.decode(body)
        del meta[b"url-list"]
        return self.save(name, bencode.encode(meta))

    def test_libtorrent_downloads_the_hybrid_torrent(self):
        out = os.path.join(self.tmp, "hybrid")
        self.libtorrent_download(self.peers_only_torrent("hybrid.torrent", "?format=hybrid"), out)
        self.check_download(os.path.join(out, "tiny-model"))

    def test_libtorrent_downloads_over_utp_alone(self):
        """Transmission and qBittorrent try uTP first: the seed answers it rather than leaving it to time out."""
        out = os.path.join(self.tmp, "utp")
        uploaded_before = self.node.metric("inferllama_bt_uploaded_bytes_total")
        report = self.libtorrent_download(self.peers_only_torrent("utp.torrent"), out, "--utp-only")
        self.assertGreater(report["utp_peers_seen"], 0, report)
        self.check_download(os.path.join(out, "tiny-model"))
        self.wait_for_upload(uploaded_before)

    def test_libtorrent_downloads_the_v2_torrent_and_the_v2_magnet(self):
        out = os.path.join(self.tmp, "v2")
        self.libtorrent_download(self.peers_only_torrent("v2.torrent", "?format=v2"), out)
        self.check_download(os.path.join(out, "tiny-model"))

        status, _, body = self.node.request("GET", f"/api/models/{REPO}/magnet/main?format=v2")
        self.assertEqual(status, 200)
        # Peers only (the web seed left out): the metadata and the bytes come from the node's seed.
        magnet = "&".join(p for p in body.decode().split("&") if not p.startswith("ws="))
        out = os.path.join(self.tmp, "v2-magnet")
        self.libtorrent_download(magnet, out)
        self.check_download(os.path.join(out, "tiny-model"))

    def announce(self, info_hash: bytes) -> set[tuple[str, int]]:
        """The peers the node's HTTP tracker gives a leecher of `info_hash`."""
        query = urllib.parse.urlencode({"info_hash": info_hash, "peer_id": b"-TT0001-abcdefghijkl", "port": 51413,
                                        "uploaded": 0, "downloaded": 0, "left": 100, "compact": 1})
        status, _, body = self.node.request("GET", f"/announce?{query}")
        self.assertEqual(status, 200)
        reply = bencode.decode(body)
        self.assertNotIn(b"failure reason", reply)
        peers = reply[b"peers"]
        return {(".".join(str(b) for b in peers[i:i + 4]), int.from_bytes(peers[i + 4:i + 6], "big"))
                for i in range(0, len(peers), 6)}

    def test_tracker_knows_the_node_seed(self):
        _, headers, _ = self.torrent()
        self.assertIn(("127.0.0.1", self.node.bt_port), self.announce(bytes.fromhex(headers["x-inferllama-info-hash"])))
        # An info-hash the node does not seed is refused in the default (restricted) mode.
        query = urllib.parse.urlencode({"info_hash": b"\x01" * 20, "peer_id": b"-TT0001-abcdefghijkl",
                                        "port": 51413, "left": 1, "compact": 1})
        self.assertIn(b"failure reason", bencode.decode(self.node.request("GET", f"/announce?{query}")[2]))

    def wait_for_upload(self, uploaded_before: float):
        """The seed counted the whole snapshot as sent (it reads its counters once a second)."""
        total = sum(e["size"] for e in self.files.values())
        wait_until(lambda: self.node.metric("inferllama_bt_uploaded_bytes_total") - uploaded_before >= total,
                   what="the snapshot's bytes counted as sent by the seed")

    def webseed_requests(self) -> float:
        return sum(v for k, v in self.node.metrics().items()
                   if k.startswith('inferllama_http_requests_total{route="webseed"'))


class SeedLifecycleTest(unittest.TestCase):
    """Torrents come back after a restart without re-hashing, and leave before their files do."""

    def test_restart_and_eviction(self):
        with FakeHub() as hub:
            data = tempfile.mkdtemp(prefix="inferllama-seed-")
            try:
                node = Node(hub.url, data).start()
                status, headers, _ = node.request("GET", f"/api/models/{REPO}/torrent/main")
                self.assertEqual(status, 200)
                info_hash = headers["x-inferllama-info-hash"]
                status, headers, _ = node.request("GET", f"/api/models/{REPO}/torrent/main?format=v2")
                self.assertEqual(status, 200)
                info_hash_v2 = headers["x-inferllama-info-hash-v2"]
                self.assertEqual(node.metric("inferllama_bt_torrents"), 2)
                node.stop()

                # Rebuilt from the index at start-up: seeded before anyone asks again.
                size = sum(e["size"] for e in hub.files(REPO).values())
                node = Node(hub.url, data, "--max-disk", str(size + 1024 * 1024)).start()
                wait_until(lambda: node.metric("inferllama_bt_torrents") == 2, what="the torrents seeded again")
                status, headers, _ = node.request("GET", f"/api/models/{REPO}/torrent/main?wait=false")
                self.assertEqual((status, headers["x-inferllama-info-hash"]), (200, info_hash))
                status, headers, _ = node.request("GET", f"/api/models/{REPO}/torrent/main?format=v2&wait=false")
                self.assertEqual((status, headers["x-inferllama-info-hash-v2"]), (200, info_hash_v2))
                self.assertEqual(node.metric("inferllama_bt_torrents"), 2)

                # Filling the budget with another repo evicts tiny-model's files: its torrent goes first.
                for path in hub.files("acme/tiny-dataset"):
                    st, _, _ = node.request("GET", node.resolve_path("acme/tiny-dataset", "main", path, "datasets/"))
                    self.assertEqual(st, 200)
                wait_until(lambda: node.metric("inferllama_bt_torrents") == 0, what="the torrents removed")
                # The torrents stop before the files' chunks go, and the eviction is counted after that.
                wait_until(lambda: node.metric("inferllama_evictions_total") > 0, what="the eviction counted")
                status, _, body = node.request("GET", f"/api/models/{REPO}/torrent/main?wait=false")
                self.assertEqual(status, 409, body)
                node.stop()
            finally:
                shutil.rmtree(data, ignore_errors=True)


class DamagedChunkTest(unittest.TestCase):
    def test_a_missing_chunk_stops_the_seed_and_the_file_is_fetched_again(self):
        with FakeHub() as hub, Node(hub.url) as node:
            status, _, body = node.request("GET", f"/api/models/{REPO}/torrent/main")
            self.assertEqual(status, 200)
            self.assertEqual(node.metric("inferllama_bt_torrents"), 1)
            # The full 4 MiB chunks (of the two big files) go missing on disk: a power cut, a slip of hand.
            big = hub.files(REPO)["model.safetensors"]
            removed = 0
            for root, _, names in os.walk(os.path.join(node.data_dir, "chunks")):
                for name in names:
                    if os.path.getsize(os.path.join(root, name)) == 4 * 1024 * 1024:
                        os.remove(os.path.join(root, name))
                        removed += 1
            self.assertGreater(removed, 0)
            tmp = tempfile.mkdtemp(prefix="inferllama-damaged-")
            try:
                meta = bencode.decode(body)
                del meta[b"url-list"]
                torrent = os.path.join(tmp, "t.torrent")
                with open(torrent, "wb") as f:
                    f.write(bencode.encode(meta))
                # The leecher asks for a missing chunk; the node forgets that file and stops the torrent.
                subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, "lt_client.py"), torrent, os.path.join(tmp, "out"),
                                "--timeout", "20"], capture_output=True, text=True, timeout=60)
                wait_until(lambda: node.metric("inferllama_bt_torrents") == 0, what="the damaged torrent stopped")
                self.assertGreater(node.metric("inferllama_bt_read_errors_total"), 0)
                # Asking again fetches the damaged file from the Hub and seeds a whole torrent again.
                status, _, _ = node.request("GET", f"/api/models/{REPO}/torrent/main")
                self.assertEqual(status, 200)
                self.assertEqual(node.metric("inferllama_bt_torrents"), 1)
                status, _, data = node.request("GET", node.resolve_path(REPO, "main", "model.safetensors"))
                self.assertEqual((status, sha256(data)), (200, big["sha256"]))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
